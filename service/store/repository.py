"""The store: every read and write Graft makes, each scoped by tenant where a tenant asks.

Methods return detached ORM objects (``expire_on_commit=False``) or plain values. Multi-row
changes happen in one transaction, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker, undefer

from .. import faults
from . import db, migrate
from .models import ApiKey, Example, Feedback, Job, ShadowPrediction, Task, Tenant, Version, utcnow

KEY_PREFIX = "gft_"


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class QueueFull(Exception):
    """The tenant has as many training jobs queued as it may (answered 429)."""

    retry_after_s = 30.0


class KeyLimit(Exception):
    """A tenant has as many active API keys as it may."""


def new_id(prefix: str) -> str:
    """An unguessable id (128 random bits)."""
    return f"{prefix}_{secrets.token_urlsafe(16)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class NewVersion:
    """What a finished training job hands to :meth:`Store.complete_job`."""

    head: str
    backbone: str
    backbone_revision: str
    runtime: str
    labels: list[str]
    metrics: dict
    n_examples: int
    weights: bytes


@dataclass(frozen=True)
class NewFeedback:
    """One true label to store (labels encoded as the store keeps them: ``TaskKind.encode``)."""

    version: int
    predicted: str | None
    label: str
    ood: bool | None = None
    prediction_id: str | None = None
    input: str | None = None


@dataclass(frozen=True)
class FeedbackRow:
    version: int
    predicted: str | None
    label: str
    ood: bool | None


@dataclass(frozen=True)
class PendingFeedback:
    """A labelled feedback input not yet considered for the task's examples."""

    id: int
    input: str
    label: str  # stored-label encoded


@dataclass(frozen=True)
class NewShadow:
    """What a shadow version answered for one predict input, beside the active version's answer."""

    tenant_id: str
    task_id: str
    version: int
    active_version: int
    prediction_id: str
    answer: str | None
    active_answer: str | None


@dataclass(frozen=True)
class ShadowCounts:
    predictions: int
    agreements: int  # the shadow's answer equals the active version's (stored-label encoded)


@dataclass(frozen=True)
class ShadowFeedback:
    """A feedback row on a prediction that a shadow version also answered."""

    version: int  # the shadow version
    answer: str | None
    active_answer: str | None  # what the version that answered said (the feedback row's ``predicted``)
    label: str


# turn a task's pending feedback into stored examples: (examples, the feedback ids they came from and those
# found unfit); both sets are marked promoted
Convert = Callable[[Task, Sequence[PendingFeedback]], tuple[list[tuple[str, str]], list[int]]]


@dataclass(frozen=True)
class StoreTotals:
    tenants: int
    trained_tasks: int
    untrained_tasks: int
    jobs: dict[str, int]


