"""Job scheduling (issue 21): fair claims across tenants, one queued job per task, a per-tenant queue
cap, disabled tenants, poison jobs, progress-bound leases, time limits, and training yielding to
predict. Store tests run on SQLite and the real PostgreSQL (``store_url``)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest

from service import jobs
from service.batching import SERVING, Batcher
from service.config import Settings
from service.jobs import Heartbeat, JobLost, JobRunner, JobTimedOut, yield_to_serving
from service.store.models import Job
from service.store.repository import QueueFull, Store

from . import store_replicas
from .test_store import EXAMPLES


def claim(store: Store, worker: str = "w", lease_s: float = 60, max_attempts: int = 3) -> Job:
    job = store.claim_job(worker, lease_s=lease_s, max_attempts=max_attempts)
    assert job is not None, "nothing to claim"
    return job


def _task(store: Store, tenant_id: str, name: str, head: str = "linear") -> str:
    return store.create_task(tenant_id, name, modality="text", backbone="minilm", head=head, examples=EXAMPLES)[1].id


def test_claims_take_turns_across_tenants_then_oldest_first(store: Store) -> None:
    """Tenant A queues three jobs before B queues two: claims alternate A, B, A, B, A — not A's three first."""
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    a_jobs = [_task(store, a.id, f"a{i}") for i in range(3)]
    b_jobs = [_task(store, b.id, f"b{i}") for i in range(2)]
    order = [claim(store).id for _ in range(5)]
    assert order == [a_jobs[0], b_jobs[0], a_jobs[1], b_jobs[1], a_jobs[2]]
    assert store.claim_job("w", lease_s=60, max_attempts=3) is None


def test_a_tenant_new_to_the_queue_goes_before_one_that_was_served(store: Store) -> None:
    a, _ = store.create_tenant("a")
    b, _ = store.create_tenant("b")
    first = _task(store, a.id, "a0")
    assert claim(store).id == first
    second_a = _task(store, a.id, "a1")  # queued before b's job, but a was just served
    b_job = _task(store, b.id, "b0")
    assert [claim(store).id for _ in range(2)] == [b_job, second_a]


