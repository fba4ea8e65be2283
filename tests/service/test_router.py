"""Predict routing in process: real store (SQLite), real MiniLM, real heads fitted on BBC News."""

from __future__ import annotations

import asyncio
import random
import time

import numpy as np
import pytest

from adapters import heads
from adapters.heads import LinearHead, PrototypeHead
from benchmarks.multitenant import install
from service.batching import Batcher
from service.caching import HeadCache, head_nbytes
from service.router import NotTrained, Router, store_head_loader
from service.store.repository import NewVersion, NotFound, Store
from tests.conftest import per_label

N_TASKS = 24


@pytest.fixture(scope="module")
def fitted(minilm, bbc_train):
    """N_TASKS distinct heads (label subsets, linear and prototype) on real BBC embeddings."""
    rows = per_label(bbc_train, 5, seed=7)
    x = minilm.embed([r["input"][:300] for r in rows])
    labels = np.array([r["label"] for r in rows])
    topics = sorted(set(labels))
    rng = random.Random(0)
    out = []
    for i in range(N_TASKS):
        chosen = sorted(rng.sample(topics, rng.randint(2, len(topics))))
        mask = np.isin(labels, chosen)
        y = np.array([chosen.index(label) for label in labels[mask]])
        kind = PrototypeHead if i % 4 == 3 else LinearHead
        out.append(kind(list(chosen)).fit(x[mask], y))
    return out


@pytest.fixture
def world(tmp_path, minilm, fitted):
    """A store with one tenant owning N_TASKS trained tasks, a batcher and a router factory."""
    store = Store(f"sqlite:///{tmp_path / 'graft.db'}")
    store.create_schema()
    tenant, _ = store.create_tenant("acme")
    for i, head in enumerate(fitted):
        install(store, tenant.id, f"task-{i}", head, minilm)
    batcher = Batcher(minilm, max_batch=16, max_delay_s=0.005)
    routers: list[Router] = []

    def router(budget: int = 10**8, ttl: float = 60.0) -> Router:
        r = Router(store, lambda _: batcher, HeadCache(store_head_loader(store), budget), task_ttl_s=ttl)
        routers.append(r)
        return r

    yield store, tenant.id, router
    batcher.close()
    store.close()


def texts(bbc_test, n: int, seed: int) -> list[list[str]]:
    titles = [r["input"].split("\n")[0] for r in bbc_test[:200]]
    rng = random.Random(seed)
    return [rng.sample(titles, rng.randint(1, 3)) for _ in range(n)]


async def concurrently(router: Router, tenant: str, calls: list[tuple[str, list[str]]]):
    return await asyncio.gather(*(router.predict(tenant, name, inputs) for name, inputs in calls))


async def one_by_one(router: Router, tenant: str, calls: list[tuple[str, list[str]]]):
    return [await router.predict(tenant, name, inputs) for name, inputs in calls]


def assert_same(a, b) -> None:
    (ref_a, version_a, preds_a), (ref_b, version_b, preds_b) = a, b
    assert (ref_a.id, version_a) == (ref_b.id, version_b)
    assert [p.prediction.label for p in preds_a] == [p.prediction.label for p in preds_b]
    for pa, pb in ((x.prediction, y.prediction) for x, y in zip(preds_a, preds_b, strict=True)):
        assert pa.scores.keys() == pb.scores.keys()
        assert max(abs(pa.scores[k] - pb.scores[k]) for k in pa.scores) < 1e-5


def test_concurrent_requests_across_tasks_match_sequential_single_requests(world, bbc_test) -> None:
    store, tenant, router = world
    calls = [(f"task-{i % N_TASKS}", inputs) for i, inputs in enumerate(texts(bbc_test, 96, seed=1))]
    sequential = asyncio.run(one_by_one(router(), tenant, calls))
    concurrent = asyncio.run(concurrently(router(), tenant, calls))
    for a, b in zip(sequential, concurrent, strict=True):
        assert_same(a, b)


def test_a_tiny_head_budget_keeps_answers_correct(world, bbc_test, fitted) -> None:
    store, tenant, router = world
    calls = [
        (f"task-{random.Random(i).randrange(N_TASKS)}", inputs) for i, inputs in enumerate(texts(bbc_test, 60, seed=2))
    ]
    roomy = router()
    tiny = router(budget=2 * max(head_nbytes(h) for h in fitted))
    expected = asyncio.run(one_by_one(roomy, tenant, calls))
    got = asyncio.run(concurrently(tiny, tenant, calls))
    for a, b in zip(expected, got, strict=True):
        assert_same(a, b)
    assert tiny.heads.evictions > 0 and tiny.heads.bytes <= tiny.heads.budget_bytes
    assert roomy.heads.evictions == 0 and roomy.heads.loads == len({name for name, _ in calls})


def test_a_version_switch_by_another_process_is_seen_within_the_ttl(world, minilm, fitted, tmp_path) -> None:
    store, tenant, router = world
    r = router(ttl=0.5)
    ref, version, before = asyncio.run(r.predict(tenant, "task-0", ["Markets rally as oil prices fall"]))
    assert version == 1

    other = Store(f"sqlite:///{tmp_path / 'graft.db'}")  # a second connection pool, as another replica has
    try:
        _, job = other.add_examples(tenant, "task-0", [("Shares fell sharply", fitted[1].labels[0])])
        claimed = other.claim_job("replica-2", lease_s=60, max_attempts=3)
        assert claimed.id == job.id
        head = fitted[1]
        other.complete_job(
            job.id,
            "replica-2",
            NewVersion(
                head=head.kind,
                backbone="minilm",
                backbone_revision=minilm.revision,
                runtime="torch",
                labels=head.labels,
                metrics={},
                n_examples=1,
                weights=heads.to_bytes(head),
            ),
        )
        switched = time.monotonic()
        seen = None
        while time.monotonic() - switched < 5:
            _, version, preds = asyncio.run(r.predict(tenant, "task-0", ["Markets rally as oil prices fall"]))
            if version == 2:
                seen = time.monotonic() - switched
                break
            time.sleep(0.02)
        assert seen is not None and seen <= 0.5 + 0.25, seen
        assert set(preds[0].prediction.scores) == set(head.labels)

        other.delete_task(tenant, "task-1")  # deleted elsewhere: a 404 once the cache notices
        deadline = time.monotonic() + 5
        with pytest.raises(NotFound):
            while time.monotonic() < deadline:
                asyncio.run(r.predict(tenant, "task-1", ["x"]))
                time.sleep(0.05)
    finally:
        other.close()


def test_local_changes_are_seen_at_once(world) -> None:
    store, tenant, router = world
    r = router(ttl=3600)
    asyncio.run(r.predict(tenant, "task-2", ["hello"]))
    store.delete_task(tenant, "task-2")
    r.forget(tenant, "task-2")
    with pytest.raises(NotFound):
        asyncio.run(r.predict(tenant, "task-2", ["hello"]))
    store.create_task(
        tenant, "fresh", modality="text", backbone="minilm", head="linear", examples=[("a", "x"), ("b", "y")]
    )
    with pytest.raises(NotTrained):
        asyncio.run(r.predict(tenant, "fresh", ["hello"]))
