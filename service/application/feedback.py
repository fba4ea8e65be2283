"""Feedback and monitoring use cases: true labels for predictions, and how the task's versions fare.

A feedback item quotes a prediction's ``id`` (which records the version that answered and its answer:
service/engine/prediction_ids.py), or sends the ``input`` itself, which the active version then predicts
(one shared backbone pass for all such items of a request). Either way the row stored holds the version,
its answer and the true label, so monitoring measures each version on what it actually answered. Text
inputs sent with feedback are stored (they could become training examples); image inputs are not.
Rows are kept ``GRAFT_FEEDBACK_RETENTION_DAYS``, at most ``GRAFT_MAX_FEEDBACK_PER_TASK`` per task, and are
deleted with the task (docs/monitoring.md)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio.to_thread

from adapters import heads, kinds

from ..engine.head_store import VersionFailed
from ..engine.prediction_ids import BadPredictionId, read_id
from ..router import TaskRef
from ..runtime import Runtime
from ..store.models import utcnow
from ..store.repository import FeedbackRow, NewFeedback
from .errors import Invalid, TooLarge
from .inputs import Raw, prepare_inputs


@dataclass(frozen=True)
class Item:
    """One feedback item as the request sent it (``id`` or ``input``, or both, and the true label)."""

    label: Any
    id: str | None = None
    input: Raw | None = None


def check_items(rt: Runtime, tenant_id: str, n: int) -> None:
    """A feedback request's size and the tenant's rate (one token per item)."""
    limit = rt.settings.max_feedback_items
    if n > limit:
        raise TooLarge(f"{n} items in one feedback request; the limit is {limit}. Send them in parts.")
    rt.predict_rate.take(tenant_id, n)


async def record(rt: Runtime, tenant_id: str, name: str, items: Sequence[Item]) -> tuple[TaskRef, int]:
    """Store the items' true labels with the version that predicted each and its answer. Returns the task
    and how many feedback rows it keeps now."""
    ref, _, head = await rt.router.head(tenant_id, name)  # 404 for another tenant's task; 409 if untrained
    kind = kinds.kind_of(ref.kind)
    rows: list[NewFeedback | None] = []
    to_predict: list[int] = []
    for i, item in enumerate(items):
        problem = kind.problem(item.label)
        if problem:
            raise Invalid(f"items[{i}].label: {problem}")
        label = kind.encode(item.label)
        text = item.input if ref.modality == "text" and isinstance(item.input, str) else None
        if item.id is None:
            if item.input is None:
                raise Invalid(f"items[{i}]: send the prediction's 'id', or the 'input' itself")
            to_predict.append(i)
            rows.append(None)
            continue
        try:
            said = read_id(ref.id, item.id)
        except BadPredictionId as exc:
            raise Invalid(f"items[{i}].id: {exc}") from None
        rows.append(NewFeedback(said.version, said.answer, label, said.ood, said.nonce, text))
    if to_predict:  # inputs without an id: what the active version answers for them now
        raw: list[Raw] = [x for x in (items[i].input for i in to_predict) if x is not None]
        names = [f"items[{i}].input" for i in to_predict]
        model_inputs, raw_inputs = await prepare_inputs(rt, ref, rt.router.backbone_of(ref, head), head, raw, names)
        served = await rt.router.run(ref, head, model_inputs, raw_inputs)
        for i, answer in zip(to_predict, served, strict=True):
            predicted = kind.answer(answer.prediction)
            given = items[i].input
            rows[i] = NewFeedback(
                _active(ref),
                None if predicted is None else kind.encode(predicted),
                kind.encode(items[i].label),
                None if answer.ood_score is None else answer.ood_score > 1.0,
                None,
                given if ref.modality == "text" and isinstance(given, str) else None,
            )
    settings = rt.settings
    kept = await anyio.to_thread.run_sync(
        lambda: rt.store.add_feedback(
            tenant_id,
            ref.id,
            [r for r in rows if r is not None],
            retention_days=settings.feedback_retention_days,
            max_rows=settings.max_feedback_per_task,
        )
    )
    return ref, kept


def _active(ref: TaskRef) -> int:
    assert ref.active_version is not None  # router.head resolved it
    return ref.active_version


def summarize(kind: kinds.TaskKind, rows: Sequence[FeedbackRow]) -> dict[str, Any]:
    """Feedback rows of one version: their count and the kind's figures (accuracy…), overall and split by
    whether the input was flagged out of distribution."""
    measured = [r for r in rows if r.predicted is not None]

    def figures(subset: Sequence[FeedbackRow]) -> dict[str, float | None]:
        return kind.feedback_metrics(
            [kind.decode(r.predicted) for r in subset if r.predicted is not None],
            [kind.decode(r.label) for r in subset],
        )

    flagged = [r for r in measured if r.ood is True]
    unflagged = [r for r in measured if r.ood is False]
    return {
        "count": len(rows),
        **figures(measured),
        "ood_flagged": len(flagged),
        "accuracy_flagged": figures(flagged).get("accuracy"),
        "accuracy_unflagged": figures(unflagged).get("accuracy"),
    }


def monitoring(rt: Runtime, tenant_id: str, name: str) -> dict[str, Any]:
    """The task's feedback figures (active version, and per version) over the retention window, and the
    OOD flag rate of this process's recent predictions (docs/monitoring.md)."""
    task = rt.store.get_task(tenant_id, name)
    kind = kinds.kind_of(task.kind)
    days = rt.settings.feedback_retention_days
    rows = rt.store.feedback(tenant_id, task.id, utcnow() - timedelta(days=days))
    by_version: dict[int, list[FeedbackRow]] = defaultdict(list)
    for row in rows:
        by_version[row.version].append(row)
    window = rt.router.ood_window.read(task.id)
    fpr = None
    if task.active_version is not None and kind.scores_ood:
        try:  # the calibrated rate of the OOD model the active version serves with (from the head cache)
            ood = heads.ood_of(rt.router.heads.get((task.id, task.active_version)))
        except VersionFailed:  # corrupt weights: predict answers 503 for it; monitoring still reports
            ood = None
        fpr = None if ood is None else ood.fpr
    per_version = []
    for version in sorted(set(by_version) | set(window)):
        scored, flagged, mean = window.get(version, (0, 0, 0.0))
        per_version.append(
            {
                "version": version,
                "feedback": summarize(kind, by_version.get(version, [])),
                "ood": _ood(scored, flagged, mean),
            }
        )
    active = task.active_version
    scored, flagged, mean = window.get(active, (0, 0, 0.0)) if active is not None else (0, 0, 0.0)
    return {
        "task": task.name,
        "active_version": active,
        "window_days": days,
        "feedback": summarize(kind, by_version.get(active, []) if active is not None else []),
        "ood": {
            **_ood(scored, flagged, mean),
            "expected_rate": fpr,
            "window_s": rt.router.ood_window.window_s,
        },
        "per_version": per_version,
    }


def _ood(scored: int, flagged: int, mean: float) -> dict[str, Any]:
    return {
        "scored": scored,
        "flagged": flagged,
        "flag_rate": flagged / scored if scored else None,
        "mean_score": mean if scored else None,
    }
