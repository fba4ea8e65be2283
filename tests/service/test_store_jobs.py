"""The job queue under concurrency: claims, leases, heartbeats and completion races, with real
processes on the real PostgreSQL (and on SQLite, where `store_url` runs them too)."""

from __future__ import annotations

import multiprocessing
import threading
import time

from sqlalchemy import text

from service.config import Settings
from service.jobs import Heartbeat, JobRunner
from service.store.models import Job
from service.store.repository import Store

from . import store_replicas
from .test_store import EXAMPLES, new_version


def _tasks(store: Store, n: int) -> tuple[str, list[str]]:
    tenant, _ = store.create_tenant("acme")
    jobs = [
        store.create_task(tenant.id, f"t{i}", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)[
            1
        ].id
        for i in range(n)
    ]
    return tenant.id, jobs


def test_claim_skips_rows_locked_by_another_replica(pg_url: str) -> None:
    """PostgreSQL: a claim does not wait for a job another transaction has locked (SKIP LOCKED);
    it takes the next one at once."""
    store = Store(pg_url)
    store.migrate()
    try:
        _, (first, second) = _tasks(store, 2)
        with store.engine.connect() as other:
            other.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": first})
            got: list[Job | None] = []
            claimer = threading.Thread(target=lambda: got.append(store.claim_job("w", lease_s=60, max_attempts=3)))
            claimer.start()
            claimer.join(10)
            assert not claimer.is_alive(), "claim_job waited for a locked row"
            assert got[0].id == second
            other.rollback()
        assert store.claim_job("w", lease_s=60, max_attempts=3).id == first
    finally:
        store.close()


