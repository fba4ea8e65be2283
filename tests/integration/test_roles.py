"""GRAFT_ROLE: a real `api` process and a real `worker` process sharing one real PostgreSQL database,
as the api and worker Deployments run them (docs/deploy.md)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import per_label, wait_for_job
from tests.postgres import temp_database

pytestmark = pytest.mark.integration


def rows(examples: list[dict]) -> list[dict]:
    return [{"input": r["input"], "label": r["label"]} for r in examples]


def test_the_api_queues_and_the_worker_trains(server_factory, bbc_train, bbc_test) -> None:
    with temp_database() as database:
        api = server_factory(GRAFT_DATABASE_URL=database, GRAFT_ROLE="api", GRAFT_MAX_QUEUED_JOBS_PER_TENANT="1")
        client = api.new_tenant("acme")
        resp = client.post(
            "/v1/tasks", json={"name": "news", "modality": "text", "examples": rows(per_label(bbc_train, 8))}
        )
        assert resp.status_code == 202, resp.text
        first = resp.json()["job"]["id"]

        # the queue cap: a second task's job would be the tenant's second queued one
        refused = client.post(
            "/v1/tasks", json={"name": "other", "modality": "text", "examples": rows(per_label(bbc_train, 2))}
        )
        assert refused.status_code == 429, refused.text
        assert (
            refused.json()["error"]["code"] == "too_many_jobs"
            and "the limit is 1" in refused.json()["error"]["message"]
        )
        assert int(refused.headers["Retry-After"]) > 0
        assert client.get("/v1/tasks/other").status_code == 404  # nothing half-written

        # more examples for the same task replace its queued job (allowed under the cap)
        resp = client.post("/v1/tasks/news/examples", json={"examples": rows(per_label(bbc_train, 2, seed=3))})
        assert resp.status_code == 202, resp.text
        second = resp.json()["job"]["id"]
        time.sleep(3)
        assert client.get(f"/v1/jobs/{second}").json()["status"] == "queued"  # an api process never trains
        old = client.get(f"/v1/jobs/{first}").json()
        assert old["status"] == "superseded" and second in old["error"]

        worker = server_factory(GRAFT_DATABASE_URL=database, GRAFT_ROLE="worker")
        job = wait_for_job(client, second)
        assert job["status"] == "succeeded" and job["version"] == 1, job

        refused = httpx.get(f"{worker.url}/v1/tasks", headers=client.headers, timeout=30)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "worker_process"
        assert "GRAFT_ROLE=worker" in refused.json()["error"]["message"]
        assert httpx.get(f"{worker.url}/livez", timeout=30).status_code == 200
        assert httpx.get(f"{worker.url}/readyz", timeout=30).status_code == 200
        assert "graft_store_jobs" in httpx.get(f"{worker.url}/metrics", timeout=30).text

        test = per_label(bbc_test, 4, seed=1)
        answer = client.post("/v1/tasks/news/predict", json={"inputs": [r["input"] for r in test]})
        assert answer.status_code == 200 and answer.json()["version"] == 1, answer.text
        client.close()
