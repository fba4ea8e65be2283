"""Entities and answers end to end, through a real server: template data from benchmarks/spansets.py
(names and places drawn from one half of each gazetteer for training, the other half for the held-out
rows, so predictions are on names the task never saw), trained by the real job runner on the packaged
MiniLM's per-token states, predicted through the token lane.

Checks: offsets in every answer point into the caller's own string (``text == input[start:end]``), the
version reports entity P/R/F1 (or exact match / token F1) next to the no-transfer baseline, held-out
quality is far above chance, bad spans are a 422 that names them, and an unanswerable question can
come back as ``null``.
"""

from __future__ import annotations

import pytest

from benchmarks.spansets import answer_rows, entity_rows
from graft import Graft
from graft import schemas as s
from tests.client.test_cli import graft
from tests.conftest import wait_for_job
from tests.integration.test_api import assert_error

pytestmark = pytest.mark.integration


SPAN_CONSUMER = r"""
import io, json, sys, zipfile
import onnxruntime as ort

zf = zipfile.ZipFile(sys.argv[1])
zf.extractall("bundle")
sys.path.insert(0, "bundle")
manifest = json.loads(zf.read("graft-export.json"))
decode = __import__(manifest["decode"]["file"].removesuffix(".py"))
session = ort.InferenceSession(zf.read("model.onnx"), providers=["CPUExecutionProvider"])
tokenizer = None  # a word baseline's export has none
if "tokenizer" in manifest["preprocessing"]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(zf.read(manifest["preprocessing"]["tokenizer"]).decode())
inputs = json.loads(open(sys.argv[2]).read())
answers = [getattr(decode, manifest["decode"]["function"])(session, tokenizer, t, manifest) for t in inputs]
graft = sorted(m for m in sys.modules if m.split(".")[0] in ("graft", "adapters", "service", "sklearn"))
print(json.dumps({"answers": answers, "manifest": manifest, "graft_modules": graft, "files": zf.namelist(),
                  "tokenizers": "tokenizers" in sys.modules}))
"""


