"""Per-tenant quotas: tasks, examples per task, labels per task, stored bytes (the predict rate is
:mod:`service.ratelimit`'s token bucket).

Checks run before anything is written and raise :class:`QuotaExceeded` (or a subclass), whose message
names the limit and whose ``code`` says which kind of refusal it is; the status the API answers with
is service/api/errors.py's business. Limits come from :mod:`service.config`; docs/security.md has the
table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from adapters import kinds
from adapters.kinds import unstorable

from ..config import Settings
from ..store.models import Task
from ..store.repository import Guard, Reads, Store


class QuotaExceeded(Exception):
    """A tenant's limit (tasks, examples, stored bytes) would be passed."""

    code: ClassVar[str] = "quota_exceeded"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s  # when trying again can succeed, if known


class InvalidForLimits(QuotaExceeded):
    """What the request holds breaks a per-item limit (a label too long, too many labels) or cannot be stored."""

    code: ClassVar[str] = "validation_error"


def check_labels(settings: Settings, labels: Sequence[str], field: str = "label") -> None:
    """Each label's length (:class:`InvalidForLimits` past ``max_label_chars``)."""
    limit = settings.max_label_chars
    for label in labels:
        if len(label) > limit:
            raise InvalidForLimits(f"a {field} has {len(label)} characters; the limit is {limit}")


def check_new_examples(
    store: Store | Reads,
    settings: Settings,
    tenant_id: str,
    task: Task | None,
    examples: Sequence[tuple[str, str]],
    kind: str = kinds.DEFAULT,
) -> None:
    """May the tenant store ``examples`` (labels as stored, see adapters/kinds/) in ``task`` (None: a
    task it is creating)? Checks the task count, examples per task, distinct labels per task and the
    tenant's stored bytes."""
    new_labels = kinds.kind_of(kind).names([label for _, label in examples])
    check_labels(settings, new_labels)
    for i, (text, label) in enumerate(examples):  # files (CSV, JSON Lines) reach here unvalidated
        problem = unstorable(text) or unstorable(label)
        if problem:
            raise InvalidForLimits(f"example {i}: inputs and labels {problem}")
    tasks, stored = store.usage(tenant_id)
    if task is None and tasks >= settings.max_tasks_per_tenant:
        raise QuotaExceeded(
            f"this tenant has {tasks} tasks; the limit is {settings.max_tasks_per_tenant}. Delete one first."
        )
    have = store.example_count(task.id) if task else 0
    if have + len(examples) > settings.max_examples_per_task:
        raise QuotaExceeded(
            f"the task would hold {have + len(examples)} examples; the limit is {settings.max_examples_per_task} "
            "per task",
        )
    labels = set(kinds.kind_of(kind).per_label(store.label_counts(task.id))) if task else set()
    labels.update(new_labels)
    if len(labels) > settings.max_labels_per_task:
        raise InvalidForLimits(
            f"the task would have {len(labels)} distinct labels; the limit is {settings.max_labels_per_task}"
        )
    adding = sum(len(text) + len(label) for text, label in examples)
    if stored + adding > settings.max_stored_bytes_per_tenant:
        raise QuotaExceeded(
            f"this tenant would store {stored + adding} bytes; the limit is {settings.max_stored_bytes_per_tenant} "
            "bytes",
        )


def examples_guard(
    settings: Settings,
    tenant_id: str,
    task: Task | None,
    examples: Sequence[tuple[str, str]],
    kind: str = kinds.DEFAULT,
) -> Guard:
    """:func:`check_new_examples` as the store runs it: inside the write's transaction, under the
    tenant's lock (``Store.create_task(guard=...)``), so concurrent requests cannot overshoot a quota."""
    return lambda reads: check_new_examples(reads, settings, tenant_id, task, examples, kind)
