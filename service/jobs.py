"""Training jobs: claimed from the store by worker threads, run off the request path.

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

import numpy as np

from adapters import heads
from adapters.training import TrainingDataError, fit_head

from . import images, logs, metrics
from .batching import Batcher
from .config import Settings
from .store.models import Job
from .store.repository import NewVersion, NotFound, Store

log = logs.get("jobs")

EMBED_SHARE = 0.7  # progress fraction spent embedding examples; the rest is fitting
EMBED_CHUNK = 64


class JobLost(Exception):
    """The job is no longer ours (its task was deleted, or another worker reclaimed it)."""


class Heartbeat:
    """Renews a running job's lease from a side thread (so long fits keep it) and carries progress."""

    def __init__(self, store: Store, job: Job, worker_id: str, interval_s: float) -> None:
        self.store, self.job, self.worker_id, self.interval_s = store, job, worker_id, interval_s
        self.progress = 0.0
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        try:
            if not self.store.heartbeat(self.job.id, self.worker_id, round(self.progress, 4)):
                self.lost = True
        except Exception:  # a store hiccup: keep trying until the lease would expire
            log.warning("heartbeat failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._beat()

    def update(self, progress: float) -> None:
        """Record progress (written now); raise JobLost if the job stopped being ours."""
        self.progress = progress
        self._beat()
        if self.lost:
            raise JobLost("lost the job's lease or its task was deleted")


class JobRunner:
    def __init__(
        self, store: Store, batchers: Callable[[str], Batcher], settings: Settings,
        on_version: Callable[[Job], None] | None = None,
    ) -> None:
        self.store = store
        self.on_version = on_version  # called after a job of this process switched its task's version
        self.batchers = batchers
        self.settings = settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
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
                    self.worker_id, lease_s=self.settings.job_lease_s, max_attempts=self.settings.job_max_attempts
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
            with Heartbeat(self.store, job, self.worker_id, self.settings.job_lease_s / 4) as beat:
                number = self._train(job, beat)
            if number is None:
                log.info("job result discarded: the job is no longer ours")
                outcome = "abandoned"
            else:
                log.info("job succeeded", extra={"version": number, "seconds": round(time.perf_counter() - started, 3)})
                outcome = "succeeded"
                if self.on_version is not None:
                    self.on_version(job)
        except JobLost as exc:
            log.info("job abandoned", extra={"reason": str(exc)})
            outcome = "abandoned"
        except TrainingDataError as exc:
            self.store.fail_job(job.id, self.worker_id, str(exc))
            log.info("job failed", extra={"error": str(exc)})
        except Exception as exc:  # never let one job kill the worker thread
            log.exception("job crashed")
            self.store.fail_job(job.id, self.worker_id, f"internal error while training ({type(exc).__name__})")
        finally:
            metrics.job_finished(outcome, time.perf_counter() - started)
            with self._lock:
                self._running.discard(job.id)
            logs.job_id.reset(token)
            logs.tenant_id.reset(tenant)

    def _train(self, job: Job, beat: Heartbeat) -> int | None:
        try:
            task = self.store.get_task_by_id(job.task_id or "")
        except NotFound:
            raise JobLost("the task was deleted") from None
        examples = self.store.examples(task.id)
        texts = [text for text, _ in examples]
        labels = [label for _, label in examples]
        batcher = self.batchers(task.backbone)
        backbone = batcher.backbone

        vectors = []
        for start in range(0, len(texts), EMBED_CHUNK):
            chunk = texts[start : start + EMBED_CHUNK]
            if task.modality == "image":  # stored as normalised PNG; the backbone takes preprocessed arrays
                chunk = images.from_stored(chunk, backbone.preprocessing)
            vectors.append(batcher.embed_sync(chunk, background=True))
            beat.update(EMBED_SHARE * min(1.0, (start + EMBED_CHUNK) / max(1, len(texts))))
        x = np.concatenate(vectors) if vectors else np.zeros((0, backbone.dim), dtype=np.float32)
        result = fit_head(task.head, x, labels, folds=self.settings.cv_folds, seed=self.settings.seed)
        beat.update(0.95)
        provenance = {"backbone": backbone.name, "backbone_revision": backbone.revision, "runtime": backbone.runtime, "dim": backbone.dim}
        blob = heads.to_bytes(result.head, metrics=result.metrics, **provenance)
        return self.store.complete_job(
            job.id,
            self.worker_id,
            NewVersion(
                head=task.head, backbone=backbone.name, backbone_revision=backbone.revision, runtime=backbone.runtime,
                labels=result.head.labels, metrics=result.metrics, n_examples=len(examples), weights=blob,
            ),
        )
