"""Versions, promotion, rollback and the transfer report, through a real `bentoml serve` process
with real BBC News data."""

from __future__ import annotations

import pytest

from tests.conftest import per_label, wait_for_job
from tests.integration.test_api import assert_error, predict, train

pytestmark = pytest.mark.integration


def examples(rows: list[dict]) -> list[dict]:
    return [{"input": r["input"], "label": r["label"]} for r in rows]


def append(client, name: str, rows: list[dict]) -> dict:
    resp = client.post(f"/v1/tasks/{name}/examples", json={"examples": examples(rows)})
    assert resp.status_code == 202, resp.text
    job = wait_for_job(client, resp.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    return job


def test_versions_promote_and_rollback(server, bbc_train, bbc_test) -> None:
    client = server.new_tenant("versioner")
    sixteen = per_label(bbc_train, 16, seed=21)  # labels in blocks of 16
    first = [r for i, r in enumerate(sixteen) if i % 16 < 8]
    more = [r for i, r in enumerate(sixteen) if i % 16 >= 8]
    train(client, "news", examples(first))
    job = append(client, "news", more)
    assert job["version"] == 2

    listing = client.get("/v1/tasks/news/versions").json()
    assert listing["task"] == "news" and listing["active_version"] == 2
    v1, v2 = listing["versions"]
    assert (v1["status"], v2["status"]) == ("previous", "active")
    assert (v1["n_examples"], v2["n_examples"]) == (40, 80)
    assert v1["promotion"]["reason"] == "first version of the task"
    assert v2["promotion"]["promoted"] is True and v2["promotion"]["compared_on"] == 40
    assert "not worse than the active version" in v2["promotion"]["reason"]
    for v in (v1, v2):
        assert v["transferability"]["method"] == "LogME" and v["transferability"]["chosen"] == "minilm"
        assert isinstance(v["transferability"]["scores"]["minilm"], float)
        # CV accuracy of the served entry (5 labels, chance 0.2); at 8 per label the prior's default settings are
        # scored, not the grid's luckiest entry, so v1 may sit at 32 of 40
        assert isinstance(v["warnings"], list) and 0 <= v["ece"] <= 1 and v["accuracy"] >= 0.75
        assert set(v["metrics"]["heads"]) == {"linear", "prototype", "baseline", "hybrid"}
        assert v["head"] == v["metrics"]["head"] != "baseline"  # 8-16 articles per label: transfer wins
    assert v1["metrics"]["selection_rule"].startswith("prior")  # 8 per label: the prior (adapters/training.py)
    assert v2["metrics"]["selection_rule"] == "best cross-validated accuracy"  # 16 per label

    texts = [r["input"] for r in per_label(bbc_test, 4, seed=5)]
    rolled = client.post("/v1/tasks/news/rollback").json()
    assert rolled["active_version"] == 1 and [v["status"] for v in rolled["versions"]] == ["active", "previous"]
    assert predict(client, "news", texts)["version"] == 1
    assert_error(client.post("/v1/tasks/news/rollback"), 409, "nothing to roll back to")

    promoted = client.post("/v1/tasks/news/promote", json={"version": 2}).json()
    assert promoted["active_version"] == 2 and predict(client, "news", texts)["version"] == 2
    assert client.post("/v1/tasks/news/rollback").json()["active_version"] == 1

    assert_error(client.post("/v1/tasks/news/promote", json={"version": 9}), 404, "no version 9")
    assert_error(client.post("/v1/tasks/news/promote", json={"version": 0}), 422)
    assert_error(client.post("/v1/tasks/news/promote", json={}), 422)
    other = server.new_tenant("version-snoop")
    assert_error(other.get("/v1/tasks/news/versions"), 404)
    assert_error(other.post("/v1/tasks/news/promote", json={"version": 1}), 404)
    assert_error(other.post("/v1/tasks/news/rollback"), 404)


def test_auto_head_serves_baseline_or_hybrid_and_warns_when_transfer_loses(server, bbc_train, bbc_test) -> None:
    """With 64 articles per label, TF-IDF from scratch beats the frozen MiniLM linear head in CV: the
    version says so in words, serves a head that uses the raw texts, and predicts held-out articles."""
    client = server.new_tenant("guarded")
    train(client, "news64", examples(per_label(bbc_train, 64, seed=11)))  # a draw where CV shows it
    version = client.get("/v1/tasks/news64/versions").json()["versions"][0]
    heads = version["metrics"]["heads"]
    assert heads["baseline"]["accuracy"] > max(heads["linear"]["accuracy"], heads["prototype"]["accuracy"])
    assert version["head"] in {"baseline", "hybrid"}
    assert any("did not help" in w for w in version["warnings"])
    test = per_label(bbc_test, 20, seed=4)
    out = predict(client, "news64", [r["input"] for r in test], top_k=2)
    accuracy = sum(p["label"] == r["label"] for p, r in zip(out["predictions"], test, strict=True)) / len(test)
    assert accuracy >= 0.9, accuracy
    assert client.get("/v1/tasks/news64").json()["head"] == "auto"  # the task keeps asking for auto
