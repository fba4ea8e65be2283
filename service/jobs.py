"""Training jobs: claimed from the store by worker threads, run off the request path. This module is
the worker (claim, lease, heartbeat, requeue, completion bookkeeping); what a job computes is the
training pipeline's (service/pipeline.py).

State lives in the store (status, progress, heartbeat, error), so any process can report a
job and a job whose worker died is reclaimed once its lease expires. A job that fails leaves
the previous version active; a job that succeeds adds an immutable version and switches the
active version in the same transaction.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable

from adapters import kinds
from adapters.training import TrainingDataError

from . import logs, metrics
from .batching import SERVING, Batcher, MapBatcher, TokenBatcher
from .config import Settings
from .engine.generation import GenerationEngine
from .pipeline import EMBED_CHUNK, EMBED_SHARE, JobLost, TrainingPipeline, auto_finetune_why_not, backbone_inputs
from .store.models import Job
from .store.repository import NotFound, Store

log = logs.get("jobs")

__all__ = [
    "EMBED_CHUNK",
    "EMBED_SHARE",
    "Heartbeat",
    "JobLost",
    "JobRunner",
    "JobTimedOut",
    "backbone_inputs",
    "yield_to_serving",
]


class JobTimedOut(Exception):
    """The job ran past its time limit; the message says which and how far it got."""


YIELD_MAX_S = 1.0  # longest a fine-tune step waits for predict work to drain: training slows, never stops


class Heartbeat:
    """Renews a running job's lease from a side thread (so long fits keep it) and carries progress.

    The lease is renewed only while the job makes progress (its value changed within ``stall_s``): a
    job that hangs stops renewing and loses its lease, and another worker takes it (or, after
    ``max_attempts``, it fails as a poison job). Past ``time_limit_s`` the job fails with a clear
    error: the side thread records it (even when training is stuck) and :meth:`update` raises
    :class:`JobTimedOut` at the training's next step.
    """

    def __init__(
        self,
        store: Store,
        job: Job,
        worker_id: str,
        interval_s: float,
        *,
        stall_s: float = float("inf"),
        time_limit_s: float = float("inf"),
        limit_setting: str = "GRAFT_JOB_TIME_LIMIT_S",
    ) -> None:
        self.store, self.job, self.worker_id, self.interval_s = store, job, worker_id, interval_s
        self.stall_s, self.time_limit_s, self.limit_setting = stall_s, time_limit_s, limit_setting
        self.progress = 0.0
        self.lost = False
        self.timed_out: str | None = None
        self.started = self.moved_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def stalled(self) -> bool:
        return time.monotonic() - self.moved_at > self.stall_s

    def _check_time(self) -> None:
        if self.timed_out is None and time.monotonic() - self.started > self.time_limit_s:
            self.timed_out = (
                f"the job hit its time limit of {self.time_limit_s:g} s ({self.limit_setting}) at {self.progress:.0%} "
                "progress and was stopped; train on fewer examples or a lighter head, or raise the limit"
            )
            try:
                self.store.fail_job(self.job.id, self.worker_id, self.timed_out)
            except Exception:
                log.warning("recording a timed-out job failed; its lease runs out instead", exc_info=True)

    def _beat(self) -> None:
        self._check_time()
        if self.timed_out is not None or self.stalled:
            return  # no renewal: the lease runs out (a timed-out job is already failed)
        try:
            if not self.store.heartbeat(self.job.id, self.worker_id, round(self.progress, 4)):
                self.lost = True
        except Exception:  # a store hiccup: keep trying until the lease would expire
            log.warning("heartbeat failed", exc_info=True)

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self.interval_s):
            if self.stalled and not warned:
                log.warning("job made no progress; its lease is no longer renewed", extra={"stall_s": self.stall_s})
                warned = True
            self._beat()

    def step(self) -> None:
        """A training step is about to run: that is progress (no store write); raise as :meth:`update` does."""
        self.moved_at = time.monotonic()
        self._raise_if_over()

    def _raise_if_over(self) -> None:
        if self.timed_out is not None:
            raise JobTimedOut(self.timed_out)
        if self.lost:
            raise JobLost("lost the job's lease or its task was deleted")

    def update(self, progress: float) -> None:
        """Record progress (written now); raise JobTimedOut past the time limit, JobLost if the job
        stopped being ours."""
        if progress != self.progress:
            self.progress, self.moved_at = progress, time.monotonic()
        self._beat()
        self._raise_if_over()


def yield_to_serving(max_s: float | None = None) -> None:
    """Between training steps: let predict requests in flight in this process finish first, waiting at
    most ``max_s`` seconds (default ``YIELD_MAX_S``; 0 = do not wait)."""
    limit = YIELD_MAX_S if max_s is None else max_s
    if limit > 0:
        SERVING.wait_idle(limit)


class JobRunner:
    def __init__(
        self,
        store: Store,
        batchers: Callable[[str], Batcher],
        settings: Settings,
        backbones_of: Callable[[str], list[str]] | None = None,
        on_version: Callable[[Job], None] | None = None,
        token_batchers: Callable[[str], TokenBatcher] | None = None,
        map_batchers: Callable[[str], MapBatcher] | None = None,
        generation: GenerationEngine | None = None,
    ) -> None:
        self.store = store
        self.on_version = on_version  # called after a job of this process switched its task's version
        self.batchers = batchers
        self.settings = settings
        self.backbones_of = backbones_of  # modality -> configured backbone names
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.pipeline = TrainingPipeline(
            store, batchers, settings, self.worker_id, backbones_of, token_batchers, generation, map_batchers
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.settings.training_workers):
            thread = threading.Thread(target=self._loop, name=f"trainer-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def notify(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    def stop(self, grace_s: float) -> None:
        """Stop claiming; wait up to ``grace_s`` for running jobs to finish."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            with self._lock:
                unfinished = sorted(self._running)
            for job_id in unfinished:  # hand them back now rather than after the lease expires
                try:
                    self.store.requeue_job(job_id, self.worker_id)
                except Exception:
                    log.warning("could not requeue a job; it is reclaimed when its lease expires", exc_info=True)
            log.warning("shutdown grace expired with jobs running; they were requeued", extra={"jobs": unfinished})

    @property
    def running(self) -> int:
        return len(self._running)

    def _loop(self) -> None:
        poll_s = 1.0
        while not self._stop.is_set():
            try:
                job = self.store.claim_job(
                    self.worker_id,
                    lease_s=self.settings.job_lease_s,
                    max_attempts=self.settings.job_max_attempts,
                    max_running_per_tenant=self.settings.max_running_jobs_per_tenant,
                )
            except Exception:
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._wake.wait(poll_s)
                self._wake.clear()
                continue
            self.run(job)

    def run(self, job: Job) -> None:
        token = logs.job_id.set(job.id)
        tenant = logs.tenant_id.set(job.tenant_id)
        with self._lock:
            self._running.add(job.id)
        started = time.perf_counter()
        outcome = "failed"
        try:
            log.info("job started", extra={"task_id": job.task_id, "attempt": job.attempts})
            with self._heartbeat(job) as beat:
                number = self._train(job, beat)
            if number is None:
                log.info("job result discarded: the job is no longer ours")
                outcome = "abandoned"
            else:
                log.info("job succeeded", extra={"version": number, "seconds": round(time.perf_counter() - started, 3)})
                outcome = "succeeded"
                if self.on_version is not None:
                    self.on_version(job)
        except JobTimedOut as exc:
            self.store.fail_job(job.id, self.worker_id, str(exc))
            log.info("job failed", extra={"error": str(exc)})
        except JobLost as exc:
            log.info("job abandoned", extra={"reason": str(exc)})
            outcome = "abandoned"
        except TrainingDataError as exc:
            self.store.fail_job(job.id, self.worker_id, str(exc))
            log.info("job failed", extra={"error": str(exc)})
        except Exception as exc:  # never let one job kill the worker thread
            logs.exception(log, "job crashed", exc)
            self.store.fail_job(job.id, self.worker_id, f"internal error while training ({type(exc).__name__})")
        finally:
            metrics.job_finished(outcome, time.perf_counter() - started)
            with self._lock:
                self._running.discard(job.id)
            logs.job_id.reset(token)
            logs.tenant_id.reset(tenant)

    def _heartbeat(self, job: Job) -> Heartbeat:
        """The job's heartbeat, with the time limit of its head kind."""
        finetune = False
        if job.task_id is not None:
            try:
                task = self.store.get_task_by_id(job.task_id)
                # fine-tuned heads and generation adapters train a transformer: the longer limit; so may head
                # auto on a text classification task with enough examples (service/pipeline.py _auto_finetune)
                finetune = (
                    task.head == "finetune"
                    or kinds.kind_of(task.kind).generates
                    or (
                        task.head == "auto"
                        and auto_finetune_why_not(task, self.store.label_counts(task.id), self.settings) is None
                    )
                )
            except NotFound:
                pass  # _train abandons it
        limit, setting = (
            (self.settings.job_time_limit_finetune_s, "GRAFT_JOB_TIME_LIMIT_FINETUNE_S")
            if finetune
            else (self.settings.job_time_limit_s, "GRAFT_JOB_TIME_LIMIT_S")
        )
        return Heartbeat(
            self.store,
            job,
            self.worker_id,
            self.settings.job_lease_s / 4,
            stall_s=self.settings.job_stall_s,
            time_limit_s=limit,
            limit_setting=setting,
        )

    def _train(self, job: Job, beat: Heartbeat) -> int | None:
        return self.pipeline.train(job, _Steps(beat, self.settings.training_yield_max_s))


class _Steps:
    """The heartbeat as the pipeline's :class:`Progress`: before each fine-tune step, training yields to
    predict requests in flight (at most ``yield_max_s``), then the step counts as progress."""

    def __init__(self, beat: Heartbeat, yield_max_s: float) -> None:
        self.beat, self.yield_max_s = beat, yield_max_s

    def update(self, progress: float) -> None:
        self.beat.update(progress)

    def step(self) -> None:
        yield_to_serving(self.yield_max_s)
        self.beat.step()
