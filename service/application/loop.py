"""Closing the loop (docs/monitoring.md): feedback that becomes training examples (flagged
``source = "feedback"``), a per-task retrain policy that does so after N new labels and queues a training job
(its version is promoted only by the pipeline's paired comparison, like any other), and shadow versions: a
candidate that also answers a share of live predict requests, on the same embeddings, recorded not returned."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from adapters import kinds

from .. import logs
from ..engine.head_store import VersionFailed
from ..router import shares_embeddings
from ..runtime import Runtime
from ..store.models import Job, Task
from ..store.repository import NotFound, PendingFeedback, QueueFull
from . import quotas, tasks
from .errors import Invalid

log = logs.get("loop")


@dataclass(frozen=True)
class Promoted:
    task: Task
    job: Job | None  # the training job queued for the new examples (None: nothing was added)
    added: int  # examples copied from feedback


def _convert(rt: Runtime, task: Task, pending: Sequence[PendingFeedback]) -> tuple[list[tuple[str, str]], list[int]]:
    """Pending feedback as stored examples: each input and label checked as an example of the task's kind
    would be (inputs and labels that do not fit are left out, and marked so they are not counted again)."""
    kind = kinds.kind_of(task.kind)
    stored: list[tuple[str, str]] = []
    for row in pending:
        example = tasks.Example(row.input, kind.decode(row.label))
        try:
            tasks.check_labels(task.kind, [example])
            stored += tasks.stored_examples_of(rt, task, [example])
        except (Invalid, quotas.InvalidForLimits, ValueError):
            log.info("feedback not fit as an example", extra={"task_id": task.id, "feedback_id": row.id})
    return stored, [row.id for row in pending]


def promote_feedback(rt: Runtime, tenant_id: str, name: str, at_least: int = 1) -> Promoted:
    """Copy the task's labelled feedback inputs not yet considered into its examples (``source`` "feedback";
    the tenant's quotas apply) and queue a training job for them — when at least ``at_least`` are waiting."""
    task, job, added = rt.store.promote_feedback(
        tenant_id,
        name,
        lambda t, rows: _convert(rt, t, rows),
        lambda t, examples: quotas.examples_guard(rt.settings, tenant_id, t, examples, t.kind),
        at_least=at_least,
        limit=rt.settings.max_examples_per_request,
    )
    if job is not None:
        rt.jobs.notify()
    return Promoted(task, job, added)


def retrain_threshold(rt: Runtime, task: Task) -> int:
    """The task's retrain policy: new labelled feedback inputs that queue a retrain (0: never)."""
    own = task.retrain_after_feedback
    return rt.settings.retrain_after_feedback if own is None else own


def apply_policy(rt: Runtime, tenant_id: str, task_id: str, name: str) -> tuple[Promoted | None, str | None]:
    """After feedback was stored: when the task's policy says so and enough labelled inputs wait, copy them into
    the examples and queue a retrain. Returns what was done, or why not (the feedback is stored either way)."""
    task = rt.store.get_task(tenant_id, name)
    threshold = retrain_threshold(rt, task)
    if threshold <= 0 or rt.store.pending_feedback(tenant_id, task_id) < threshold:
        return None, None
    try:
        promoted = promote_feedback(rt, tenant_id, name, at_least=threshold)
    except (quotas.QuotaExceeded, QueueFull) as exc:
        return None, f"feedback stored, but no retrain was queued: {exc}"
    return (promoted if promoted.added or promoted.job else None), None


def set_policy(rt: Runtime, tenant_id: str, name: str, after_feedback: int | None) -> Task:
    """The task's retrain policy: after ``after_feedback`` new labelled inputs (0: never; None: the default)."""
    return rt.store.set_retrain_policy(tenant_id, name, after_feedback)


def set_shadow(rt: Runtime, tenant_id: str, name: str, version: int, share: float) -> Task:
    """Serve ``version`` in shadow on ``share`` of the task's predict requests (replacing any other shadow). It
    must be able to answer on the active version's embeddings: a head reading the pooled embedding of the same
    backbone (not a token kind, not a fine-tuned head)."""
    task = rt.store.get_task(tenant_id, name)
    kind = kinds.kind_of(task.kind)
    if kind.reads_token_states:
        raise Invalid(f"a {task.kind} task's heads read per-token states; shadow versions run on pooled embeddings")
    if task.active_version is None:
        raise Invalid(f"task {name!r} has no active version yet: there is no traffic to shadow")
    rt.store.version(task.id, version)  # 404 when there is no such version
    if version != task.active_version:
        try:
            candidate = rt.router.heads.get((task.id, version))
            active = rt.router.heads.get((task.id, task.active_version))
        except VersionFailed as exc:
            raise Invalid(f"version {version} cannot be loaded ({exc}); it cannot serve, not even in shadow") from None
        if not shares_embeddings(candidate) or not shares_embeddings(active):
            raise Invalid(
                f"version {version}'s head or the active version's reads more than the backbone's pooled embedding "
                "(a fine-tuned or from-scratch head): a shadow answers on the active version's embeddings"
            )
        if _backbone(task, candidate) != _backbone(task, active):
            raise Invalid(f"version {version} was trained on another backbone than the active version's")
    task = rt.store.set_shadow(tenant_id, name, version, share)  # 409 for the active version itself
    rt.router.forget(tenant_id, name)
    return task


def _backbone(task: Task, head: object) -> str:
    """The backbone a version's head was trained on (the task's may say ``auto``)."""
    return str(getattr(head, "backbone", None) or task.backbone)


def clear_shadow(rt: Runtime, tenant_id: str, name: str, version: int) -> None:
    task = rt.store.get_task(tenant_id, name)
    if task.shadow_version != version:
        raise NotFound(f"version {version} of task {name!r} is not in shadow")
    rt.store.clear_shadow(tenant_id, name)
    rt.router.forget(tenant_id, name)
