"""Export of an adapted model over HTTP, loaded by a bare onnxruntime + tokenizers consumer."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import per_label, wait_for_job
from tests.integration.test_api import assert_error, predict, train

pytestmark = pytest.mark.integration

# Runs in `python -I` (isolated: neither the checkout nor PYTHONPATH is importable), so it proves
# that the zip alone is enough: no Graft code.
CONSUMER = r"""
import json, sys, types, zipfile
import numpy as np
import onnxruntime as ort

bundle, texts = sys.argv[1], json.load(open(sys.argv[2]))
with zipfile.ZipFile(bundle) as zf:
    manifest = json.loads(zf.read("graft-export.json"))
    inputs, raw = manifest["model"]["inputs"], manifest["preprocessing"].get("raw")
    if "input_ids" in inputs:
        from tokenizers import Tokenizer
        tokenizer = Tokenizer.from_str(zf.read("tokenizer.json").decode())
    if raw:  # the shipped pre-tokenisation (stdlib + numpy), loaded from the zip
        prep = types.ModuleType("raw_inputs")
        exec(compile(zf.read(raw["file"]).decode(), raw["file"], "exec"), prep.__dict__)
    session = ort.InferenceSession(zf.read(manifest["model"]["file"]), providers=["CPUExecutionProvider"])
step = 1 if manifest["one_input_per_call"] else len(texts)  # int8: one input per call; audio: one clip
rows = []
for start in range(0, len(texts), step):
    chunk, feeds = texts[start : start + step], {}
    if "input_ids" in inputs:
        encoded = tokenizer.encode_batch(chunk)
        feeds["input_ids"] = np.array([e.ids for e in encoded], dtype=np.int64)
        feeds["attention_mask"] = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    if raw:
        feeds[raw["input"]] = getattr(prep, raw["function"])(chunk, **raw["kwargs"])
    assert sorted(feeds) == sorted(inputs), (sorted(feeds), inputs)
    rows.append(session.run([manifest["model"]["output"]], feeds)[0])
