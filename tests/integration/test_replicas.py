"""Two real `bentoml serve` replicas sharing one real PostgreSQL database (a fresh one, dropped
afterwards), as they run behind a Kubernetes Service.

The tests run in file order on one pair of replicas; the last one kills a replica.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Server, per_label, wait_for_job
from tests.postgres import temp_database

pytestmark = pytest.mark.integration

LEASE_S = 4.0  # GRAFT_JOB_LEASE_S for these replicas: a dead replica's job is reclaimed after this
# How stale a replica's view of a task's active version may be (the router's freshness bound).
# Today every predict reads the store, so the delay is one request; a cached router must stay within it.
FRESHNESS_BOUND_S = float(os.environ.get("GRAFT_TEST_FRESHNESS_BOUND_S", "2.0"))
SLACK_S = 1.0  # the switch commits just after finished_at is stamped; clocks are this machine's


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with temp_database() as url:
        yield url


@pytest.fixture(scope="module")
def replicas(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Replicas A and B, started at the same moment, so both migrate the empty database at once."""
    env = {"GRAFT_DATABASE_URL": database, "GRAFT_JOB_LEASE_S": str(LEASE_S)}
    pair = (
        Server(tmp_path_factory.mktemp("replica-a"), env=env),
        Server(tmp_path_factory.mktemp("replica-b"), env=env),
    )
    errors: list[BaseException] = []

    def start(server: Server) -> None:
        try:
            server.start()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            raise errors[0]
        yield pair
    finally:
        for server in pair:
            server.stop()


@pytest.fixture(scope="module")
def api_key(replicas: tuple[Server, Server]) -> str:
    with replicas[0].admin() as admin:
        resp = admin.post("/v1/tenants", json={"name": "acme"})
    assert resp.status_code == 201, resp.text
    return resp.json()["api_key"]


def rows(examples: list[dict]) -> list[dict]:
    return [{"input": r["input"], "label": r["label"]} for r in examples]


def predict(client: httpx.Client, texts: list[str]) -> dict:
    resp = client.post("/v1/tasks/news/predict", json={"inputs": texts})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_a_task_created_on_a_answers_on_b(replicas, api_key, bbc_train, bbc_test) -> None:
    a, b = replicas
    on_a, on_b = a.client(api_key), b.client(api_key)
    assert on_b.get("/v1/tasks/news").status_code == 404
    resp = on_a.post("/v1/tasks", json={"name": "news", "modality": "text", "examples": rows(per_label(bbc_train, 8))})
    assert resp.status_code == 202, resp.text
    job = wait_for_job(on_b, resp.json()["job"]["id"])  # B reports A's job: its state lives in the database
    assert job["status"] == "succeeded" and job["version"] == 1, job

    test = per_label(bbc_test, 10, seed=1)
    answer = predict(on_b, [r["input"] for r in test])
    assert answer["version"] == 1
    accuracy = sum(p["label"] == r["label"] for p, r in zip(answer["predictions"], test, strict=True)) / len(test)
    assert accuracy >= 0.7, accuracy  # 5 balanced labels: the majority baseline is 0.2
    assert on_b.get("/v1/tasks/news").json()["active_version"] == 1


def test_a_retrain_on_a_is_seen_by_b_within_the_freshness_bound(replicas, api_key, bbc_train) -> None:
    """Poll B's predictions while A's retrain runs. No request B receives later than the bound
    after the switch committed may still be answered with the old version."""
    a, b = replicas
    on_a, on_b = a.client(api_key), b.client(api_key)
    probe = ["Shares in the company rose after its profits beat forecasts."]
    assert predict(on_b, probe)["version"] == 1  # B has served version 1 (and may hold it in a cache)

    resp = on_a.post("/v1/tasks/news/examples", json={"examples": rows(per_label(bbc_train, 12, seed=7)[:10])})
    assert resp.status_code == 202, resp.text
    answers: list[tuple[datetime, int]] = []  # (when the request was sent, the version B answered)
    deadline = time.monotonic() + 300
    while not answers or answers[-1][1] == 1:
        assert time.monotonic() < deadline, "replica B never answered with version 2"
        sent = datetime.now(UTC)
        answers.append((sent, predict(on_b, probe)["version"]))
        assert answers[-1][1] in (1, 2)
        time.sleep(0.2)
    job = on_a.get(f"/v1/jobs/{resp.json()['job']['id']}").json()
    assert job["status"] == "succeeded" and job["version"] == 2, job
    switched = datetime.fromisoformat(job["finished_at"])
    stale = max(((sent - switched).total_seconds() for sent, version in answers if version == 1), default=0.0)
    assert stale <= FRESHNESS_BOUND_S + SLACK_S, f"B answered version 1 to a request sent {stale:.2f}s after the switch"
    assert sum(version == 1 for _, version in answers) >= 1  # the poll really started before the switch


def _holder(engine, job_id: str, replicas: tuple[Server, Server]) -> tuple[Server, dict]:  # type: ignore[no-untyped-def]
    """Wait until a replica is training the job (claimed, some examples embedded); return it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = (
                conn.execute(
                    text("SELECT status, progress, worker_id, attempts FROM jobs WHERE id = :id"), {"id": job_id}
                )
                .mappings()
                .one()
            )
        assert row["status"] in ("queued", "running"), f"the job ended before a replica could be killed: {dict(row)}"
        if row["status"] == "running" and row["progress"] > 0:
            pid = int(row["worker_id"].split(":")[1])
            for server in replicas:
                if pid in server.pids():
                    return server, dict(row)
            raise AssertionError(f"job held by {row['worker_id']}, which is neither replica")
        time.sleep(0.05)
    raise TimeoutError("no replica started training the job")


def test_kill_9_the_training_replica_and_the_other_finishes_the_job(replicas, api_key, database, bbc_train) -> None:
    a, b = replicas
    examples = rows(per_label(bbc_train, 20, seed=3))  # 100 articles: two embedding chunks, time to catch it
    resp = a.client(api_key).post("/v1/tasks", json={"name": "big", "modality": "text", "examples": examples})
    assert resp.status_code == 202, resp.text
    job_id = resp.json()["job"]["id"]

    engine = create_engine(database)
    try:
        victim, before = _holder(engine, job_id, replicas)
        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()
        survivor = b if victim is a else a
        on_survivor = survivor.client(api_key)
        assert on_survivor.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # the corpse still holds it

        job = wait_for_job(on_survivor, job_id)
        took = time.monotonic() - killed_at
        assert job["status"] == "succeeded" and job["version"] == 1, job
        assert took >= LEASE_S - 0.5, f"reclaimed {took:.1f}s after the kill, before the {LEASE_S}s lease expired"
        with engine.connect() as conn:
            after = (
                conn.execute(text("SELECT worker_id, attempts FROM jobs WHERE id = :id"), {"id": job_id})
                .mappings()
                .one()
            )
        assert before["attempts"] == 1 and after["attempts"] == 2
        assert after["worker_id"] != before["worker_id"] and int(after["worker_id"].split(":")[1]) in survivor.pids()

        detail = on_survivor.get("/v1/tasks/big").json()
        assert detail["active_version"] == 1 and [v["version"] for v in detail["versions"]] == [1]  # exactly one
        assert sum(detail["examples_per_label"].values()) == len(examples)  # no example lost
        assert detail["versions"][0]["n_examples"] == len(examples)
        resp = on_survivor.post("/v1/tasks/big/predict", json={"inputs": [examples[0]["input"]]})
        assert resp.status_code == 200 and resp.json()["version"] == 1
    finally:
        engine.dispose()
