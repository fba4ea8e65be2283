"""Process bodies for the store's race tests: each process stands in for one replica.

Kept apart from the test modules so that spawning a process imports only the store.
"""

from __future__ import annotations

import random
import time

from sqlalchemy import select

from service.store.models import Job
from service.store.repository import Store

from .test_store import new_version


def migrate_when_all_ready(url: str, barrier, errors) -> None:  # type: ignore[no-untyped-def]
    store = Store(url)
    try:
        barrier.wait()
        store.migrate()
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        errors.put(repr(exc))
    finally:
        store.close()


def complete_together(url: str, worker: str, job_id: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    store = Store(url)
    try:
        barrier.wait()
        results.put((worker, store.complete_job(job_id, worker, new_version(metrics={"by": worker}))))
    finally:
        store.close()


def busy_replica(url: str, name: str, seed: int, results) -> None:  # type: ignore[no-untyped-def]
    """Claim jobs with a short lease; sometimes stall past it (a slow or dying replica); complete."""
    rng = random.Random(seed)
    store = Store(url)
    completed: list[str] = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            job = store.claim_job(name, lease_s=0.25, max_attempts=100)
            if job is None:
                with store.reading() as s:
                    unfinished = s.scalar(select(Job.id).where(Job.status.in_(("queued", "running"))).limit(1))
                if unfinished is None:
                    break
                time.sleep(0.05)
                continue
            time.sleep(rng.choice([0.0, 0.02, 0.05, 0.4]))  # 0.4 > lease: another replica reclaims it
            if store.complete_job(job.id, name, new_version(metrics={"by": name})) is not None:
                completed.append(job.id)
    finally:
        results.put((name, completed))
        store.close()


def claim_all(url: str, name: str, barrier, results) -> None:  # type: ignore[no-untyped-def]
    """Claim jobs until the queue is empty (a fair-scheduling claimer racing others)."""
    store = Store(url)
    claimed: list[str] = []
    try:
        barrier.wait()
        while (job := store.claim_job(name, lease_s=60, max_attempts=3)) is not None:
            claimed.append(job.id)
    finally:
        results.put(claimed)
        store.close()
