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
from collections import Counter
from collections.abc import Callable
from typing import cast

import numpy as np

from adapters import heads, selection
from adapters.heads.finetune import FinetuneConfig, TextSource, fit_finetune
from adapters.kinds import fit_multilabel, fit_regression
from adapters.training import FitResult, TrainingDataError, encode_labels, fit_head
from adapters.transfer import capped_sample, logme

from . import faults, images, logs, metrics
from . import labels as stored_labels
from .backbones.base import Backbone, ImageBackbone
from .batching import SERVING, Batcher, text_trunk
from .config import Settings
from .router import VersionFailed, head_of
from .store.models import Job, Task
from .store.repository import NewVersion, NotFound, Store

log = logs.get("jobs")

EMBED_SHARE = 0.7  # progress fraction spent embedding examples; the rest is fitting
EMBED_CHUNK = 64


def backbone_inputs(backbone: Backbone, stored: list[str]) -> list:
    """Stored examples as a backbone takes them: texts as they are; images (stored as normalised
    PNG) decoded and cropped by the backbone's preprocessing."""
    if backbone.modality == "image":
        return images.from_stored(stored, cast(ImageBackbone, backbone).preprocessing)
    return stored


class JobLost(Exception):
    """The job is no longer ours (its task was deleted, or another worker reclaimed it)."""


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
        self, store: Store, job: Job, worker_id: str, interval_s: float, *,
        stall_s: float = float("inf"), time_limit_s: float = float("inf"), limit_setting: str = "GRAFT_JOB_TIME_LIMIT_S",
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
        self, store: Store, batchers: Callable[[str], Batcher], settings: Settings,
        backbones_of: Callable[[str], list[str]] | None = None,
        on_version: Callable[[Job], None] | None = None,
    ) -> None:
        self.store = store
        self.on_version = on_version  # called after a job of this process switched its task's version
        self.batchers = batchers
        self.settings = settings
        self.backbones_of = backbones_of  # modality -> configured backbone names
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
                    self.worker_id, lease_s=self.settings.job_lease_s, max_attempts=self.settings.job_max_attempts,
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
                finetune = self.store.get_task_by_id(job.task_id).head == "finetune"
            except NotFound:
                pass  # _train abandons it
        limit, setting = (
            (self.settings.job_time_limit_finetune_s, "GRAFT_JOB_TIME_LIMIT_FINETUNE_S") if finetune
            else (self.settings.job_time_limit_s, "GRAFT_JOB_TIME_LIMIT_S")
        )
        return Heartbeat(
            self.store, job, self.worker_id, self.settings.job_lease_s / 4,
            stall_s=self.settings.job_stall_s, time_limit_s=limit, limit_setting=setting,
        )

    def _embed(self, backbone: str, texts: list[str], beat: Heartbeat, done: float, share: float) -> np.ndarray:
        """Embed ``texts`` at training priority; progress moves from ``done`` to ``done + share``."""
        batcher = self.batchers(backbone)
        vectors = [np.zeros((0, batcher.backbone.dim), dtype=np.float32)]
        for start in range(0, len(texts), EMBED_CHUNK):
            chunk = backbone_inputs(batcher.backbone, texts[start : start + EMBED_CHUNK])
            vectors.append(batcher.embed_sync(chunk, background=True))
            beat.update(done + share * min(1.0, (start + EMBED_CHUNK) / max(1, len(texts))))
        return np.concatenate(vectors)

    def _embed_and_score(self, task: Task, texts: list[str], labels: list[str], beat: Heartbeat) -> tuple[str, np.ndarray, dict]:
        """Embed the examples with the task's backbone — for ``auto``, the backbone of the modality with
        the highest LogME on a capped, stratified sample — and score every backbone of the modality."""
        names = self.backbones_of(task.modality) if self.backbones_of else []
        if task.backbone != "auto" and task.backbone not in names:
            names = [task.backbone, *names]
        if not names:
            raise TrainingDataError(f"no {task.modality} backbone is configured")
        _, y = encode_labels(labels)
        sample = capped_sample(y, self.settings.transfer_sample, self.settings.seed)
        sample_texts = [texts[i] for i in sample]
        others = [n for n in names if n != task.backbone]
        scores: dict[str, float] = {}
        embedded: dict[str, np.ndarray] = {}
        work = len(others) * len(sample) + len(texts)  # inputs to embed, for progress
        done = 0

        def share(count: int) -> tuple[float, float]:
            return EMBED_SHARE * done / work, EMBED_SHARE * count / work

        for name in others:  # the sample only
            embedded[name] = self._embed(name, sample_texts, beat, *share(len(sample)))
            if len(sample) >= 2:
                scores[name] = logme(embedded[name], y[sample])
            done += len(sample)
        chosen = task.backbone if task.backbone != "auto" else max(others, key=lambda n: scores.get(n, 0.0))
        if chosen in embedded:  # auto: embed the rest with the winner
            x = np.empty((len(texts), embedded[chosen].shape[1]), dtype=np.float32)
            x[sample] = embedded[chosen]
            rest = np.setdiff1d(np.arange(len(texts)), sample)
            x[rest] = self._embed(chosen, [texts[i] for i in rest], beat, *share(len(rest)))
        else:
            x = self._embed(chosen, texts, beat, *share(len(texts)))
            if len(sample) >= 2:
                scores[chosen] = logme(x[sample], y[sample])
        transferability = {
            "method": "LogME", "examples": int(len(sample)), "selection": "auto" if task.backbone == "auto" else "pinned",
            "chosen": chosen, "scores": dict(sorted(scores.items(), key=lambda kv: -kv[1])),
        }
        return chosen, x, transferability

    def _decide(self, task: Task, result: FitResult, x: np.ndarray, backbone: str, texts: list[str], labels: list[str]) -> tuple[selection.Decision, int | None]:
        """Compare with the active version on the examples it never saw (see adapters/selection.py)."""
        if task.active_version is None:
            return selection.first_version(), None
        active = self.store.version(task.id, task.active_version, with_weights=True)
        if (result.oof_proba if task.kind == stored_labels.CLASSIFICATION else result.oof_pred) is None:
            return selection.unconditional("promoted without comparison: too few examples to cross-validate"), active.number
        unseen = np.arange(active.n_examples, len(texts))
        try:
            head = head_of(self.store, active)
        except VersionFailed:  # a corrupt active version must not block the retrain that replaces it
            return selection.unconditional(
                f"promoted without comparison: version {active.number} failed to load (corrupt weights)"
            ), active.number
        vectors = None
        if heads.EMBEDDING in head.consumes:
            if active.backbone == backbone:
                vectors = x[unseen]
            else:
                try:
                    batcher = self.batchers(active.backbone)
                    unseen_inputs = backbone_inputs(batcher.backbone, [texts[i] for i in unseen])
                    vectors = batcher.embed_sync(unseen_inputs, background=True)
                except KeyError:
                    return selection.unconditional(
                        f"promoted without comparison: version {active.number}'s backbone {active.backbone!r} is no longer configured"
                    ), active.number
        truth = [labels[i] for i in unseen]
        if task.kind == stored_labels.REGRESSION:
            values = stored_labels.decode_all(task.kind, truth)
            active_values = head.predict_values(vectors).tolist()  # type: ignore[attr-defined]
            new_values = result.oof_pred[unseen].tolist()  # type: ignore[index]
            return selection.compare_errors_on_unseen(values, new_values, active_values, active.number), active.number
        if task.kind == stored_labels.MULTILABEL:  # right = exactly the example's label set (both stored-encoded)
            def as_sets(decisions: np.ndarray, names: list[str]) -> list[str]:
                return [stored_labels.encode(task.kind, [names[j] for j in np.flatnonzero(row)]) for row in decisions]

            active_pred = as_sets(head.predict(vectors), head.labels)  # type: ignore[attr-defined]
            new_pred = as_sets(result.oof_pred[unseen], result.head.labels)  # type: ignore[index]
            return selection.compare_on_unseen(truth, new_pred, active_pred, active.number), active.number
        active_pred = [head.labels[i] for i in head.predict_proba(vectors, raw=[texts[i] for i in unseen]).argmax(axis=1)]
        assert result.oof_proba is not None  # checked above: the comparison needs CV predictions
        new_pred = [result.head.labels[i] for i in result.oof_proba[unseen].argmax(axis=1)]
        return selection.compare_on_unseen(truth, new_pred, active_pred, active.number), active.number

    def _fit_kind(self, task: Task, texts: list[str], stored: list[str], beat: Heartbeat) -> tuple[str, np.ndarray, FitResult]:
        """Multilabel and regression tasks: embed with the task's (pinned) backbone, fit the kind's head."""
        name = task.backbone
        if name == "auto":  # refused at the API; a hand-edited row falls back to the modality's first backbone
            names = self.backbones_of(task.modality) if self.backbones_of else []
            if not names:
                raise TrainingDataError(f"no {task.modality} backbone is configured")
            name = names[0]
        x = self._embed(name, texts, beat, 0.0, EMBED_SHARE)
        targets = stored_labels.decode_all(task.kind, stored)
        fit = fit_multilabel if task.kind == stored_labels.MULTILABEL else fit_regression
        result = fit(x, targets, folds=self.settings.cv_folds, seed=self.settings.seed)
        beat.update(0.9)
        return name, x, result

    def _finetune(self, job: Job, task: Task, texts: list[str], labels: list[str], beat: Heartbeat) -> int | None:
        """LoRA on the top layers of the task's text backbone (``auto``: the first one configured)."""
        if task.modality != "text":
            raise TrainingDataError("head 'finetune' is available for text tasks only")
        names = [task.backbone] if task.backbone != "auto" else (self.backbones_of("text") if self.backbones_of else [])
        sources = [(n, text_trunk(self.batchers(n).backbone)) for n in names]
        name, source = next(((n, s) for n, s in sources if s is not None), (None, None))
        if source is None or name is None:
            raise TrainingDataError("no text backbone with a transformer trunk is configured for head 'finetune'")
        if len(set(labels)) < 2:
            raise TrainingDataError("at least 2 distinct labels are needed to train a classifier")
        cfg = FinetuneConfig(
            layers=self.settings.finetune_layers, rank=self.settings.finetune_rank, max_epochs=self.settings.finetune_max_epochs
        )

        def between_steps() -> None:
            yield_to_serving(self.settings.training_yield_max_s)
            beat.step()

        head, fit_metrics = fit_finetune(
            cast(TextSource, source), texts, labels, cfg, seed=self.settings.seed, progress=lambda f: beat.update(0.9 * f), between_steps=between_steps,
        )
        backbone = self.batchers(name).backbone
        decision = selection.first_version() if task.active_version is None else selection.unconditional(
            "promoted without comparison: a fine-tuned head is compared on its held-out fold only"
        )
        metrics = {**fit_metrics, "warnings": list(fit_metrics.get("warnings", [])), "examples_per_label": dict(sorted(Counter(labels).items()))}
        provenance = {"backbone": name, "backbone_revision": backbone.revision, "runtime": "torch", "dim": backbone.dim}
        blob = heads.to_bytes(head, metrics=metrics, **provenance)
        beat.update(0.95)
        return self.store.complete_job(
            job.id, self.worker_id,
            NewVersion(
                head="finetune", backbone=name, backbone_revision=backbone.revision, runtime="torch", labels=head.labels,
                metrics={**metrics, "promotion": decision.as_dict()}, n_examples=len(texts), weights=blob,
            ),
            promote=decision.promote,
            compared_with=task.active_version,
        )

    def _train(self, job: Job, beat: Heartbeat) -> int | None:
        try:
            task = self.store.get_task_by_id(job.task_id or "")
        except NotFound:
            raise JobLost("the task was deleted") from None
        examples = self.store.examples(task.id)
        texts = [text for text, _ in examples]
        labels = [label for _, label in examples]
        if task.head == "finetune" and task.kind == stored_labels.CLASSIFICATION:
            return self._finetune(job, task, texts, labels, beat)
        if task.kind != stored_labels.CLASSIFICATION:
            backbone_name, x, result = self._fit_kind(task, texts, labels, beat)
            metrics = result.metrics
            decision, compared_with = self._decide(task, result, x, backbone_name, texts, labels)
        else:
            backbone_name, x, transferability = self._embed_and_score(task, texts, labels, beat)
            result = fit_head(
                task.head, x, labels, raw=texts, modality=task.modality, folds=self.settings.cv_folds, seed=self.settings.seed
            )
            beat.update(0.9)
            metrics = {**result.metrics, "transferability": transferability}
            decision, compared_with = self._decide(task, result, x, backbone_name, texts, labels)
        backbone = self.batchers(backbone_name).backbone
        faults.point("training")
        beat.update(0.95)
        provenance = {"backbone": backbone.name, "backbone_revision": backbone.revision, "runtime": backbone.runtime, "dim": backbone.dim}
        blob = heads.to_bytes(result.head, metrics=metrics, **provenance)
        return self.store.complete_job(
            job.id,
            self.worker_id,
            NewVersion(
                head=result.metrics["head"], backbone=backbone.name, backbone_revision=backbone.revision,
                runtime=backbone.runtime, labels=result.head.labels, metrics={**metrics, "promotion": decision.as_dict()},
                n_examples=len(examples), weights=blob,
            ),
            promote=decision.promote,
            compared_with=compared_with,
        )
