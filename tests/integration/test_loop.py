"""Issue 20, closing the loop, end to end against a real server: a retrain policy that turns N feedback labels
into examples (flagged `source: feedback`) and queues a training job; a candidate version serving in shadow on a
share of predict requests (answers recorded, never returned), with its agreement and its accuracy on feedback in
monitoring and in the versions list; drift windows; another tenant's task is a 404; and the records go with the
task. Real BBC News articles, as tests/integration/test_monitoring.py."""

from __future__ import annotations

import sqlite3

import pytest

from graft import Graft
from tests.conftest import per_label, wait_for_job
from tests.integration.test_api import assert_error, predict, train

pytestmark = pytest.mark.integration


def test_retrain_policy_shadow_version_and_drift(server, bbc_train, bbc_test) -> None:
    acme = server.new_tenant("loop-acme")
    examples = [{"input": r["input"][:600], "label": r["label"]} for r in per_label(bbc_train, 8, seed=7)]
    train(acme, "news", examples)

    # the retrain policy: PATCHable per task, shown on the task
    assert_error(acme.patch("/v1/tasks/news", json={"retrain_after_feedback": -1}), 422, "retrain_after_feedback")
    resp = acme.patch("/v1/tasks/news", json={"retrain_after_feedback": 5})
    assert resp.status_code == 200 and resp.json()["retrain_after_feedback"] == 5, resp.text

    # 4 labels: stored, no retrain yet; the 5th queues one, with the 5 inputs copied into the examples
    test = per_label(bbc_test, 1, seed=4)  # 5 articles, one per label
    answers = predict(acme, "news", [r["input"][:600] for r in test])["predictions"]
    items = [
        {"id": a["id"], "input": r["input"][:600], "label": r["label"]} for a, r in zip(answers, test, strict=True)
    ]
    resp = acme.post("/v1/tasks/news/feedback", json={"items": items[:4]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["examples_added"] == 0 and resp.json()["job"] is None
    assert acme.get("/v1/tasks/news/monitoring").json()["retrain"] == {"after_feedback": 5, "pending_feedback": 4}
    resp = acme.post("/v1/tasks/news/feedback", json={"items": items[4:]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["examples_added"] == 5 and body["job"]["status"] == "queued", body
    detail = acme.get("/v1/tasks/news").json()
    assert detail["examples_per_source"] == {"user": len(examples), "feedback": 5}
    assert acme.get("/v1/tasks/news/monitoring").json()["retrain"]["pending_feedback"] == 0
    job = wait_for_job(acme, body["job"]["id"])
    assert job["status"] == "succeeded" and job["version"] == 2, job
    versions = acme.get("/v1/tasks/news/versions").json()
    assert versions["versions"][1]["n_examples"] == len(examples) + 5
    # promotion stays the pipeline's paired comparison: version 2 is active or a candidate, with its reason
    assert versions["versions"][1]["promotion"]["reason"]
    active = versions["active_version"]
    candidate = 1 if active == 2 else 2

    # another tenant sees none of it
    bob = server.new_tenant("loop-bob")
    assert_error(bob.patch("/v1/tasks/news", json={"retrain_after_feedback": 1}), 404)
    assert_error(bob.post("/v1/tasks/news/feedback/promote"), 404)
    assert_error(bob.post(f"/v1/tasks/news/versions/{candidate}/shadow", json={"share": 0.5}), 404)
    assert_error(bob.delete(f"/v1/tasks/news/versions/{candidate}/shadow"), 404)

    # shadow: refused for the active version, for a share out of range, for a missing version
    assert_error(acme.post(f"/v1/tasks/news/versions/{active}/shadow", json={"share": 0.5}), 409, "active version")
    assert_error(acme.post(f"/v1/tasks/news/versions/{candidate}/shadow", json={"share": 0}), 422, "share")
    assert_error(acme.post("/v1/tasks/news/versions/9/shadow", json={"share": 0.5}), 404)
    resp = acme.post(f"/v1/tasks/news/versions/{candidate}/shadow", json={"share": 0.5})
    assert resp.status_code == 200, resp.text
    assert resp.json()["shadow"] == {"version": candidate, "share": 0.5}

    # 60 single-input requests: about half are also answered by the shadow, whose answers are never returned
    pool = bbc_test[300:360]
    served = [predict(acme, "news", [r["input"][:600]]) for r in pool]
    assert all(s["version"] == active for s in served)
    assert all(set(s["predictions"][0]) == {"id", "label", "score", "scores", "ood", "ood_score"} for s in served)
    feedback = [{"id": s["predictions"][0]["id"], "label": r["label"]} for s, r in zip(served, pool, strict=True)]
    assert acme.post("/v1/tasks/news/feedback", json={"items": feedback}).status_code == 200

    report = acme.get("/v1/tasks/news/monitoring").json()
    assert report["shadow"]["version"] == candidate and report["shadow"]["share"] == 0.5
    (figures,) = report["shadow"]["versions"]
    assert figures["version"] == candidate and 15 <= figures["predictions"] <= 45, figures  # binomial(60, 0.5)

    # the figures are what the records say: the shadowed predictions' answers, against the true labels
    nonces = {s["predictions"][0]["id"].split(".")[0]: (s, r) for s, r in zip(served, pool, strict=True)}
    with sqlite3.connect(server.data_dir / "graft.db") as db:
        records = db.execute(
            "SELECT prediction_id, answer, active_answer, version FROM shadow_predictions WHERE prediction_id IN "
            f"({', '.join('?' * len(nonces))})",
            list(nonces),
        ).fetchall()
    assert len(records) == figures["predictions"]
    assert all(version == candidate for *_, version in records)
    assert all(nonces[n][0]["predictions"][0]["label"] == active_answer for n, _, active_answer, _ in records)
    truth = [nonces[n][1]["label"] for n, *_ in records]
    agree = sum(answer == active_answer for _, answer, active_answer, _ in records)
    assert figures["agreements"] == agree and figures["agreement"] == pytest.approx(agree / len(records))
    assert figures["feedback"]["count"] == len(records)
    shadow_right = [answer == t for (_, answer, _, _), t in zip(records, truth, strict=True)]
    active_right = [active_answer == t for (_, _, active_answer, _), t in zip(records, truth, strict=True)]
    assert figures["feedback"]["accuracy"] == pytest.approx(sum(shadow_right) / len(records))
    assert figures["feedback"]["active_accuracy"] == pytest.approx(sum(active_right) / len(records))
    listed = {v["version"]: v for v in acme.get("/v1/tasks/news/versions").json()["versions"]}
    assert listed[candidate]["shadow"] == figures and listed[active]["shadow"] is None

    # drift: the active version's windows over the OOD window, the latest with the most recent predictions
    drift = report["drift"]
    assert len(drift["windows"]) == 12 and sum(w["scored"] for w in drift["windows"]) == report["ood"]["scored"]
    assert report["ood"]["scored"] >= 60 and drift["latest"]["scored"] >= 1
    assert drift["latest"]["z"] is not None and drift["shifted"] is False  # in-domain news: no shift

    # the Python client reads the same report, and stops the shadow: the task shows none, later predictions are
    # not shadowed
    assert_error(acme.delete(f"/v1/tasks/news/versions/{active}/shadow"), 404, "not in shadow")
    with Graft(server.url, acme.headers["authorization"].split()[1]) as g:
        parsed = g.monitoring("news")
        assert parsed.shadow.versions[0].model_dump() == figures and parsed.drift.shifted is False
        g.stop_shadow("news", candidate)
        assert g.get_task("news").shadow is None
        assert g.set_retrain_policy("news", 0).retrain_after_feedback == 0
        assert g.shadow("news", candidate, 0.1).shadow.model_dump() == {"version": candidate, "share": 0.1}
        g.stop_shadow("news", candidate)
    for r in pool[:10]:
        predict(acme, "news", [r["input"][:600]])
    after = acme.get("/v1/tasks/news/monitoring").json()["shadow"]
    assert after["version"] is None and after["versions"][0]["predictions"] == figures["predictions"]

    # explicit promotion of feedback (write role): nothing waits now, so nothing is queued
    resp = acme.post("/v1/tasks/news/feedback/promote")
    assert resp.status_code == 200 and resp.json() == {"task": "news", "examples_added": 0, "job": None}, resp.text

    # deleted with the task: shadow records and the feedback (with its stored inputs)
    task_rows = "SELECT count(*) FROM {} WHERE prediction_id IN ({})".format
    marks = ", ".join("?" * len(nonces))
    with sqlite3.connect(server.data_dir / "graft.db") as db:
        assert db.execute(task_rows("feedback", marks), list(nonces)).fetchone() == (len(nonces),)
    assert acme.delete("/v1/tasks/news").status_code == 204
    with sqlite3.connect(server.data_dir / "graft.db") as db:
        assert db.execute(task_rows("shadow_predictions", marks), list(nonces)).fetchone() == (0,)
        assert db.execute(task_rows("feedback", marks), list(nonces)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM examples WHERE source = 'feedback'").fetchone() == (0,)
