"""Feedback and monitoring use cases: true labels for predictions, and how the task's versions fare.

A feedback item quotes a prediction's ``id`` (which records the version that answered and its answer:
service/engine/prediction_ids.py), or sends the ``input`` itself, which the active version then predicts
(one shared backbone pass for all such items of a request). Either way the row stored holds the version,
its answer and the true label, so monitoring measures each version on what it actually answered. Text
inputs sent with feedback are stored (they could become training examples); image inputs are not.
Rows are kept ``GRAFT_FEEDBACK_RETENTION_DAYS``, at most ``GRAFT_MAX_FEEDBACK_PER_TASK`` per task, and are
deleted with the task (docs/monitoring.md)."""

from __future__ import annotations

import math
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
from ..store.models import Task, utcnow
from ..store.repository import FeedbackRow, NewFeedback, ShadowCounts, ShadowFeedback
from . import loop
from .errors import Invalid, TooLarge
from .inputs import Raw, prepare_inputs
from .loop import Promoted


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


@dataclass(frozen=True)
class Recorded:
    task: TaskRef
    kept: int  # feedback rows the task keeps now
    retrain: Promoted | None = None  # the task's retrain policy copied feedback into examples and queued a job
    note: str | None = None  # why the policy's retrain was not queued


async def record(rt: Runtime, tenant_id: str, name: str, items: Sequence[Item]) -> Recorded:
    """Store the items' true labels with the version that predicted each and its answer, then apply the task's
    retrain policy (service/application/loop.py)."""
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
    retrain, note = await anyio.to_thread.run_sync(loop.apply_policy, rt, tenant_id, ref.id, name)
    return Recorded(ref, kept, retrain, note)


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
    if rt.router.shadow_log is not None:
        rt.router.shadow_log.flush()  # this process's latest shadow answers
    since = utcnow() - timedelta(days=days)
    shadows = shadow_report(
        kind,
        rt.store.shadow_counts(tenant_id, task.id, since),
        rt.store.shadow_feedback(tenant_id, task.id, since),
    )
    series = rt.router.ood_window.series(task.id, active, DRIFT_WINDOWS) if active is not None else []
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
        "shadow": {
            "version": task.shadow_version,
            "share": task.shadow_share,
            "versions": [shadows[v] for v in sorted(shadows)],
        },
        "drift": drift(series, fpr, rt.router.ood_window.window_s / DRIFT_WINDOWS),
        "retrain": {
            "after_feedback": loop.retrain_threshold(rt, task),
            "pending_feedback": rt.store.pending_feedback(tenant_id, task.id),
        },
    }


def shadow_figures(rt: Runtime, tenant_id: str, task: Task) -> dict[int, dict[str, Any]]:
    """Every version's shadow figures within the retention window (for the versions list)."""
    if rt.router.shadow_log is not None:
        rt.router.shadow_log.flush()  # this process's latest shadow answers
    since = utcnow() - timedelta(days=rt.settings.feedback_retention_days)
    counts = rt.store.shadow_counts(tenant_id, task.id, since)
    if not counts:
        return {}
    return shadow_report(kinds.kind_of(task.kind), counts, rt.store.shadow_feedback(tenant_id, task.id, since))


DRIFT_WINDOWS = 12  # the OOD window (an hour) in 12 windows of 5 minutes
DRIFT_MIN_INPUTS = 20  # fewer scored inputs in a window: no shift is called
DRIFT_Z = 3.0  # a window's flag count this many standard deviations above the calibrated rate: shifted


def drift(series: Sequence[tuple[int, int, float]], fpr: float | None, window_s: float) -> dict[str, Any]:
    """The active version's flag rate and mean OOD score per window (oldest first), and in each the shift
    statistic: the binomial z-score of the flag count against the rate the version was calibrated to,
    ``(flagged - n·fpr) / sqrt(n·fpr·(1 - fpr))``. In distribution it stays within about ±2; a sustained value
    above ``DRIFT_Z`` (with at least ``DRIFT_MIN_INPUTS`` inputs) says the inputs moved away from the training
    data."""
    windows: list[dict[str, Any]] = []
    for i, (n, flagged, total) in enumerate(series):
        z = None
        if n and fpr is not None and 0 < fpr < 1:
            z = (flagged - n * fpr) / math.sqrt(n * fpr * (1 - fpr))
        windows.append(
            {
                "ends_s_ago": (len(series) - 1 - i) * window_s,
                "scored": n,
                "flagged": flagged,
                "flag_rate": flagged / n if n else None,
                "mean_score": total / n if n else None,
                "z": z,
            }
        )
    latest = next((w for w in reversed(windows) if w["scored"]), None)
    shifted = bool(latest and latest["scored"] >= DRIFT_MIN_INPUTS and (latest["z"] or 0.0) > DRIFT_Z)
    return {"window_s": window_s, "windows": windows, "latest": latest, "shifted": shifted}


def shadow_report(
    kind: kinds.TaskKind, counts: dict[int, ShadowCounts], paired: Sequence[ShadowFeedback]
) -> dict[int, dict[str, Any]]:
    """Per shadow version: the predictions it answered in shadow, the share that agreed with the active
    version, and on the feedback rows of those predictions its figures beside the answering version's (the
    same items: a paired comparison)."""
    by_version: dict[int, list[ShadowFeedback]] = defaultdict(list)
    for row in paired:
        by_version[row.version].append(row)
    out = {}
    for version in sorted(set(counts) | set(by_version)):
        count = counts.get(version, ShadowCounts(0, 0))
        rows = [r for r in by_version.get(version, []) if r.answer is not None and r.active_answer is not None]
        labels = [kind.decode(r.label) for r in rows]
        shadow = kind.feedback_metrics([kind.decode(str(r.answer)) for r in rows], labels)
        active = kind.feedback_metrics([kind.decode(str(r.active_answer)) for r in rows], labels)
        out[version] = {
            "version": version,
            "predictions": count.predictions,
            "agreements": count.agreements,
            "agreement": count.agreements / count.predictions if count.predictions else None,
            "feedback": {
                "count": len(rows),
                "accuracy": shadow.get("accuracy"),
                "mean_abs_error": shadow.get("mean_abs_error"),
                "active_accuracy": active.get("accuracy"),
                "active_mean_abs_error": active.get("mean_abs_error"),
            },
        }
    return out


def _ood(scored: int, flagged: int, mean: float) -> dict[str, Any]:
    return {
        "scored": scored,
        "flagged": flagged,
        "flag_rate": flagged / scored if scored else None,
        "mean_score": mean if scored else None,
    }