def test_a_new_job_replaces_the_tasks_queued_job(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    first = _task(store, tenant.id, "t")
    _, second = store.add_examples(tenant.id, "t", [("more", "pos")])
    _, third = store.add_examples(tenant.id, "t", [("again", "neg")])
    for old, newer in ((first, second.id), (second.id, third.id)):
        job = store.get_job(tenant.id, old)
        assert job.status == "superseded" and job.finished_at is not None
        assert job.error is not None and newer in job.error and "replaced before it ran" in job.error
        assert job.superseded_by == newer  # what the client follows
    claimed = claim(store)
    assert claimed.id == third.id  # trains on every example
    assert store.claim_job("w", lease_s=60, max_attempts=3) is None  # the replaced ones never run
    assert store.job_counts() == {"superseded": 2, "running": 1}


def test_queued_jobs_per_tenant_are_capped(store_url: str) -> None:
    store = Store(store_url, max_queued_jobs_per_tenant=2)
    store.migrate()
    try:
        tenant, _ = store.create_tenant("acme")
        other, _ = store.create_tenant("other")
        _task(store, tenant.id, "t0")
        _task(store, tenant.id, "t1")
        with pytest.raises(QueueFull, match=r"2 training jobs of this tenant are already queued \(the limit is 2\)"):
            _task(store, tenant.id, "t2")
        assert [t.name for t in store.list_tasks(tenant.id)] == ["t0", "t1"]  # nothing half-written
        store.add_examples(tenant.id, "t0", [("more", "pos")])  # replaces t0's own queued job: allowed
        _task(store, other.id, "o0")  # other tenants are not affected
        store.claim_job("w", lease_s=60, max_attempts=3)  # one of acme's leaves the queue
        store.claim_job("w", lease_s=60, max_attempts=3)
        _task(store, tenant.id, "t2")
    finally:
        store.close()


def test_disabled_tenants_jobs_are_not_claimed(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    job = _task(store, tenant.id, "t")
    store.set_tenant_disabled(tenant.id, True)
    assert store.claim_job("w", lease_s=60, max_attempts=3) is None
    store.set_tenant_disabled(tenant.id, False)
    assert claim(store).id == job


def test_a_poison_job_fails_with_a_clear_error_and_is_never_reclaimed(store: Store) -> None:
    """A job whose worker dies every time (out of memory, say) is failed after max_attempts lost leases,
    with the reason, and stays failed; the queue behind it moves on."""
    tenant, _ = store.create_tenant("acme")
    poison = _task(store, tenant.id, "poison")
    for attempt in (1, 2):
        job = claim(store, f"w{attempt}", lease_s=0.2, max_attempts=2)
        assert job.id == poison and job.attempts == attempt
        store.heartbeat(poison, f"w{attempt}", 0.35)
        time.sleep(0.3)  # the worker died: no more heartbeats
    healthy = _task(store, tenant.id, "healthy")
    assert claim(store, "w3", lease_s=0.2, max_attempts=2).id == healthy
    failed = store.get_job(tenant.id, poison)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.startswith("the job stopped its worker 2 times (e.g. out of memory")
    assert "it will not be retried" in failed.error and "at 35% progress" in failed.error
    time.sleep(0.3)
    store.claim_job("w4", lease_s=0.2, max_attempts=2)  # reclaims the healthy job, never the poison one
    assert store.get_job(tenant.id, poison).status == "failed"


def test_fair_claims_race_real_processes(store_url: str) -> None:
    """Four processes claim at once from three tenants' jobs: every job is claimed exactly once and the
    queue empties (no claimer blocks on another's tenant or job lock)."""
    store = Store(store_url)
    store.migrate()
    try:
        tenants = [store.create_tenant(f"t{i}")[0].id for i in range(3)]
        queued = sorted(_task(store, t, f"task{j}") for t in tenants for j in range(4))
        ctx = multiprocessing.get_context("spawn")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [
            ctx.Process(target=store_replicas.claim_all, args=(store_url, f"w{i}", barrier, results)) for i in range(4)
        ]
        for p in procs:
            p.start()
        claimed = [job for _ in procs for job in results.get(timeout=120)]
        for p in procs:
            p.join(60)
        assert sorted(claimed) == queued
    finally:
        store.close()


# -- heartbeat: leases bound to progress, time limits ------------------------------------------


def test_the_heartbeat_stops_renewing_a_job_that_makes_no_progress(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    job_id = _task(store, tenant.id, "t")
    job = claim(store, "a", lease_s=0.6)
    with Heartbeat(store, job, "a", interval_s=0.1, stall_s=0.3) as beat:
        beat.update(0.2)
        time.sleep(1.5)  # hung: progress stays at 0.2, so after 0.3 s the lease is no longer renewed
        taken = store.claim_job("b", lease_s=0.6, max_attempts=3)
        assert taken is not None and taken.id == job_id
        with pytest.raises(JobLost):
            beat.update(0.3)


def test_a_job_that_keeps_moving_keeps_its_lease(store: Store) -> None:
    """Control for the stall test: steps count as progress even when the progress value stays put."""
    tenant, _ = store.create_tenant("acme")
    _task(store, tenant.id, "t")
    job = claim(store, "a", lease_s=0.6)
    with Heartbeat(store, job, "a", interval_s=0.1, stall_s=0.3) as beat:
        for _ in range(15):
            beat.step()
            time.sleep(0.1)
        assert store.claim_job("b", lease_s=0.6, max_attempts=3) is None


def test_a_job_past_its_time_limit_fails_with_a_clear_error(store: Store) -> None:
    tenant, _ = store.create_tenant("acme")
    job_id = _task(store, tenant.id, "t")
    job = claim(store, "a")
    with Heartbeat(store, job, "a", interval_s=0.1, time_limit_s=0.3, limit_setting="GRAFT_JOB_TIME_LIMIT_S") as beat:
        beat.update(0.5)
        time.sleep(0.6)  # stuck inside one step: the side thread fails the job
        failed = store.get_job(tenant.id, job_id)
        assert failed.status == "failed" and failed.error is not None
        assert failed.error.startswith("the job hit its time limit of 0.3 s (GRAFT_JOB_TIME_LIMIT_S) at 50% progress")
        with pytest.raises(JobTimedOut):
            beat.step()  # the training notices at its next step
    assert store.claim_job("b", lease_s=0.01, max_attempts=3) is None  # failed, not reclaimable


def test_the_time_limit_follows_the_head_kind(store: Store, tmp_path) -> None:
    tenant, _ = store.create_tenant("acme")
    _task(store, tenant.id, "plain")
    _task(store, tenant.id, "tuned", head="finetune")
    settings = Settings.from_env({}, data_dir=str(tmp_path), job_time_limit_s=11.0, job_time_limit_finetune_s=22.0)
    runner = JobRunner(store, lambda _: None, settings)  # type: ignore[arg-type,return-value]
    limits = {}
    for _ in range(2):
        job = claim(store)
        beat = runner._heartbeat(job)
        limits[job.task_name] = (beat.time_limit_s, beat.limit_setting)
    assert limits == {"plain": (11.0, "GRAFT_JOB_TIME_LIMIT_S"), "tuned": (22.0, "GRAFT_JOB_TIME_LIMIT_FINETUNE_S")}


# -- training yields to serving -----------------------------------------------------------------


def test_a_training_step_waits_while_predict_work_is_in_flight(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    """A predict request queued on the real batcher holds the fine-tune step until it is answered;
    background (training) embeddings do not hold it."""
    monkeypatch.setattr(jobs, "YIELD_MAX_S", 60.0)
    batcher = Batcher(minilm, max_batch=8, max_delay_s=0.0)
    try:
        texts = [f"predict request number {i} about the news of the day" for i in range(96)]
        seen: list[tuple[int, float]] = []

        def training_step() -> None:
            busy = SERVING.busy
            yield_to_serving()
            seen.append((busy, time.perf_counter()))

        predict = batcher.submit(texts)  # foreground: predict passes
        step = threading.Thread(target=training_step)
        step.start()
        predict.result(timeout=120)
        answered = time.perf_counter()
        step.join(30)
        ((busy, returned),) = seen
        assert busy == 1, "the predict request was already answered: the test proves nothing"
        assert returned >= answered - 0.05, "the training step ran while predict work was queued"
        assert SERVING.busy == 0

        background = batcher.submit(texts, background=True)  # training's own embeddings
        assert SERVING.busy == 0
        started = time.perf_counter()
        yield_to_serving()
        assert time.perf_counter() - started < 0.1
        background.result(timeout=120)
    finally:
        batcher.close()


def test_yielding_is_bounded_so_training_still_advances(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobs, "YIELD_MAX_S", 0.2)
    SERVING.begin()  # predict traffic that never ends
    try:
        started = time.perf_counter()
        yield_to_serving()
        assert 0.15 <= time.perf_counter() - started < 2.0
    finally:
        SERVING.end()


def test_fine_tune_steps_wait_while_predict_work_is_in_flight(bbc_train, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real fine-tune loop, with the hook the job runner gives it: no optimiser step runs while a
    predict request is in flight; the first runs once it is answered."""
    from adapters.heads.finetune import FinetuneConfig, fit_finetune
    from service.backbones.registry import BUILTIN
    from service.backbones.text import TorchTextBackbone
    from tests.conftest import per_label

    monkeypatch.setattr(jobs, "YIELD_MAX_S", 60.0)
    backbone = TorchTextBackbone("minilm", BUILTIN["minilm"].source())
    rows = per_label(bbc_train, 2, seed=4)
    steps: list[float] = []

    def between_steps() -> None:
        yield_to_serving()
        steps.append(time.perf_counter())

    SERVING.begin()  # a predict request in flight
    released = None
    try:
        fit = threading.Thread(
            target=fit_finetune,
            args=(
                backbone,
                [r["input"][:400] for r in rows],
                [r["label"] for r in rows],
                FinetuneConfig(max_epochs=1, patience=1),
            ),
            kwargs={"between_steps": between_steps},
        )
        fit.start()
        time.sleep(3.0)
        assert steps == [], "a training step ran while predict work was in flight"
    finally:
        released = time.perf_counter()
        SERVING.end()
    fit.join(180)
    assert not fit.is_alive() and steps and steps[0] >= released


def test_graft_role_is_checked() -> None:
    assert Settings.from_env({}).role == "all"
    assert Settings.from_env({"GRAFT_ROLE": "Worker"}).role == "worker"
    with pytest.raises(ValueError, match=r"GRAFT_ROLE='trainer' is not valid: expected one of api, worker, all"):
        Settings.from_env({"GRAFT_ROLE": "trainer"})


def test_the_yield_bound_is_a_setting_and_zero_never_waits() -> None:
    from service.config import Settings

    assert Settings.from_env({}).training_yield_max_s == 1.0
    assert Settings.from_env({"GRAFT_TRAINING_YIELD_MAX_S": "0"}).training_yield_max_s == 0.0
    SERVING.begin()  # predict traffic that never ends
    try:
        started = time.perf_counter()
        yield_to_serving(0.0)
        assert time.perf_counter() - started < 0.1
    finally:
        SERVING.end()
