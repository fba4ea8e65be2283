"""SQLAlchemy models: tenants, API keys, tasks, examples, versions, jobs.

Portable between SQLite (default) and PostgreSQL: no dialect-specific types.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, deferred, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # when a worker last claimed one of its jobs: claims go round-robin, the longest-waiting tenant first
    last_claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16), server_default="owner")  # owner | write | predict
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_task_tenant_name"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16))
    # classification | multilabel | regression; labels of the latter two are stored encoded (service/labels.py)
    kind: Mapped[str] = mapped_column(String(16), default="classification", server_default="classification")
    backbone: Mapped[str] = mapped_column(String(64))
    head: Mapped[str] = mapped_column(String(32))
    active_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # retrain policy: after this many new labelled feedback inputs, copy them into the examples and queue a
    # training job (None: GRAFT_RETRAIN_AFTER_FEEDBACK; 0: never). docs/monitoring.md
    retrain_after_feedback: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # a candidate version answering in shadow on a share of predict requests (recorded, not returned)
    shadow_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shadow_share: Mapped[float | None] = mapped_column(Float, nullable=True)


class Example(Base):
    __tablename__ = "examples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    input: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text)  # a class name, or a kind's encoded structure (adapters/kinds/)
    # "user" (sent as an example or dataset) or "feedback" (copied from feedback: docs/monitoring.md)
    source: Mapped[str] = mapped_column(String(16), default="user", server_default="user")


class Version(Base):
    """An immutable trained head. Weights are a safetensors blob, loaded only when asked for."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("task_id", "number", name="uq_version_task_number"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    head: Mapped[str] = mapped_column(String(32))
    backbone: Mapped[str] = mapped_column(String(64))
    backbone_revision: Mapped[str] = mapped_column(String(80))
    runtime: Mapped[str] = mapped_column(String(32))
    labels: Mapped[list] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON)
    n_examples: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # set when its weights failed to load
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    weights: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))


class Job(Base):
    """A training job. State lives here (not in memory) so any process can report or resume it.

    ``status``: queued → running → succeeded | failed, or queued → superseded (a newer job of the same
    task replaced it before it ran)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_created", "status", "created_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"), nullable=True, index=True)
    task_name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    superseded_by: Mapped[str | None] = mapped_column(String(40), nullable=True)  # the job that replaced this one
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Feedback(Base):
    """A true label sent for a prediction (``POST /v1/tasks/{name}/feedback``), with what the version that
    predicted answered. Kept ``GRAFT_FEEDBACK_RETENTION_DAYS`` and at most ``GRAFT_MAX_FEEDBACK_PER_TASK`` per
    task (the oldest go first); deleted with its task. docs/monitoring.md."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_task_created", "task_id", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)  # the version that predicted
    prediction_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the id's random part, if sent
    predicted: Mapped[str | None] = mapped_column(Text, nullable=True)  # its answer, stored-label encoded
    label: Mapped[str] = mapped_column(Text)  # the true label, stored-label encoded
    ood: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # whether the input was flagged, if scored
    input: Mapped[str | None] = mapped_column(Text, nullable=True)  # a text input, when the caller sent it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # whether it was considered for the task's examples: copied (promote, retrain policy) or found unfit
    promoted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class ShadowPrediction(Base):
    """What a shadow version answered for one predict input (not returned to the caller), beside what the
    active version answered. Kept like feedback (GRAFT_FEEDBACK_RETENTION_DAYS, at most
    GRAFT_MAX_SHADOW_RECORDS_PER_TASK per task), deleted with the task; no inputs are stored."""

    __tablename__ = "shadow_predictions"
    __table_args__ = (
        Index("ix_shadow_task_created", "task_id", "created_at"),
        Index("ix_shadow_task_prediction", "task_id", "prediction_id"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)  # the shadow version
    active_version: Mapped[int] = mapped_column(Integer)  # the version whose answer was returned
    prediction_id: Mapped[str] = mapped_column(String(32))  # the returned prediction id's random part
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)  # the shadow's answer, stored-label encoded
    active_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
