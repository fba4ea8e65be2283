"""Multi-label and regression tasks end to end, through a real server, on real data.

Targets are derived from the real files in ../shared/data, each from a real property of the example:

- **BBC News, multilabel**: the article's category (business, entertainment, politics, sports, tech)
  plus ``"mentions-us"`` when its raw text mentions the United States (the words ``US``, ``America``
  or ``American``, as whole words): a topic and a co-occurring region tag. About a third of the
  articles carry the second label, in every category.
- **BBC News, regression**: how number-heavy the article is: the percentage of its whitespace-
  separated words that contain a digit (business news is full of figures, sports less so).
- **Digits, multilabel**: ``"even"``/``"odd"`` from the true digit, plus ``"five-or-more"`` when it is
  ≥ 5 and ``"prime"`` when it is 2, 3, 5 or 7 (one to three labels per image).
- **Digits, regression**: the true digit as a number.

Each test checks held-out predictions against the no-learning baseline the version reports (the
all-labels constant for multilabel, the training mean for regression), not just that it runs.
"""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
from sklearn.metrics import f1_score

from tests.adapters.test_kinds import digit_tags
from tests.conftest import load_jsonl, per_label, wait_for_job
from tests.integration.test_api import assert_error

pytestmark = pytest.mark.integration

US = re.compile(r"\b(US|America|American)\b")


def bbc_tags(text: str, category: str) -> list[str]:
    return [category, "mentions-us"] if US.search(text) else [category]


def digit_share(text: str) -> float:
    words = text.split()
    return 100.0 * sum(any(ch.isdigit() for ch in w) for w in words) / len(words)


