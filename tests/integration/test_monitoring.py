"""Issue 20 end to end against a real server: OOD flags on predictions, suggestions, feedback and
monitoring, on real BBC News articles against Python documentation (a foreign domain)."""

from __future__ import annotations

import inspect
import json
import sqlite3
import zipfile

import pytest

from tests.conftest import per_label
from tests.integration.test_api import assert_error, predict, train

pytestmark = pytest.mark.integration

FOREIGN = [
    (inspect.getdoc(obj) or "")[:600]
    for obj in (json.dumps, json.loads, zipfile.ZipFile, inspect.signature, sqlite3.connect)
]


def test_ood_suggest_feedback_and_monitoring(server, bbc_train, bbc_test) -> None:
    acme = server.new_tenant("monitoring-acme")
    examples = [{"input": r["input"][:800], "label": r["label"]} for r in per_label(bbc_train, 12, seed=5)]
    train(acme, "news", examples)
    version = acme.get("/v1/tasks/news").json()["versions"][0]
    assert version["metrics"]["ood"]["fpr"] == 0.05  # GRAFT_OOD_FPR's default, calibrated on CV folds

    # OOD flags: in-domain articles mostly not flagged, documentation mostly flagged
    test = per_label(bbc_test, 4, seed=2)
    answer = predict(acme, "news", [r["input"][:800] for r in test] + FOREIGN)["predictions"]
    assert all({"id", "label", "ood", "ood_score"} <= set(p) for p in answer)
    in_domain, foreign = answer[: len(test)], answer[len(test) :]
    assert sum(p["ood"] for p in in_domain) <= 3, [p["ood_score"] for p in in_domain]
    assert sum(p["ood"] for p in foreign) >= 4, [p["ood_score"] for p in foreign]
    assert all(p["ood"] == (p["ood_score"] > 1.0) for p in answer)

    # suggest: k distinct valid indices of the pool, most uncertain first
    pool = [r["input"][:400] for r in bbc_test[100:130]]
    resp = acme.post("/v1/tasks/news/suggest", json={"inputs": pool, "k": 6})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["version"] == 1 and len(body["indices"]) == 6 == len(set(body["indices"]))
    assert all(0 <= i < len(pool) for i in body["indices"]) and all(0 <= x <= 1 for x in body["scores"])
    assert_error(acme.post("/v1/tasks/news/suggest", json={"inputs": pool[:3], "k": 4}), 422, "k must be between 1")
    assert_error(acme.post("/v1/tasks/news/suggest", json={"inputs": ["x"] * 1001}), 413, "the limit is 1000")

    # feedback: true labels by prediction id, and by input (the active version predicts it)
    items = [{"id": p["id"], "label": r["label"]} for p, r in zip(in_domain, test, strict=True)]
    items += [{"input": r["input"][:800], "label": r["label"]} for r in test[:2]]
    resp = acme.post("/v1/tasks/news/feedback", json={"items": items})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "task": "news",
        "accepted": len(items),
        "kept": len(items),
        "examples_added": 0,  # no retrain policy (GRAFT_RETRAIN_AFTER_FEEDBACK defaults to 0)
        "job": None,
        "retrain_note": None,
    }
    bad = acme.post("/v1/tasks/news/feedback", json={"items": [{"id": "nope", "label": "tech"}]})
    assert_error(bad, 422, "items[0].id", "not a prediction id")
    assert_error(acme.post("/v1/tasks/news/feedback", json={"items": [{"label": "tech"}]}), 422, "'id'", "'input'")
    wrong = acme.post("/v1/tasks/news/feedback", json={"items": [{"id": in_domain[0]["id"], "label": ["tech"]}]})
    assert_error(wrong, 422, "one label string")

    monitoring = acme.get("/v1/tasks/news/monitoring").json()
    right = [p["label"] == r["label"] for p, r in zip(in_domain, test, strict=True)]
    right += right[:2]  # the inputs sent again are the same articles: the same version answers them alike
    assert monitoring["active_version"] == 1 and monitoring["feedback"]["count"] == len(items)
    assert monitoring["feedback"]["accuracy"] == pytest.approx(sum(right) / len(right))
    ood = monitoring["ood"]
    assert ood["scored"] == len(answer) + 2 and ood["expected_rate"] == 0.05
    assert ood["flagged"] == sum(p["ood"] for p in answer) + sum(p["ood"] for p in in_domain[:2])
    assert [v["version"] for v in monitoring["per_version"]] == [1]

    # tenant isolation: another tenant's task is 404, for feedback and monitoring alike
    bob = server.new_tenant("monitoring-bob")
    assert_error(bob.get("/v1/tasks/news/monitoring"), 404)
    assert_error(bob.post("/v1/tasks/news/feedback", json={"items": items[:1]}), 404)

    # feedback is deleted with its task
    nonces = [p["id"].split(".")[0] for p in in_domain]
    query = f"SELECT count(*) FROM feedback WHERE prediction_id IN ({', '.join('?' * len(nonces))})"
    with sqlite3.connect(server.data_dir / "graft.db") as db:
        assert db.execute(query, nonces).fetchone() == (len(nonces),)
    assert acme.delete("/v1/tasks/news").status_code == 204
    with sqlite3.connect(server.data_dir / "graft.db") as db:
        assert db.execute(query, nonces).fetchone() == (0,)