proba = np.concatenate(rows)
graft_modules = sorted(m for m in sys.modules if m.split(".")[0] in ("service", "adapters", "tests"))
print(json.dumps({"manifest": manifest, "probabilities": proba.tolist(), "graft_modules": graft_modules}))
"""


def run_consumer(data: bytes, texts: list[str], tmp_path) -> dict:
    (tmp_path / "model.zip").write_bytes(data)
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    (tmp_path / "consumer.py").write_text(CONSUMER)
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            str(tmp_path / "consumer.py"),
            str(tmp_path / "model.zip"),
            str(tmp_path / "texts.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# Odd inputs next to real ones: punctuation only, accents and emoji, another script, a very long text.
ODD = ["!!! ??? ...", "Ünïcödé: le café résumé 🙂", "東京 株式 市場", "Markets " + "rose and fell, " * 1500]


@pytest.mark.parametrize("head", ["linear", "prototype", "hybrid", "baseline"])
def test_exported_zip_reproduces_the_service(server, bbc_train, bbc_test, tmp_path, head) -> None:
    acme = server.new_tenant(f"export-{head}")
    examples = [{"input": r["input"], "label": r["label"]} for r in per_label(bbc_train, 8, seed=3)]
    job = train(acme, "news", examples, head=head)

    runtime = {b["name"]: b["runtime"] for b in acme.get("/v1/backbones").json()["backbones"]}["minilm"]
    version = acme.get("/v1/tasks/news").json()["versions"][0]
    assert version["runtime"] == runtime and version["version"] == job["version"]

    resp = acme.get("/v1/tasks/news/export", params={"format": "onnx"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/zip"
    assert 'filename="news-v1-onnx.zip"' in resp.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        files = set(zf.namelist())
    assert {"model.onnx", "graft-export.json"} <= files
    assert ("tokenizer.json" in files) == (head != "baseline") and ("raw_inputs.py" in files) == (
        head in ("hybrid", "baseline")
    )

    texts = [r["input"] for r in bbc_test[:6]] + [
        "Shares fell sharply on Monday.",
        "Ünïcödé: le match de football 🙂",
        *ODD,
    ]
    served = predict(acme, "news", texts)
    bare = run_consumer(resp.content, texts, tmp_path)
    assert bare["graft_modules"] == []
    manifest = bare["manifest"]
    assert manifest["task"] == "news" and manifest["version"] == 1 and manifest["head"] == head
    if head == "baseline":  # TF-IDF + logistic regression: no backbone in the graph
        assert manifest["backbone"] is None and manifest["model"]["inputs"] == ["tokens"]
    else:
        assert (
            manifest["backbone"]["serving_runtime"] == runtime and manifest["backbone"]["trained_on_runtime"] == runtime
        )
    labels = manifest["labels"]
    assert sorted(labels) == sorted({e["label"] for e in examples})
    for prediction, proba in zip(served["predictions"], bare["probabilities"], strict=True):
        assert labels[max(range(len(labels)), key=proba.__getitem__)] == prediction["label"]
        for label, p in zip(labels, proba, strict=True):
            assert abs(prediction["scores"][label] - p) <= 1e-4, (label, prediction["scores"][label], p)


def test_only_the_owner_can_export(server, bbc_train) -> None:
    owner = server.new_tenant("export-owner")
    other = server.new_tenant("export-other")
    train(owner, "private", [{"input": r["input"], "label": r["label"]} for r in per_label(bbc_train, 3, seed=4)])
    assert_error(other.get("/v1/tasks/private/export", params={"format": "onnx"}), 404)
    assert_error(owner.get("/v1/tasks/missing/export"), 404)
    assert_error(owner.get("/v1/tasks/private/export", params={"format": "tflite"}), 422, "tflite", "onnx")
    assert_error(owner.get("/v1/tasks/private/export", params={"version": 7}), 404)
    assert server.client().get("/v1/tasks/private/export").status_code == 401


def test_multilabel_and_regression_tasks_export(server, bbc_train, bbc_test, tmp_path) -> None:
    from tests.integration.test_task_kinds import bbc_tags, create, digit_share, predictions

    client = server.new_tenant("export-kinds")
    train = per_label(bbc_train, 6, seed=7)
    jobs = [
        create(
            client,
            "tags",
            "text",
            "multilabel",
            [{"input": r["input"], "label": bbc_tags(r["input"], r["label"])} for r in train],
        ),
        create(
            client,
            "figures",
            "text",
            "regression",
            [{"input": r["input"], "label": digit_share(r["input"])} for r in train],
        ),
    ]
    for job in jobs:
        assert wait_for_job(client, job["id"])["status"] == "succeeded"
    texts = [r["input"] for r in bbc_test[:4]] + ODD[:2]

    resp = client.get("/v1/tasks/tags/export")
    assert resp.status_code == 200, resp.text
    bare = run_consumer(resp.content, texts, tmp_path)
    manifest = bare["manifest"]
    assert manifest["kind"] == "multilabel" and manifest["model"]["output"] == "probabilities"
    for served, proba in zip(predictions(client, "tags", texts), bare["probabilities"], strict=True):
        scores = {s["label"]: s for s in served["scores"]}
        for label, p in zip(manifest["labels"], proba, strict=True):
            assert abs(scores[label]["probability"] - p) <= 1e-4
            assert abs(manifest["thresholds"][label] - scores[label]["threshold"]) <= 1e-6
        chosen = [
            label for label, p in zip(manifest["labels"], proba, strict=True) if p >= manifest["thresholds"][label]
        ]
        assert sorted(chosen) == sorted(served["labels"])

    resp = client.get("/v1/tasks/figures/export")
    assert resp.status_code == 200, resp.text
    bare = run_consumer(resp.content, texts, tmp_path)
    assert bare["manifest"]["kind"] == "regression" and bare["manifest"]["model"]["output"] == "value"
    for served, value in zip(predictions(client, "figures", texts), bare["probabilities"], strict=True):
        assert abs(served["value"] - value) <= 1e-3 * max(1.0, abs(value))