def test_the_claim_statement_says_for_update_skip_locked(pg_url: str) -> None:
    store = Store(pg_url)
    store.migrate()
    seen: list[str] = []
    from sqlalchemy import event

    event.listen(store.engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    try:
        _tasks(store, 1)
        store.claim_job("w", lease_s=60, max_attempts=3)
    finally:
        store.close()
    assert any("FROM jobs" in sql and sql.rstrip().endswith("FOR UPDATE OF jobs SKIP LOCKED") for sql in seen), seen


def test_heartbeat_keeps_the_lease_and_its_end_lets_another_reclaim(store: Store) -> None:
    _, (job_id,) = _tasks(store, 1)
    job = store.claim_job("a", lease_s=0.6, max_attempts=3)
    with Heartbeat(store, job, "a", interval_s=0.1) as beat:
        beat.update(0.3)
        time.sleep(1.2)  # two leases long: only the heartbeat keeps it
        assert store.claim_job("b", lease_s=0.6, max_attempts=3) is None
    time.sleep(0.8)  # the worker "died": no more beats
    taken = store.claim_job("b", lease_s=0.6, max_attempts=3)
    assert taken.id == job_id and taken.attempts == 2 and taken.worker_id == "b"
    assert store.heartbeat(job_id, "a", 0.9) is False  # the old owner learns it lost the job


def test_a_superseded_result_is_kept_but_not_activated(store: Store) -> None:
    """Two replicas train the same task; the job queued later finishes first. The earlier job's
    version is stored, but the active version stays on the newer data."""
    tenant, _ = store.create_tenant("acme")
    task, older = store.create_task(
        tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES
    )
    assert store.claim_job("a", lease_s=60, max_attempts=3).id == older.id
    _, newer = store.add_examples(tenant.id, "t", [("fine", "pos")])  # the older one is running: not replaced
    assert store.claim_job("b", lease_s=60, max_attempts=3).id == newer.id
    assert store.complete_job(newer.id, "b", new_version(n_examples=5)) == 1
    assert store.complete_job(older.id, "a", new_version(n_examples=4)) == 2
    assert store.get_task(tenant.id, "t").active_version == 1
    assert [(v.number, v.n_examples) for v in store.versions(task.id)] == [(1, 5), (2, 4)]
    assert store.get_job(tenant.id, older.id).status == "succeeded"


def test_the_stalled_owner_and_the_reclaimer_complete_at_the_same_instant(store_url: str) -> None:
    """Replica A stalls past its lease, B reclaims, then both finish training at once (two
    processes, released by a barrier). Exactly one completion wins — B's — and one version exists."""
    store = Store(store_url)
    store.migrate()
    try:
        tenant_id, (job_id,) = _tasks(store, 1)
        store.claim_job("A", lease_s=0.2, max_attempts=3)
        time.sleep(0.3)
        assert store.claim_job("B", lease_s=0.2, max_attempts=3).id == job_id
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [
            ctx.Process(target=store_replicas.complete_together, args=(store_url, w, job_id, barrier, results))
            for w in "AB"
        ]
        for p in procs:
            p.start()
        outcome = dict(results.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(60)
        assert outcome == {"A": None, "B": 1}
        task = store.get_task(tenant_id, "t0")
        assert task.active_version == 1 and len(store.versions(task.id)) == 1
        assert store.versions(task.id)[0].metrics["by"] == "B"
    finally:
        store.close()


def test_many_replicas_racing_finish_every_job_exactly_once(store_url: str) -> None:
    """Four processes work a queue of 16 jobs, stalling past their lease now and then so jobs
    are reclaimed mid-flight. Every job ends succeeded, completed by exactly one replica, and
    every task has exactly one version — the one its winning replica wrote — active."""
    store = Store(store_url)
    store.migrate()
    try:
        tenant_id, jobs = _tasks(store, 16)
        ctx = multiprocessing.get_context("spawn")
        results = ctx.Queue()
        procs = [
            ctx.Process(target=store_replicas.busy_replica, args=(store_url, f"r{i}", i, results)) for i in range(4)
        ]
        for p in procs:
            p.start()
        by_replica = dict(results.get(timeout=180) for _ in procs)
        for p in procs:
            p.join(60)
        completions = [job for done in by_replica.values() for job in done]
        assert sorted(completions) == sorted(jobs)  # each exactly once
        winner = {job: name for name, done in by_replica.items() for job in done}
        reclaimed = 0
        for i, job_id in enumerate(jobs):
            job = store.get_job(tenant_id, job_id)
            task = store.get_task(tenant_id, f"t{i}")
            versions = store.versions(task.id)
            assert job.status == "succeeded" and job.version == 1 and job.worker_id == winner[job_id]
            assert len(versions) == 1 and task.active_version == 1
            assert versions[0].metrics["by"] == winner[job_id] and versions[0].job_id == job_id
            reclaimed += job.attempts > 1
        assert reclaimed > 0, "no job was reclaimed: the race was not exercised"
    finally:
        store.close()


def test_shutdown_hands_an_unfinished_job_back(store: Store, tmp_path) -> None:
    """A replica stopping with a job still running past the grace period requeues it, so another
    replica starts it at once instead of after the lease; the abandoned thread cannot touch it."""
    _, (job_id,) = _tasks(store, 1)
    started, release = threading.Event(), threading.Event()

    def stuck_backbone(_name: str):  # type: ignore[no-untyped-def]
        started.set()  # the job is running: claimed, heartbeat thread on
        release.wait(30)
        raise RuntimeError("backbone gone")

    runner = JobRunner(store, stuck_backbone, Settings.from_env({}, data_dir=str(tmp_path)))
    runner.start()
    assert started.wait(30)
    assert store.claim_job("other", lease_s=60, max_attempts=3) is None  # held by the runner
    runner.stop(grace_s=0.2)
    again = store.claim_job("other", lease_s=60, max_attempts=3)
    assert again is not None and again.id == job_id and again.attempts == 1
    release.set()  # the old thread now crashes and tries to fail the job: it is no longer its
    runner._threads[0].join(30)
    assert store.get_job(again.tenant_id, job_id).status == "running"
    assert store.get_job(again.tenant_id, job_id).worker_id == "other"
