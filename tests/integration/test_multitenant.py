"""Two real `bentoml serve` processes on one store: freshness across replicas, overload, metrics.

The session server trains; a second server ("replica") shares its data directory with no training
workers, a tiny batch queue and a 1 s task cache, so it only ever learns of new versions through
the store, within its freshness bound.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Server, wait_for_job
from tests.integration.test_api import TOY

pytestmark = pytest.mark.integration

TTL_S = 1.0


@pytest.fixture(scope="module")
def replica(server):
    srv = Server(
        server.data_dir,
        env={
            "GRAFT_TRAINING_WORKERS": "0",
            "GRAFT_BATCH_QUEUE_SIZE": "8",
            "GRAFT_BATCH_MAX_SIZE": "4",
            "GRAFT_TASK_CACHE_TTL_S": str(TTL_S),
        },
    ).start()
    yield srv
    srv.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:]+)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(4))
    return total


def test_a_retrain_elsewhere_is_visible_within_the_freshness_bound(server, replica) -> None:
    trainer = server.new_tenant("fresh-tenant")
    key = trainer.headers["authorization"].split()[1]
    created = trainer.post("/v1/tasks", json={"name": "mood", "examples": TOY})
    assert wait_for_job(trainer, created.json()["job"]["id"])["status"] == "succeeded"
    with replica.client(key) as reader:
        first = reader.post("/v1/tasks/mood/predict", json={"inputs": ["so happy with it"]})
        assert first.status_code == 200 and first.json()["version"] == 1, first.text

        more = [{"input": "it is fine, nothing special", "label": "meh"}, {"input": "okay I guess", "label": "meh"}]
        job = trainer.post("/v1/tasks/mood/examples", json={"examples": more}).json()["job"]
        assert wait_for_job(trainer, job["id"])["status"] == "succeeded"
        switched_by = time.monotonic()  # the switch committed before this instant
        while True:
            started = time.monotonic()
            resp = reader.post("/v1/tasks/mood/predict", json={"inputs": ["so happy with it"]})
            assert resp.status_code == 200, resp.text
            if resp.json()["version"] == 2:
                break
            # a request that starts after the bound must not see the old version
            assert started - switched_by <= TTL_S + 0.2, "replica still served version 1 after the freshness bound"
            time.sleep(0.05)
        assert set(resp.json()["predictions"][0]["scores"]) == {"pos", "neg", "meh"}
        expected = trainer.post("/v1/tasks/mood/predict", json={"inputs": ["so happy with it"]}).json()
        assert resp.json()["predictions"][0]["scores"] == pytest.approx(expected["predictions"][0]["scores"], abs=1e-5)


def test_overload_answers_503_with_retry_after_and_recovers(server, replica) -> None:
    tenant = server.new_tenant("flood-tenant")
    key = tenant.headers["authorization"].split()[1]
    created = tenant.post("/v1/tasks", json={"name": "mood", "examples": TOY})
    assert wait_for_job(tenant, created.json()["job"]["id"])["status"] == "succeeded"
    texts = [f"review number {i}: the product arrived late but works well enough, " * 3 for i in range(8)]

    def call(_: int) -> httpx.Response:
        with httpx.Client(base_url=replica.url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
            return c.post("/v1/tasks/mood/predict", json={"inputs": texts})

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(call, range(12)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    for r in responses:
        if r.status_code == 503:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "overloaded" and "retry after" in r.json()["error"]["message"]
        else:
            assert len(r.json()["predictions"]) == len(texts)
    recovered = call(0)  # the backlog is gone: the next request is served
    assert recovered.status_code == 200 and len(recovered.json()["predictions"]) == len(texts)

    scraped = httpx.get(f"{replica.url}/metrics").text
    rejected = statuses.count(503)
    assert metric(scraped, "graft_backbone_rejected_inputs_total", backbone="minilm") == rejected * len(texts)
    assert metric(scraped, "graft_http_requests_total", endpoint="/v1/tasks/{name}/predict", status="503") == rejected


def test_metrics_are_exported_with_bounded_labels(server) -> None:
    tenant = server.new_tenant("metrics-tenant")
    created = tenant.post("/v1/tasks", json={"name": "mood", "examples": TOY})
    assert wait_for_job(tenant, created.json()["job"]["id"])["status"] == "succeeded"
    for _ in range(3):
        assert tenant.post("/v1/tasks/mood/predict", json={"inputs": ["lovely", "dreadful"]}).status_code == 200
    assert tenant.get("/v1/jobs/job_does-not-exist").status_code == 404
    scraped = httpx.get(f"{server.url}/metrics").text
    assert (
        metric(scraped, "graft_http_requests_total", endpoint="/v1/tasks/{name}/predict", method="POST", status="200")
        >= 3
    )
    assert metric(scraped, "graft_http_requests_total", endpoint="/v1/jobs/{job_id}", status="404") >= 1
    assert "job_does-not-exist" not in scraped  # raw paths never become label values
    assert metric(scraped, "graft_backbone_batch_size_count", backbone="minilm") >= 3
    assert metric(scraped, "graft_head_cache_hits_total") >= 2 and metric(scraped, "graft_head_cache_misses_total") >= 1
    assert metric(scraped, "graft_training_jobs_total", status="succeeded") >= 1
    assert metric(scraped, "graft_tenant_predict_inputs_total") >= 6
    for name in (
        "graft_backbone_padding_ratio_bucket",
        "graft_backbone_queue_delay_seconds_bucket",
        "graft_head_cache_bytes",
        "graft_store_tenants",
        "graft_training_job_duration_seconds_bucket",
    ):
        assert name in scraped, name