def create(client, name: str, modality: str, kind: str, examples: list[dict], **extra) -> dict:
    resp = client.post(
        "/v1/tasks", json={"name": name, "modality": modality, "kind": kind, "examples": examples, **extra}
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["task"]["kind"] == kind
    return body["job"]


def predictions(client, name: str, inputs: list[str]) -> list[dict]:
    out: list[dict] = []
    for start in range(0, len(inputs), 50):
        resp = client.post(f"/v1/tasks/{name}/predict", json={"inputs": inputs[start : start + 50]})
        assert resp.status_code == 200, resp.text
        out.extend(resp.json()["predictions"])
    return out


def active_version(client, name: str) -> dict:
    body = client.get(f"/v1/tasks/{name}/versions").json()
    return next(v for v in body["versions"] if v["status"] == "active")


def check_multilabel(client, name: str, test_inputs: list[str], truth: list[list[str]], margin: float) -> float:
    version = active_version(client, name)
    m = version["metrics"]
    assert version["head"] == "multilabel" and m["kind"] == "multilabel" and m["evaluation"] == "cv"
    assert m["micro_f1"] > m["baseline"]["micro_f1"] and m["macro_f1"] > m["baseline"]["macro_f1"]
    assert version["accuracy"] is None  # no single-label accuracy for this kind
    labels = version["labels"]
    preds = predictions(client, name, test_inputs)
    for p in preds:
        assert set(p) == {"id", "ood", "ood_score", "labels", "scores"} and len(p["scores"]) == len(labels)
        probabilities = [s["probability"] for s in p["scores"]]
        assert probabilities == sorted(probabilities, reverse=True)
        for s in p["scores"]:
            assert s["chosen"] == (s["probability"] >= s["threshold"]) and 0 <= s["probability"] <= 1
            assert s["threshold"] == m["per_label"][s["label"]]["threshold"]
        assert p["labels"] == [s["label"] for s in p["scores"] if s["chosen"]]
    index = {label: j for j, label in enumerate(labels)}
    y = np.zeros((len(truth), len(labels)), dtype=int)
    pred = np.zeros_like(y)
    for i, (t, p) in enumerate(zip(truth, preds, strict=True)):
        y[i, [index[label] for label in t]] = 1
        pred[i, [index[label] for label in p["labels"]]] = 1
    held_out = f1_score(y, pred, average="micro")
    constant = f1_score(y, np.ones_like(y), average="micro")
    print(
        f"{name}: CV micro/macro-F1 {m['micro_f1']:.3f}/{m['macro_f1']:.3f} (constant {m['baseline']['micro_f1']:.3f}/"
        f"{m['baseline']['macro_f1']:.3f}); held-out micro-F1 {held_out:.3f} vs constant {constant:.3f}"
    )
    assert held_out > constant + margin, (held_out, constant)
    return held_out


def check_regression(
    client, name: str, test_inputs: list[str], truth: list[float], train_mean: float, ratio: float
) -> float:
    version = active_version(client, name)
    m = version["metrics"]
    assert (
        version["head"] == "ridge"
        and m["kind"] == "regression"
        and m["evaluation"] == "cv"
        and version["labels"] == ["value"]
    )
    assert m["mae"] < m["baseline"]["mae"] and m["r2"] > m["baseline"]["r2"] and math.isfinite(m["rmse"])
    preds = predictions(client, name, test_inputs)
    assert all(set(p) == {"id", "ood", "ood_score", "value"} and math.isfinite(p["value"]) for p in preds)
    values = np.array([p["value"] for p in preds])
    mae, mean_mae = np.mean(np.abs(values - truth)), np.mean(np.abs(np.array(truth) - train_mean))
    print(
        f"{name}: CV MAE {m['mae']:.3f} R² {m['r2']:.3f} (mean: MAE {m['baseline']['mae']:.3f} R² "
        f"{m['baseline']['r2']:.3f}); "
        f"held-out MAE {mae:.3f} vs mean {mean_mae:.3f}"
    )
    assert mae < ratio * mean_mae, (mae, mean_mae)
    return mae


def test_text_tasks_of_each_kind_on_bbc_news(server, bbc_train, bbc_test) -> None:
    client = server.new_tenant("kinds-text")
    train, test = per_label(bbc_train, 30, seed=0), per_label(bbc_test, 20, seed=1)
    ml_job = create(
        client,
        "bbc-tags",
        "text",
        "multilabel",
        [{"input": r["input"], "label": bbc_tags(r["input"], r["label"])} for r in train],
    )
    reg_job = create(
        client,
        "bbc-figures",
        "text",
        "regression",
        [{"input": r["input"], "label": digit_share(r["input"])} for r in train],
    )
    assert wait_for_job(client, ml_job["id"])["status"] == "succeeded"
    assert wait_for_job(client, reg_job["id"])["status"] == "succeeded"

    task = client.get("/v1/tasks/bbc-tags").json()
    assert task["kind"] == "multilabel" and task["examples_per_label"]["sports"] == 30
    assert task["examples_per_label"]["mentions-us"] == sum(
        "mentions-us" in bbc_tags(r["input"], r["label"]) for r in train
    )
    assert client.get("/v1/tasks/bbc-figures").json()["examples_per_label"] == {"value": 150}
    inputs = [r["input"] for r in test]
    # Measured (10 articles per label): held-out micro-F1 ~0.8 vs ~0.36 for predicting every label.
    check_multilabel(client, "bbc-tags", inputs, [bbc_tags(r["input"], r["label"]) for r in test], margin=0.25)
    truth = [digit_share(r["input"]) for r in test]
    check_regression(
        client, "bbc-figures", inputs, truth, float(np.mean([digit_share(r["input"]) for r in train])), ratio=0.95
    )
    # Both kinds export as one ONNX graph: tests/integration/test_export.py checks them against a bare consumer.


def test_image_tasks_of_each_kind_on_digits(server) -> None:
    client = server.new_tenant("kinds-image")
    train = per_label(load_jsonl("digits.train.jsonl"), 8, seed=0)
    test = per_label(load_jsonl("digits.test.jsonl"), 10, seed=1)
    ml_job = create(
        client,
        "digit-tags",
        "image",
        "multilabel",
        [{"input": r["input"], "label": digit_tags(int(r["label"]))} for r in train],
    )
    reg_job = create(
        client, "digit-value", "image", "regression", [{"input": r["input"], "label": int(r["label"])} for r in train]
    )
    assert wait_for_job(client, ml_job["id"])["status"] == "succeeded"
    assert wait_for_job(client, reg_job["id"])["status"] == "succeeded"
    inputs = [r["input"] for r in test]
    check_multilabel(client, "digit-tags", inputs, [digit_tags(int(r["label"])) for r in test], margin=0.1)
    check_regression(client, "digit-value", inputs, [float(r["label"]) for r in test], 4.5, ratio=0.85)
    full = client.post("/v1/tasks/digit-tags/predict", json={"inputs": inputs[:5]}).json()["predictions"]
    top = client.post("/v1/tasks/digit-tags/predict", json={"inputs": inputs[:5], "top_k": 1}).json()["predictions"]
    assert [p["labels"] for p in top] == [p["labels"] for p in full]  # top_k shortens scores, never the chosen labels
    assert [p["scores"] for p in top] == [p["scores"][:1] for p in full]

    # Appending retrains; the retrain is compared with the active version on the 20 examples that
    # version never saw: exact label sets (multilabel), a sign test on the errors (regression).
    more = random.Random(0).sample([r for r in load_jsonl("digits.train.jsonl") if r not in train], 20)
    jobs = {}
    for name, label in (
        ("digit-tags", lambda r: digit_tags(int(r["label"]))),
        ("digit-value", lambda r: float(r["label"])),
    ):
        resp = client.post(
            f"/v1/tasks/{name}/examples", json={"examples": [{"input": r["input"], "label": label(r)} for r in more]}
        )
        assert resp.status_code == 202, resp.text
        jobs[name] = resp.json()["job"]["id"]
    for name, words in (("digit-tags", "got"), ("digit-value", "closer on")):
        job = wait_for_job(client, jobs[name])
        assert job["status"] == "succeeded" and job["version"] == 2
        v2 = next(v for v in client.get(f"/v1/tasks/{name}/versions").json()["versions"] if v["version"] == 2)
        promotion = v2["promotion"]
        assert v2["n_examples"] == 100 and promotion["compared_on"] == 20 and words in promotion["reason"], promotion
        assert promotion["only_new_right"] + promotion["only_active_right"] <= 20
        assert (v2["status"] == "active") == promotion["promoted"]


def test_label_shapes_are_checked_per_kind(server) -> None:
    client = server.new_tenant("kinds-shapes")

    def post(kind: str, given: list, **extra):
        examples = [{"input": f"example {i}", "label": label} for i, label in enumerate(given)]
        return client.post("/v1/tasks", json={"name": "shapes", "kind": kind, "examples": examples, **extra})

    assert_error(post("classification", ["a", ["a", "b"]]), 422, "examples[1].label", "one label string, got a list")
    assert_error(post("multilabel", [["a"], "b"]), 422, "examples[1].label", "list of label strings")
    assert_error(post("multilabel", [["a"], []]), 422, "label list is empty")
    assert_error(post("multilabel", [["a", "a"], ["b"]]), 422, "repeats a label")
    assert_error(post("multilabel", [["a"], ["a"]]), 422, "at least 2 distinct labels")
    assert_error(post("multilabel", [["a"], ["b"]], labels=["a"]), 422, "not in 'labels'")
    assert_error(post("regression", [1.5, "2"]), 422, "examples[1].label", "takes a number, got the string '2'")
    assert_error(post("regression", [1.5, [2]]), 422, "takes a number, got a list")
    assert_error(post("regression", [3, 3.0]), 422, "2 distinct target values")
    assert_error(post("regression", [1, 2], labels=["a"]), 422, "no label set")
    assert_error(post("regression", [1, 2], head="linear"), 422, "head 'linear' is for classification")
    assert_error(post("regression", [1, 2], backbone="auto"), 422, "backbone 'auto' is for classification")
    assert_error(post("ranking", [1, 2]), 422, "kind")
    for bad in ("NaN", "Infinity", "-Infinity"):  # Python's JSON reads these; they are no targets
        body = (
            '{"name": "shapes", "kind": "regression", "examples": [{"input": "a", "label": 1}, {"input": "b", "label": '
            + bad
            + "}]}"
        )
        resp = client.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
        assert_error(resp, 422, "examples[1].label", "finite number")

    assert post("regression", [1, 2.5]).status_code == 202  # and an existing task keeps its kind's rules
    resp = client.post("/v1/tasks/shapes/examples", json={"examples": [{"input": "c", "label": "high"}]})
    assert_error(resp, 422, "examples[0].label", "takes a number", "'shapes' is a regression task")
    resp = client.post("/v1/tasks/shapes/dataset", content=b"input,label\nx,1\n", headers={"content-type": "text/csv"})
    assert_error(resp, 422, "regression task", "/v1/tasks/shapes/examples")
    assert client.get("/v1/tasks/shapes").json()["examples_per_label"] == {"value": 2}  # nothing half-written