def export_matches_the_service(client, task: str, inputs: list) -> dict:
    """The task's export zip, run by bare onnxruntime + tokenizers + its shipped decoder in a clean
    interpreter, answers ``inputs`` as the service does (same spans and labels, scores within 1e-4); the
    manifest and the served answers."""
    import io
    import json
    import subprocess
    import sys
    import tempfile
    import zipfile
    from pathlib import Path

    resp = client.get(f"/v1/tasks/{task}/export", params={"format": "onnx"})
    assert resp.status_code == 200, resp.text
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert {"model.onnx", "graft-export.json", "span_decode.py"} <= set(zf.namelist())
    predicted = client.post(f"/v1/tasks/{task}/predict", json={"inputs": inputs})
    assert predicted.status_code == 200, predicted.text
    served = predicted.json()["predictions"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.zip").write_bytes(resp.content)
        (Path(tmp) / "inputs.json").write_text(json.dumps(inputs))
        (Path(tmp) / "consumer.py").write_text(SPAN_CONSUMER)
        done = subprocess.run(
            [sys.executable, "-I", "consumer.py", "model.zip", "inputs.json"],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    bare = json.loads(done.stdout)
    assert bare["graft_modules"] == []
    words = bare["manifest"]["decode"].get("features") == "words"  # a word baseline: no encoder, no tokenizer
    assert ("tokenizer.json" in bare["files"]) is (not words) and bare["tokenizers"] is (not words)
    assert (bare["manifest"]["backbone"] is None) is words
    for want, got in zip(served, bare["answers"], strict=True):
        if "entities" in want:
            assert [(e["start"], e["end"], e["label"], e["text"]) for e in got["entities"]] == [
                (e["start"], e["end"], e["label"], e["text"]) for e in want["entities"]
            ]
            pairs = list(zip(got["entities"], want["entities"], strict=True))
        else:
            assert (got["answer"], got["start"], got["end"]) == (want["answer"], want["start"], want["end"])
            pairs = [(got, want)]
        for a, b in pairs:
            assert abs(a["score"] - b["score"]) <= 1e-4, (a, b)
    return {"manifest": bare["manifest"], "served": served, "files": bare["files"]}


def key_of(client) -> str:
    return client.headers["Authorization"].split()[1]


def active_metrics(client, name: str) -> dict:
    body = client.get(f"/v1/tasks/{name}/versions").json()
    return next(v for v in body["versions"] if v["status"] == "active")["metrics"]


def test_entities_task_trains_predicts_offsets_into_the_callers_text_and_refuses_bad_spans(server) -> None:
    client = server.new_tenant("spans-entities")
    train = entity_rows(50, half=0, seed=3)
    # pinned to the transfer head, so predict runs through the token lane (CV still scores the baseline too)
    task = {"name": "ner", "kind": "entities", "head": "tagger", "examples": train}
    resp = client.post("/v1/tasks", json=task)
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"], timeout=240)["status"] == "succeeded"

    m = active_metrics(client, "ner")
    assert m["kind"] == "entities" and m["evaluation"] == "cv" and m["head"] == "tagger"
    assert m["selection"] == "pinned"
    assert set(m["heads"]) == {"tagger", "word-tagger"} and m["baseline"]["head"] == "word-tagger"
    assert set(m["per_label"]) == {"PER", "ORG", "LOC"} and 0.5 < m["f1"] <= 1.0
    task = client.get("/v1/tasks/ner").json()
    assert task["kind"] == "entities" and set(task["examples_per_label"]) == {"PER", "ORG", "LOC"}

    test = entity_rows(20, half=1, seed=4)
    # the caller's strings, with leading whitespace and a long tail, so offsets must be the caller's own
    texts = ["  " + row["input"] for row in test[:-1]] + [test[-1]["input"] + " filler words." * 40]
    resp = client.post("/v1/tasks/ner/predict", json={"inputs": texts})
    assert resp.status_code == 200, resp.text
    predictions = resp.json()["predictions"]
    assert len(predictions) == len(texts)
    hits = gold = 0
    for text, row, p in zip(texts, test, predictions, strict=True):
        shift = 2 if text.startswith("  ") else 0
        for e in p["entities"]:
            assert set(e) == {"start", "end", "label", "text", "score"} and 0 < e["score"] <= 1
            assert text[e["start"] : e["end"]] == e["text"]
        found = {(e["start"] - shift, e["end"] - shift, e["label"]) for e in p["entities"]}
        truth = {(s["start"], s["end"], s["label"]) for s in row["label"]}
        hits, gold = hits + len(found & truth), gold + len(truth)
    assert hits / gold > 0.4, (hits, gold)  # unseen names (the frozen, uncased tagger: ~0.65 F1); chance is ~0

    with Graft(server.url, key_of(client)) as g:  # the client's typed answer
        typed = g.predict("ner", texts[:2]).predictions
    assert all(isinstance(p, s.EntitiesPredictionOut) for p in typed)
    # the same answers (each prediction has its own id)
    assert [p.model_dump(exclude={"id"}) for p in typed] == [
        {k: v for k, v in p.items() if k != "id"} for p in predictions[:2]
    ]

    overlap = [{"start": 0, "end": 11, "label": "PER"}, {"start": 6, "end": 20, "label": "ORG"}]
    bad = {"input": "Maria Lopez joined Siemens in Lyon.", "label": overlap}
    assert_error(
        client.post("/v1/tasks/ner/examples", json={"examples": [bad]}), 422, "0-11 (PER)", "6-20 (ORG)", "overlap"
    )
    outside = {"input": "Maria Lopez", "label": [{"start": 0, "end": 30, "label": "PER"}]}
    assert_error(
        client.post("/v1/tasks/ner/examples", json={"examples": [outside]}), 422, "0-30 (PER)", "11 characters"
    )
    wrong = {"input": "Maria Lopez", "label": [{"start": 0, "end": 5}]}
    assert_error(client.post("/v1/tasks/ner/examples", json={"examples": [wrong]}), 422, "missing ['label']")
    question = {"question": "Who?", "context": "Maria"}
    assert_error(client.post("/v1/tasks/ner/predict", json={"inputs": [question]}), 422, "one string per input")
    long_text = " \n".join(row["input"] for row in test * 2)  # longer than the 256-token window: strided windows
    odd = "Łukasz Nowak 🎉 met 李小龍 at Médecins Sans Frontières."
    exported = export_matches_the_service(client, "ner", [*texts[:6], long_text, odd])
    assert exported["manifest"]["kind"] == "entities"
    assert set(exported["manifest"]["decode"]["labels"]) == {"PER", "ORG", "LOC"}
    assert sum(len(p["entities"]) for p in exported["served"]) > 3
    # a retrain is compared with the active version on the examples it never saw (exact span sets)
    more = entity_rows(12, half=0, seed=7)
    resp = client.post("/v1/tasks/ner/examples", json={"examples": more})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"], timeout=240)["status"] == "succeeded"
    second = next(v for v in client.get("/v1/tasks/ner/versions").json()["versions"] if v["version"] == 2)
    assert second["promotion"]["compared_on"] == 12 and second["n_examples"] == 62, second["promotion"]
    # another tenant's task does not exist for them
    other = server.new_tenant("spans-other")
    assert_error(other.post("/v1/tasks/ner/predict", json={"inputs": ["Maria Lopez"]}), 404, "ner")


def test_answers_task_answers_from_the_context_or_null(server) -> None:
    client = server.new_tenant("spans-answers")
    train = answer_rows(50, half=0, seed=5)
    assert any(row["label"] is None for row in train)
    resp = client.post("/v1/tasks", json={"name": "qa", "kind": "answers", "examples": train})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"], timeout=240)["status"] == "succeeded"

    m = active_metrics(client, "qa")
    assert m["kind"] == "answers" and set(m["heads"]) == {"pointer", "word-pointer"} and m["selection"] == "auto"
    assert 0.0 <= m["exact_match"] <= m["f1"] <= 1.0 and m["threshold"] >= 0.0
    assert m["unanswerable"] == sum(row["label"] is None for row in train)
    assert client.get("/v1/tasks/qa").json()["examples_per_label"]["no answer"] == m["unanswerable"]

    test = answer_rows(30, half=1, seed=6)
    resp = client.post("/v1/tasks/qa/predict", json={"inputs": [row["input"] for row in test]})
    assert resp.status_code == 200, resp.text
    right = 0
    for row, p in zip(test, resp.json()["predictions"], strict=True):
        assert set(p) == {"id", "ood", "ood_score", "answer", "start", "end", "score"} and p["ood"] is None
        context = row["input"]["context"]
        if p["answer"] is None:
            assert p["start"] is None and p["end"] is None
        else:
            assert context[p["start"] : p["end"]] == p["answer"]
        gold = None if row["label"] is None else context[row["label"]["start"] : row["label"]["end"]]
        right += p["answer"] == gold
    assert right / len(test) > 0.2, right  # exact answers among ~15 candidate words per context

    # auto serves the word baseline here (it beats the frozen pointer on this data): its export needs no encoder
    assert m["head"] == "word-pointer", m["heads"]
    odd = [
        {"question": "Wo wohnt Zoë Müller?", "context": "Zoë Müller wohnt in Kraków 🎉, nicht in 東京."},
        {"question": "Where does Maria live?", "context": " ".join(row["input"]["context"] for row in test)},
        {"question": "?", "context": "🎉 … ‽"},
    ]
    exported = export_matches_the_service(client, "qa", [row["input"] for row in test[:8]] + odd)
    manifest = exported["manifest"]
    assert manifest["head"] == "word-pointer" and manifest["model"]["output"] == "span_log_probs"
    assert sorted(exported["files"]) == ["graft-export.json", "model.onnx", "span_decode.py"]

    with Graft(server.url, key_of(client)) as g:  # the client sends {question, context}, answers are typed
        typed = g.predict("qa", [row["input"] for row in test[:3]]).predictions
    assert all(isinstance(p, s.AnswerPredictionOut) for p in typed)
    asked = test[0]["input"]
    shown = graft(
        "predict",
        "qa",
        asked["context"],
        "--question",
        asked["question"],
        env={"GRAFT_URL": server.url, "GRAFT_API_KEY": key_of(client)},
    )
    assert shown.returncode == 0 and shown.stdout.split()[:3] == ["INPUT", "ANSWER", "SCORE"], shown
    assert (typed[0].answer is None and "(no answer)" in shown.stdout) or repr(typed[0].answer) in shown.stdout

    # a context that mentions nobody asked about: no answer ("null") when the best span scores low
    none = {"question": "Where was Zoltan Kiss born?", "context": "The weather was mild and nothing happened."}
    p = client.post("/v1/tasks/qa/predict", json={"inputs": [none]}).json()["predictions"][0]
    assert p["answer"] is None or none["context"][p["start"] : p["end"]] == p["answer"]

    bad = {"input": {"question": "Where?", "context": "Lyon"}, "label": {"start": 0, "end": 9}}
    assert_error(client.post("/v1/tasks/qa/examples", json={"examples": [bad]}), 422, "past the context's 4")
    resp = client.post("/v1/tasks", json={"name": "qa3", "kind": "answers", "head": "tagger", "examples": train})
    assert_error(resp, 422, "head 'tagger' is for entities tasks")
    text_input = {"input": "Lyon", "label": None}
    assert_error(client.post("/v1/tasks/qa/examples", json={"examples": [text_input]}), 422, "question")
    assert_error(client.post("/v1/tasks/qa/predict", json={"inputs": ["just a text"]}), 422, "question")
    resp = client.post("/v1/tasks", json={"name": "qa2", "kind": "answers", "examples": [bad, bad]})
    assert_error(resp, 422, "past the context")
    # GRAFT_MAX_TEXT_CHARS (default 100,000): question + context count together, each alone is under it
    huge = {"question": "Where? " * 9_000, "context": "word " * 9_000}
    assert_error(client.post("/v1/tasks/qa/predict", json={"inputs": [huge]}), 413, "108000 characters", "100000")
    # exported (pinned to the transfer head: `auto` may serve the word baseline, which is refused), the task
    # answers as the service does: a context longer than the window, non-ASCII text, null answers
    resp = client.post(
        "/v1/tasks", json={"name": "qa-pointer", "kind": "answers", "head": "pointer", "examples": train}
    )
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"], timeout=240)["status"] == "succeeded"
    long_context = " ".join(row["input"]["context"] for row in test[:20])
    inputs = [row["input"] for row in test[:8]] + [
        {"question": test[0]["input"]["question"], "context": long_context},
        {"question": "Wo wohnt Zoë Müller?", "context": "Zoë Müller wohnt in Kraków 🎉, nicht in 東京."},
    ]
    exported = export_matches_the_service(client, "qa-pointer", inputs)
    assert exported["manifest"]["kind"] == "answers" and exported["manifest"]["decode"]["function"] == "predict_answer"
    assert any(p["answer"] is not None for p in exported["served"])


def test_entities_finetune_trains_competes_and_serves_offsets(server_factory) -> None:
    """``head: "finetune"`` on an entities task: LoRA on MiniLM's top layer plus a token classifier, trained
    by the job runner (2 epochs at most here, to stay fast), compared on its held-out part with the frozen
    tagger and the word baseline (a loss is a warning), served with exact offsets; a retrain is promoted
    with the reason why it was not compared."""
    srv = server_factory(GRAFT_FINETUNE_MAX_EPOCHS="2")
    client = srv.new_tenant("spans-finetune")
    resp = client.post(
        "/v1/tasks", json={"name": "ner", "kind": "entities", "head": "finetune", "examples": entity_rows(30, 0, 3)}
    )
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"], timeout=300)["status"] == "succeeded"
    version = next(v for v in client.get("/v1/tasks/ner/versions").json()["versions"] if v["status"] == "active")
    m = version["metrics"]
    assert version["head"] == "finetune" and m["head"] == "finetune" and m["selection"] == "pinned"
    assert m["evaluation"] == "holdout" and set(m["heads"]) == {"finetune", "tagger", "word-tagger"}
    assert m["finetune"]["max_epochs"] == 2 and m["finetune"]["held_out"] == 6 and m["finetune"]["split"] == 5
    lost = m["heads"]["finetune"]["f1"] <= m["heads"]["tagger"]["f1"]
    assert lost == any("did not beat the frozen tagger" in w for w in m["warnings"]), m["warnings"]

    test = entity_rows(20, half=1, seed=4)
    texts = ["  " + row["input"] for row in test]
    resp = client.post("/v1/tasks/ner/predict", json={"inputs": texts})
    assert resp.status_code == 200, resp.text
    hits = gold = 0
    for text, row, p in zip(texts, test, resp.json()["predictions"], strict=True):
        for e in p["entities"]:
            assert text[e["start"] : e["end"]] == e["text"] and 0 < e["score"] <= 1
        found = {(e["start"] - 2, e["end"] - 2, e["label"]) for e in p["entities"]}
        truth = {(s["start"], s["end"], s["label"]) for s in row["label"]}
        hits, gold = hits + len(found & truth), gold + len(truth)
    assert hits / gold > 0.4, (hits, gold)
    assert_error(client.get("/v1/tasks/ner/export"), 422, "no ONNX export")

    resp = client.post("/v1/tasks/ner/examples", json={"examples": entity_rows(6, half=0, seed=7)})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"], timeout=300)["status"] == "succeeded"
    second = next(v for v in client.get("/v1/tasks/ner/versions").json()["versions"] if v["version"] == 2)
    assert second["status"] == "active" and "compared on its held-out part only" in second["promotion"]["reason"]


def test_entities_task_served_by_the_word_baseline_exports_it(server) -> None:
    """``auto`` serves the word-shape baseline on these rows (it beats the frozen, uncased tagger on unseen
    names); its export zip is a graph of the words' features with the shipped decoder, no encoder, and answers
    as the server does."""
    client = server.new_tenant("spans-word-export")
    resp = client.post("/v1/tasks", json={"name": "ner", "kind": "entities", "examples": entity_rows(50, 0, seed=11)})
    assert resp.status_code == 202, resp.text
    assert wait_for_job(client, resp.json()["job"]["id"], timeout=240)["status"] == "succeeded"
    m = active_metrics(client, "ner")
    assert m["selection"] == "auto" and m["head"] == "word-tagger", m["heads"]
    test = [row["input"] for row in entity_rows(12, half=1, seed=4)]
    texts = [
        *test,
        " \n".join(test * 3),  # long: the baseline has no window, the export none either
        "Łukasz Nowak-Kowalski 🎉 met 李小龍 at Médecins Sans Frontières in Kraków.",
        "ÉMILE ZOLA and Ǆemal visited İstanbul; ΣΊΣΥΦΟΣ in Αθήνα, the ﬁrm Straße GmbH.",
        "no capital letters here, nothing to find.",
        " … ‽ 🎉 ",
    ]
    exported = export_matches_the_service(client, "ner", texts)
    assert exported["manifest"]["head"] == "word-tagger" and exported["manifest"]["model"]["output"] == "tag_logits"
    assert sorted(exported["files"]) == ["graft-export.json", "model.onnx", "span_decode.py"]
    assert sum(len(p["entities"]) for p in exported["served"]) > 10
    assert any(not p["entities"] for p in exported["served"])