class Reads:
    """The reads quota checks make (:func:`service.application.quotas.check_new_examples`), answered inside a
    writer's transaction: what they see cannot change before the writer commits."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def usage(self, tenant_id: str) -> tuple[int, int]:
        return Store._usage(self.session, tenant_id)

    def example_count(self, task_id: str) -> int:
        return Store._example_count(self.session, task_id)

    def label_counts(self, task_id: str) -> dict[str, int]:
        return Store._label_counts(self.session, task_id)


Guard = Callable[[Reads], None]  # a quota check, run under the tenant's lock before anything is written


class Store:
    def __init__(self, url: str, *, max_queued_jobs_per_tenant: int = 0) -> None:
        self.max_queued_jobs_per_tenant = max_queued_jobs_per_tenant  # 0 = no limit
        self.engine: Engine = db.create(url)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(**db.WRITE), expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (safe while other replicas do the same)."""
        migrate.upgrade(self.engine)

    def create_schema(self) -> None:
        """The schema the models describe, made by the migrations (an alias of :meth:`migrate`)."""
        self.migrate()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session, session.begin():
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        with self._write() as session, session.begin():
            yield session

    # -- tenants ---------------------------------------------------------------------------

    def create_tenant(self, name: str) -> tuple[Tenant, str]:
        """Create a tenant and its first API key. The key is returned once; only its hash is kept."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        tenant = Tenant(id=new_id("ten"), name=name)
        try:
            with self.writing() as s:
                s.add(tenant)
                s.flush()
                # role: owner, the column's server default (a plain insert, so a schema before 0004 takes it too)
                s.execute(
                    insert(ApiKey).values(id=new_id("key"), tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:8])
                )
        except IntegrityError:
            raise Conflict(f"a tenant named {name!r} already exists") from None
        return tenant, key

    def tenant_for_key(self, key: str) -> Tenant | None:
        found = self.key_for(key)
        return found[0] if found else None

    def key_for(self, key: str) -> tuple[Tenant, ApiKey] | None:
        """The tenant and key row of an active key of an enabled tenant."""
        digest = hash_key(key)
        with self.reading() as s:
            row = s.execute(
                select(Tenant, ApiKey)
                .join(ApiKey, ApiKey.tenant_id == Tenant.id)
                .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None), Tenant.disabled.is_(False))
            ).first()
        if row is None or not secrets.compare_digest(row[1].key_hash, digest):
            return None
        return row[0], row[1]

    def list_tenants(self) -> list[Tenant]:
        with self.reading() as s:
            return list(s.scalars(select(Tenant).order_by(Tenant.created_at)))

    def get_tenant(self, tenant_id: str) -> Tenant:
        with self.reading() as s:
            tenant = s.get(Tenant, tenant_id)
        if tenant is None:
            raise NotFound(f"no tenant {tenant_id!r}")
        return tenant

    def set_tenant_disabled(self, tenant_id: str, disabled: bool) -> Tenant:
        """Disable (or re-enable) a tenant: its keys stop (or start again) authenticating."""
        with self.writing() as s:
            tenant = s.get(Tenant, tenant_id)
            if tenant is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            tenant.disabled = disabled
        return tenant

    def issue_key(self, tenant_id: str, role: str = "owner", max_active: int | None = None) -> tuple[ApiKey, str]:
        """A new API key for the tenant (rotation: issue, switch clients, revoke the old one). With
        ``max_active``, refuses (:class:`Conflict`) when the tenant already has that many active keys."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.writing() as s:
            tenant = s.get(Tenant, tenant_id, with_for_update=max_active is not None)
            if tenant is None:
                raise NotFound(f"no tenant {tenant_id!r}")
            if max_active is not None:
                active = (
                    s.scalar(
                        select(func.count())
                        .select_from(ApiKey)
                        .where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
                    )
                    or 0
                )
                if active >= max_active:
                    raise KeyLimit(
                        f"this tenant has {active} active keys; the limit is {max_active}. Revoke one first."
                    )
            row = ApiKey(id=new_id("key"), tenant_id=tenant_id, key_hash=hash_key(key), prefix=key[:8], role=role)
            s.add(row)
        return row, key

    def list_keys(self, tenant_id: str) -> list[ApiKey]:
        with self.reading() as s:
            return list(
                s.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(ApiKey.created_at, ApiKey.id))
            )

    def revoke_key(self, tenant_id: str, key_id: str) -> ApiKey:
        """Revoke one of the tenant's keys (idempotent); it stops authenticating at once."""
        with self.writing() as s:
            row = s.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id))
            if row is None:
                raise NotFound(f"no key {key_id!r}")
            row.revoked_at = row.revoked_at or utcnow()
        return row

    def usage(self, tenant_id: str) -> tuple[int, int]:
        """The tenant's task count and stored bytes (example inputs and labels, head weights)."""
        with self.reading() as s:
            return self._usage(s, tenant_id)

    @staticmethod
    def _usage(s: Session, tenant_id: str) -> tuple[int, int]:
        tasks = s.scalar(select(func.count()).select_from(Task).where(Task.tenant_id == tenant_id)) or 0
        examples = (
            s.scalar(
                select(func.coalesce(func.sum(func.length(Example.input) + func.length(Example.label)), 0))
                .join(Task, Task.id == Example.task_id)
                .where(Task.tenant_id == tenant_id)
            )
            or 0
        )
        weights = (
            s.scalar(
                select(func.coalesce(func.sum(func.length(Version.weights)), 0))
                .join(Task, Task.id == Version.task_id)
                .where(Task.tenant_id == tenant_id)
            )
            or 0
        )
        return int(tasks), int(examples) + int(weights)

    def example_count(self, task_id: str) -> int:
        with self.reading() as s:
            return self._example_count(s, task_id)

    @staticmethod
    def _example_count(s: Session, task_id: str) -> int:
        return s.scalar(select(func.count()).select_from(Example).where(Example.task_id == task_id)) or 0

    @staticmethod
    def _lock_tenant(s: Session, tenant_id: str) -> None:
        """Serialise this tenant's quota-checked writes: a row lock on PostgreSQL (held to commit); on
        SQLite every writer already holds the database's write lock (``BEGIN IMMEDIATE``)."""
        s.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())

    # -- tasks -----------------------------------------------------------------------------

    def create_task(
        self,
        tenant_id: str,
        name: str,
        *,
        modality: str,
        backbone: str,
        head: str,
        examples: Sequence[tuple[str, str]],
        kind: str = "classification",
        guard: Guard | None = None,
    ) -> tuple[Task, Job]:
        """Create a task, store its examples and queue its first training job, atomically. ``guard``
        (the quota check) runs in the same transaction, under the tenant's lock, so concurrent
        requests of one tenant cannot together overshoot a quota."""
        task = Task(
            id=new_id("task"),
            tenant_id=tenant_id,
            name=name,
            modality=modality,
            kind=kind,
            backbone=backbone,
            head=head,
        )
        try:
            with self.writing() as s:
                if guard is not None:
                    self._lock_tenant(s, tenant_id)
                    guard(Reads(s))
                s.add(task)
                s.flush()
                job = self._add_examples_and_queue(s, task, examples)
        except IntegrityError:
            raise Conflict(f"a task named {name!r} already exists") from None
        return task, job

    def add_examples(
        self, tenant_id: str, name: str, examples: Sequence[tuple[str, str]], guard: Guard | None = None
    ) -> tuple[Task, Job]:
        """Store more examples and queue a training job, atomically; ``guard`` as in :meth:`create_task`."""
        with self.writing() as s:
            if guard is not None:
                self._lock_tenant(s, tenant_id)
                guard(Reads(s))
            task = self._task(s, tenant_id, name)
            task.updated_at = utcnow()
            job = self._add_examples_and_queue(s, task, examples)
        return task, job

    def promote_feedback(
        self,
        tenant_id: str,
        name: str,
        convert: Convert,
        guard_for: Callable[[Task, list[tuple[str, str]]], Guard],
        *,
        at_least: int = 1,
        limit: int,
    ) -> tuple[Task, Job | None, int]:
        """Copy the task's pending labelled feedback inputs (at most ``limit``, oldest first) into its examples
        with ``source = "feedback"`` and queue a training job, in one transaction — when at least ``at_least``
        are pending (the retrain policy's threshold), else nothing. ``convert`` validates them (those it finds
        unfit are marked promoted too, so they are not counted again); ``guard_for`` gives the quota check.
        Returns the task, the job queued (None: nothing to add) and how many examples were added."""
        with self.writing() as s:
            self._lock_tenant(s, tenant_id)  # serialises concurrent promotions of the tenant's feedback
            task = self._task(s, tenant_id, name)
            rows = s.execute(
                select(Feedback.id, Feedback.input, Feedback.label)
                .where(Feedback.task_id == task.id, Feedback.promoted.is_(False), Feedback.input.is_not(None))
                .order_by(Feedback.id)
                .limit(limit)
            ).all()
            if not rows or len(rows) < at_least:
                return task, None, 0
            pending = [PendingFeedback(i, str(text), label) for i, text, label in rows]
            examples, used = convert(task, pending)
            job = None
            if examples:
                guard_for(task, examples)(Reads(s))
                task.updated_at = utcnow()
                job = self._add_examples_and_queue(s, task, examples, source="feedback")
            s.execute(update(Feedback).where(Feedback.id.in_(used)).values(promoted=True))
        return task, job, len(examples)

    def pending_feedback(self, tenant_id: str, task_id: str) -> int:
        """How many labelled feedback inputs of the task are not yet considered for its examples."""
        with self.reading() as s:
            return (
                s.scalar(
                    select(func.count())
                    .select_from(Feedback)
                    .where(
                        Feedback.tenant_id == tenant_id,
                        Feedback.task_id == task_id,
                        Feedback.promoted.is_(False),
                        Feedback.input.is_not(None),
                    )
                )
                or 0
            )

    def examples_per_source(self, task_id: str) -> dict[str, int]:
        with self.reading() as s:
            rows = s.execute(
                select(Example.source, func.count()).where(Example.task_id == task_id).group_by(Example.source)
            )
            return {source: n for source, n in rows}

    def set_retrain_policy(self, tenant_id: str, name: str, after_feedback: int | None) -> Task:
        with self.writing() as s:
            task = self._task(s, tenant_id, name)
            task.retrain_after_feedback = after_feedback
            task.updated_at = utcnow()
        return task

    def set_shadow(self, tenant_id: str, name: str, number: int, share: float) -> Task:
        """Serve version ``number`` in shadow on ``share`` of the predict requests (replacing any other shadow)."""
        with self.writing() as s:
            task = self._task(s, tenant_id, name)
            version = s.scalar(select(Version).where(Version.task_id == task.id, Version.number == number))
            if version is None:
                raise NotFound(f"task {name!r} has no version {number}")
            if version.error:
                raise Conflict(
                    f"version {number} of task {name!r} failed to load ({version.error[:200]}); it cannot "
                    "serve, not even in shadow"
                )
            if task.active_version == number:
                raise Conflict(
                    f"version {number} is task {name!r}'s active version; shadow a candidate (another version)"
                )
            task.shadow_version, task.shadow_share = number, share
            task.updated_at = utcnow()
        return task

    def clear_shadow(self, tenant_id: str, name: str) -> Task:
        with self.writing() as s:
            task = self._task(s, tenant_id, name)
            task.shadow_version, task.shadow_share = None, None
            task.updated_at = utcnow()
        return task

    def _add_examples_and_queue(
        self, s: Session, task: Task, examples: Sequence[tuple[str, str]], source: str = "user"
    ) -> Job:
        """Store the examples and queue a training job, which replaces the task's still-queued job (its
        examples are a subset of the new one's): a task has at most one job waiting, never run twice."""
        cap = self.max_queued_jobs_per_tenant
        if cap > 0:
            waiting = (
                s.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.tenant_id == task.tenant_id, Job.status == "queued", Job.task_id != task.id)
                )
                or 0
            )
            if waiting >= cap:
                raise QueueFull(
                    f"{waiting} training jobs of this tenant are already queued (the limit is {cap}); nothing was "
                    "stored: wait for some to finish (GET /v1/jobs/{job_id}) and send this again"
                )
        s.add_all(Example(task_id=task.id, input=text, label=label, source=source) for text, label in examples)
        job = Job(id=new_id("job"), tenant_id=task.tenant_id, task_id=task.id, task_name=task.name, status="queued")
        s.execute(
            update(Job)
            .where(Job.task_id == task.id, Job.status == "queued")
            .values(
                status="superseded",
                finished_at=utcnow(),
                superseded_by=job.id,
                error=(
                    f"replaced before it ran by job {job.id}, which trains task {task.name!r} "
                    "on these examples and newer ones"
                ),
            )
        )
        s.add(job)
        s.flush()
        faults.point("examples_commit")
        return job

    @staticmethod
    def _task(s: Session, tenant_id: str, name: str) -> Task:
        task = s.scalar(select(Task).where(Task.tenant_id == tenant_id, Task.name == name))
        if task is None:
            raise NotFound(f"no task named {name!r}")
        return task

    def get_task(self, tenant_id: str, name: str) -> Task:
        with self.reading() as s:
            return self._task(s, tenant_id, name)

    def get_task_by_id(self, task_id: str) -> Task:
        with self.reading() as s:
            task = s.get(Task, task_id)
        if task is None:
            raise NotFound("task deleted")
        return task

    def list_tasks(self, tenant_id: str) -> list[Task]:
        with self.reading() as s:
            return list(s.scalars(select(Task).where(Task.tenant_id == tenant_id).order_by(Task.name)))

    def delete_task(self, tenant_id: str, name: str) -> None:
        """Delete a task with its examples and versions (weights). Its unfinished jobs fail."""
        with self.writing() as s:
            task = self._task(s, tenant_id, name)
            s.execute(
                update(Job)
                .where(Job.task_id == task.id, Job.status.in_(("queued", "running")))
                .values(status="failed", error="the task was deleted", finished_at=utcnow())
            )
            s.execute(update(Job).where(Job.task_id == task.id).values(task_id=None))
            s.execute(delete(Example).where(Example.task_id == task.id))
            s.execute(delete(Version).where(Version.task_id == task.id))
            s.execute(delete(Feedback).where(Feedback.task_id == task.id))
            s.execute(delete(ShadowPrediction).where(ShadowPrediction.task_id == task.id))
            s.delete(task)

    def label_counts(self, task_id: str) -> dict[str, int]:
        with self.reading() as s:
            return self._label_counts(s, task_id)

    @staticmethod
    def _label_counts(s: Session, task_id: str) -> dict[str, int]:
        rows = s.execute(select(Example.label, func.count()).where(Example.task_id == task_id).group_by(Example.label))
        return {label: n for label, n in rows}

    def examples(self, task_id: str) -> list[tuple[str, str]]:
        with self.reading() as s:
            rows = s.execute(
                select(Example.input, Example.label).where(Example.task_id == task_id).order_by(Example.id)
            )
            return [(text, label) for text, label in rows]

    # -- feedback --------------------------------------------------------------------------

    def add_feedback(
        self, tenant_id: str, task_id: str, rows: Sequence[NewFeedback], *, retention_days: float, max_rows: int
    ) -> int:
        """Store ``rows`` for the task, then drop its feedback older than ``retention_days`` and the oldest
        beyond ``max_rows``. Returns the task's feedback rows kept."""
        now = utcnow()
        with self.writing() as s:
            self._task_by_id(s, tenant_id, task_id)  # the task is the tenant's (and still exists)
            s.execute(
                insert(Feedback),
                [
                    {
                        "tenant_id": tenant_id,
                        "task_id": task_id,
                        "version": r.version,
                        "prediction_id": r.prediction_id,
                        "predicted": r.predicted,
                        "label": r.label,
                        "ood": r.ood,
                        "input": r.input,
                        "created_at": now,
                    }
                    for r in rows
                ],
            )
            return self._trim_feedback(s, task_id, now - timedelta(days=retention_days), max_rows)

    @staticmethod
    def _trim_feedback(s: Session, task_id: str, oldest: datetime, max_rows: int) -> int:
        s.execute(delete(Feedback).where(Feedback.task_id == task_id, Feedback.created_at < oldest))
        kept = s.scalar(select(func.count()).select_from(Feedback).where(Feedback.task_id == task_id)) or 0
        if kept > max_rows:  # the newest max_rows stay
            cut = s.scalar(
                select(Feedback.id).where(Feedback.task_id == task_id).order_by(Feedback.id.desc()).offset(max_rows)
            )
            s.execute(delete(Feedback).where(Feedback.task_id == task_id, Feedback.id <= cut))
            kept = max_rows
        return int(kept)

    def feedback(self, tenant_id: str, task_id: str, since: datetime) -> list[FeedbackRow]:
        """The task's feedback since ``since``, oldest first: (version, predicted, label, ood)."""
        with self.reading() as s:
            rows = s.execute(
                select(Feedback.version, Feedback.predicted, Feedback.label, Feedback.ood)
                .where(Feedback.tenant_id == tenant_id, Feedback.task_id == task_id, Feedback.created_at >= since)
                .order_by(Feedback.id)
            )
            return [FeedbackRow(v, p, label, ood) for v, p, label, ood in rows]

    # -- shadow predictions ----------------------------------------------------------------

    def add_shadow_records(self, rows: Sequence[NewShadow], *, retention_days: float, max_rows: int) -> None:
        """Store shadow answers (of any tasks), then drop each task's records older than ``retention_days`` and
        the oldest beyond ``max_rows``. Records of tasks deleted meanwhile are dropped."""
        if not rows:
            return
        now = utcnow()
        with self.writing() as s:
            tasks = {r.task_id for r in rows}
            live = set(
                s.scalars(select(Task.id).where(Task.id.in_(tasks), Task.tenant_id.in_({r.tenant_id for r in rows})))
            )
            kept = [r for r in rows if r.task_id in live]
            if kept:
                s.execute(
                    insert(ShadowPrediction),
                    [
                        {
                            "tenant_id": r.tenant_id,
                            "task_id": r.task_id,
                            "version": r.version,
                            "active_version": r.active_version,
                            "prediction_id": r.prediction_id,
                            "answer": r.answer,
                            "active_answer": r.active_answer,
                            "created_at": now,
                        }
                        for r in kept
                    ],
                )
            oldest = now - timedelta(days=retention_days)
            for task_id in live:
                s.execute(
                    delete(ShadowPrediction).where(
                        ShadowPrediction.task_id == task_id, ShadowPrediction.created_at < oldest
                    )
                )
                cut = s.scalar(
                    select(ShadowPrediction.id)
                    .where(ShadowPrediction.task_id == task_id)
                    .order_by(ShadowPrediction.id.desc())
                    .offset(max_rows)
                )
                if cut is not None:  # the newest max_rows stay
                    s.execute(
                        delete(ShadowPrediction).where(ShadowPrediction.task_id == task_id, ShadowPrediction.id <= cut)
                    )

    def shadow_counts(self, tenant_id: str, task_id: str, since: datetime) -> dict[int, ShadowCounts]:
        """Per shadow version: predictions it answered in shadow since ``since``, and how many agreed."""
        agree = case(
            (
                and_(
                    ShadowPrediction.answer.is_not(None),
                    ShadowPrediction.answer == ShadowPrediction.active_answer,
                ),
                1,
            ),
            else_=0,
        )
        with self.reading() as s:
            rows = s.execute(
                select(ShadowPrediction.version, func.count(), func.coalesce(func.sum(agree), 0))
                .where(
                    ShadowPrediction.tenant_id == tenant_id,
                    ShadowPrediction.task_id == task_id,
                    ShadowPrediction.created_at >= since,
                )
                .group_by(ShadowPrediction.version)
            )
            return {v: ShadowCounts(int(n), int(a)) for v, n, a in rows}

    def shadow_feedback(self, tenant_id: str, task_id: str, since: datetime) -> list[ShadowFeedback]:
        """Feedback rows (since ``since``) on predictions a shadow version also answered: the shadow's answer,
        the answering version's and the true label, matched by the prediction id."""
        with self.reading() as s:
            rows = s.execute(
                select(ShadowPrediction.version, ShadowPrediction.answer, Feedback.predicted, Feedback.label)
                .join(
                    Feedback,
                    and_(
                        Feedback.task_id == ShadowPrediction.task_id,
                        Feedback.prediction_id == ShadowPrediction.prediction_id,
                    ),
                )
                .where(
                    ShadowPrediction.tenant_id == tenant_id,
                    ShadowPrediction.task_id == task_id,
                    Feedback.created_at >= since,
                )
                .order_by(Feedback.id)
            )
            return [ShadowFeedback(v, a, p, label) for v, a, p, label in rows]

    @staticmethod
    def _task_by_id(s: Session, tenant_id: str, task_id: str) -> Task:
        task = s.get(Task, task_id)
        if task is None or task.tenant_id != tenant_id:
            raise NotFound("the task was deleted")
        return task

    # -- versions --------------------------------------------------------------------------

    def versions(self, task_id: str) -> list[Version]:
        with self.reading() as s:
            return list(s.scalars(select(Version).where(Version.task_id == task_id).order_by(Version.number)))

    def version(self, task_id: str, number: int, *, with_weights: bool = False) -> Version:
        query = select(Version).where(Version.task_id == task_id, Version.number == number)
        if with_weights:
            query = query.options(undefer(Version.weights))
        with self.reading() as s:
            version = s.scalar(query)
        if version is None:
            raise NotFound(f"no version {number}")
        return version

    def mark_version_failed(self, task_id: str, number: int, error: str) -> None:
        """Record that a version's weights could not be loaded (it cannot serve until replaced)."""
        with self.writing() as s:
            s.execute(
                update(Version).where(Version.task_id == task_id, Version.number == number).values(error=error[:2000])
            )

    # -- jobs ------------------------------------------------------------------------------

    def get_job(self, tenant_id: str, job_id: str) -> Job:
        with self.reading() as s:
            job = s.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id))
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def _now(self, s: Session) -> datetime:
        """The time leases are measured in. On PostgreSQL it is the database's clock, so replicas
        whose clocks disagree still agree on whose lease expired; SQLite lives on one host."""
        if self.engine.dialect.name == "postgresql":
            now = s.scalar(select(func.clock_timestamp()))
            assert now is not None  # clock_timestamp() is never NULL
            return cast(datetime, now)
        return utcnow()

    def claim_job(
        self, worker_id: str, *, lease_s: float, max_attempts: int, max_running_per_tenant: int = 0
    ) -> Job | None:
        """Claim the next runnable job: queued, or running with an expired lease (its worker died or
        the job stopped making progress).

        Fair: tenants take turns — the tenant whose last claim is oldest (or who never had one) goes
        first — and within a tenant the oldest job goes first. Disabled tenants' jobs are not claimed.
        The claim locks the row it takes inside one write transaction — ``FOR UPDATE OF jobs SKIP
        LOCKED`` on PostgreSQL, so concurrent claimers take different jobs without waiting; SQLite's
        single writer serialises them — so two workers never hold the same job. A job whose lease
        expired ``max_attempts`` times (it stopped its worker each time: out of memory, a crash, a
        hang) is a poison job: it is failed with that reason instead of being run again, and the
        search goes on. With ``max_running_per_tenant``, a tenant already running that many jobs (with
        live leases) gets none: its other jobs stay queued until one finishes.
        """
        with self.writing() as s:
            now = self._now(s)
            stale = now - timedelta(seconds=lease_s)
            expired = (Job.status == "running") & (Job.heartbeat_at < stale)
            runnable = or_(Job.status == "queued", expired) & Tenant.disabled.is_(False)
            if max_running_per_tenant > 0:
                live = aliased(Job)
                busy = (
                    select(live.tenant_id)
                    .where(live.status == "running", live.heartbeat_at >= stale)
                    .group_by(live.tenant_id)
                    .having(func.count() >= max_running_per_tenant)
                )
                runnable = runnable & Job.tenant_id.not_in(busy)
            fairest = (
                select(Job)
                .join(Tenant, Tenant.id == Job.tenant_id)
                .where(runnable)
                .order_by(Tenant.last_claimed_at.asc().nulls_first(), Job.created_at, Job.id)
                .limit(1)
                .with_for_update(of=Job, skip_locked=True)
            )
            while (job := s.scalar(fairest)) is not None:
                if job.attempts < max_attempts:
                    job.status, job.worker_id, job.heartbeat_at = "running", worker_id, now
                    job.attempts += 1
                    job.started_at = job.started_at or now
                    job.progress = 0.0
                    s.execute(update(Tenant).where(Tenant.id == job.tenant_id).values(last_claimed_at=now))
                    return job
                job.status, job.finished_at = "failed", now
                job.error = (
                    f"the job stopped its worker {job.attempts} times (e.g. out of memory, or it hung without "
                    "progress); "
                    f"it will not be retried: its last worker stopped renewing the lease at {job.progress:.0%} "
                    "progress. "
                    "Check the examples (very large or malformed inputs) before training again"
                )
                s.flush()
        return None

    def heartbeat(self, job_id: str, worker_id: str, progress: float) -> bool:
        """Record progress and renew the lease. False when the job is no longer this worker's."""
        with self.writing() as s:
            result = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
                .values(progress=progress, heartbeat_at=self._now(s))
            )
            return cast(CursorResult[Any], result).rowcount == 1

    def complete_job(
        self,
        job_id: str,
        worker_id: str,
        new: NewVersion,
        *,
        promote: bool = True,
        compared_with: int | None = None,
    ) -> int | None:
        """Store a new version, finish the job and — when ``promote`` — make the version active, all in
        one transaction.

        The job and task rows are locked first, so completions of one task are serialised and a job
        completes once, by its owner. The version stays a candidate (stored, inactive) when
        ``promote`` is false; when ``compared_with`` — the active version the promotion decision was
        made against — is no longer active (a promote or rollback while training: the decision is
        stale); or when a job queued after this one already succeeded (two replicas trained the same
        task at once and the newer data finished first: the active version never moves back to older
        examples). The outcome is recorded in ``metrics["promotion"]``. Returns the version number, or
        None when the job was no longer ours (reclaimed after a lost lease, or its task deleted) so
        nothing was written.
        """
        with self.writing() as s:
            job = s.scalar(select(Job).where(Job.id == job_id).with_for_update())
            if job is None or job.status != "running" or job.worker_id != worker_id or job.task_id is None:
                return None
            task = s.scalar(select(Task).where(Task.id == job.task_id).with_for_update())
            if task is None:
                return None
            number = (s.scalar(select(func.max(Version.number)).where(Version.task_id == task.id)) or 0) + 1
            promotion = dict(new.metrics.get("promotion") or {"reason": "promoted"})
            if promote and compared_with is not None and task.active_version != compared_with:
                promote = False
                promotion["reason"] = (
                    f"kept as a candidate: the active version changed from {compared_with} to {task.active_version} "
                    "while this version trained, so the comparison no longer applies; promote it explicitly if wanted"
                )
            superseded = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.task_id == task.id, Job.status == "succeeded", Job.created_at > job.created_at)
            )
            if promote and superseded:
                promote = False
                promotion["reason"] = (
                    "kept as a candidate: a training job queued after this one (with newer examples) already "
                    "finished, so this version would move the task back to older data"
                )
            promotion.update(
                promoted=promote, activated=promote, previous_active=task.active_version if promote else None
            )
            s.add(
                Version(
                    id=new_id("ver"),
                    task_id=task.id,
                    number=number,
                    head=new.head,
                    backbone=new.backbone,
                    backbone_revision=new.backbone_revision,
                    runtime=new.runtime,
                    labels=new.labels,
                    metrics={**new.metrics, "promotion": promotion},
                    n_examples=new.n_examples,
                    job_id=job.id,
                    weights=new.weights,
                )
            )
            now = utcnow()
            if promote:
                task.active_version = number
            task.updated_at = now
            job.status, job.progress, job.version, job.finished_at = "succeeded", 1.0, number, now
            s.flush()
            faults.point("version_commit")
        return number

    def promote(self, tenant_id: str, name: str, number: int) -> Task:
        """Make version ``number`` active by hand; remember which one it replaces (for rollback)."""
        with self.writing() as s:
            task = self._task(s, tenant_id, name)
            version = s.scalar(select(Version).where(Version.task_id == task.id, Version.number == number))
            if version is None:
                raise NotFound(f"task {name!r} has no version {number}")
            if version.error:
                raise Conflict(
                    f"version {number} of task {name!r} failed to load ({version.error[:200]}); it cannot serve"
                )
            if task.active_version != number:
                version.metrics = {
                    **version.metrics,
                    "promotion": {
                        **(version.metrics.get("promotion") or {}),
                        "activated": True,
                        "previous_active": task.active_version,
                        "reason": "promoted by hand",
                    },
                }
                task.active_version = number
                if task.shadow_version == number:  # the shadow is promoted: it serves for real now
                    task.shadow_version, task.shadow_share = None, None
                task.updated_at = utcnow()
                s.flush()
                faults.point("version_switch")
        return task

    def rollback(self, tenant_id: str, name: str) -> Task:
        """Re-activate the version that was active before the current one."""
        with self.writing() as s:
            task = self._task(s, tenant_id, name)
            if task.active_version is None:
                raise Conflict(f"task {name!r} has no active version to roll back from")
            current = s.scalar(select(Version).where(Version.task_id == task.id, Version.number == task.active_version))
            previous = ((current.metrics if current else {}).get("promotion") or {}).get("previous_active")
            if previous is None:
                raise Conflict(
                    f"version {task.active_version} of task {name!r} replaced no earlier version; nothing to roll "
                    "back to"
                )
            target = s.scalar(select(Version).where(Version.task_id == task.id, Version.number == previous))
            if target is None:
                raise Conflict(f"version {previous} of task {name!r}, the one to roll back to, no longer exists")
            if target.error:  # marked when its weights failed to load: activating it would fail every predict
                raise Conflict(
                    f"version {previous} of task {name!r} failed to load ({target.error[:200]}); it cannot serve, so "
                    f"rollback is refused. Promote a working version instead (GET /v1/tasks/{name}/versions lists "
                    "them)."
                )
            task.active_version = previous
            task.updated_at = utcnow()
            s.flush()
            faults.point("version_switch")
        return task

    def fail_job(self, job_id: str, worker_id: str, error: str) -> None:
        with self.writing() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
                .values(status="failed", error=error, finished_at=utcnow())
            )

    def requeue_job(self, job_id: str, worker_id: str) -> None:
        """Give a job back (shutdown before it could finish); another worker picks it up."""
        with self.writing() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")
                .values(status="queued", worker_id=None, progress=0.0, attempts=Job.attempts - 1)
            )

    def job_counts(self) -> Counter[str]:
        with self.reading() as s:
            return Counter(
                {status: n for status, n in s.execute(select(Job.status, func.count()).group_by(Job.status))}
            )

    def totals(self) -> StoreTotals:
        """Store-wide counts for the metrics gauges (three cheap aggregate queries)."""
        with self.reading() as s:
            tenants = s.scalar(select(func.count()).select_from(Tenant)) or 0
            trained = dict(
                s.execute(
                    select(Task.active_version.is_not(None), func.count()).group_by(Task.active_version.is_not(None))
                ).all()
            )
            jobs = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        return StoreTotals(
            tenants=tenants, trained_tasks=trained.get(True, 0), untrained_tasks=trained.get(False, 0), jobs=jobs
        )
