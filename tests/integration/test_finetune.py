"""head "finetune" over HTTP: a background job with progress, served next to a feature-extraction
task of another tenant through the shared trunk, exported (merged weights) and reproduced by a
bare onnxruntime consumer."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import per_label
from tests.integration.test_api import assert_error, predict, train
from tests.integration.test_export import run_consumer

pytestmark = pytest.mark.integration


def test_finetune_task_trains_serves_and_exports(server_factory, bbc_train, bbc_test, tmp_path) -> None:
    server = server_factory(GRAFT_FINETUNE_MAX_EPOCHS="2")
    tuned = server.new_tenant("tuned")
    plain = server.new_tenant("plain")
    examples = [{"input": r["input"], "label": r["label"]} for r in per_label(bbc_train, 5, seed=5)]

    resp = tuned.post("/v1/tasks", json={"name": "news", "modality": "text", "head": "finetune", "examples": examples})
    assert resp.status_code == 202, resp.text
    job_id, seen = resp.json()["job"]["id"], set()
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        job = tuned.get(f"/v1/jobs/{job_id}").json()
        seen.add(job["progress"])
        if job["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert job["status"] == "succeeded", job
    assert any(0 < p < 1 for p in seen), seen  # progress is reported while training
    train(plain, "news", examples, head="linear")

    version = tuned.get("/v1/tasks/news").json()["versions"][0]
    assert version["head"] == "finetune" and version["metrics"]["finetune"]["split"] == 3
    assert version["metrics"]["finetune"]["held_out"] == 5
    # fine-tuning competed with the cheaper heads on the same held-out examples; a loss or tie is a warning
    compared = version["metrics"]["heads"]
    assert {"finetune", "linear"} <= set(compared), compared
    lost = compared["finetune"]["accuracy"] <= compared["linear"]["accuracy"]
    assert lost == any("did not beat the linear head" in w for w in version["metrics"]["warnings"]), version["metrics"]

    texts = [r["input"] for r in bbc_test[:20]]
    with ThreadPoolExecutor(4) as pool:  # both tenants at once: their rows share backbone passes
        futures = [pool.submit(predict, client, "news", texts[i::2]) for i in range(2) for client in (tuned, plain)]
        results = [f.result() for f in futures]
    tuned_preds = results[0]["predictions"] + results[2]["predictions"]
    truth = [r["label"] for r in bbc_test[:20:2]] + [r["label"] for r in bbc_test[1:20:2]]
    accuracy = sum(p["label"] == t for p, t in zip(tuned_preds, truth, strict=True)) / len(truth)
    assert accuracy >= 0.7, accuracy  # 5 labels: chance is 0.2
    assert len(results[1]["predictions"]) == 10 and len(results[3]["predictions"]) == 10

    resp = tuned.get("/v1/tasks/news/export", params={"format": "onnx"})
    assert resp.status_code == 200, resp.text
    sample = texts[:4] + ["Shares fell sharply on Monday."]
    served = predict(tuned, "news", sample)
    bare = run_consumer(resp.content, sample, tmp_path)
    assert bare["graft_modules"] == [] and bare["manifest"]["head"] == "finetune"
    labels = bare["manifest"]["labels"]
    for prediction, proba in zip(served["predictions"], bare["probabilities"], strict=True):
        for label, p in zip(labels, proba, strict=True):
            assert abs(prediction["scores"][label] - p) <= 1e-4, (label, prediction["scores"][label], p)

    assert_error(
        tuned.post(
            "/v1/tasks",
            json={
                "name": "pics",
                "modality": "image",
                "head": "finetune",
                "examples": [{"input": "x", "label": "a"}, {"input": "y", "label": "b"}],
            },
        ),
        422,
        "text tasks only",
    )
