"""Feedback (true labels for predictions), feedback promoted to examples, and monitoring (accuracy on feedback,
OOD flag rates and drift, shadow versions).

Role ``predict`` for feedback and monitoring (``write`` to promote feedback into examples): the application
that predicts is the one that learns the outcome, and feedback is bounded per request (GRAFT_MAX_FEEDBACK_ITEMS,
the predict rate), per task (GRAFT_MAX_FEEDBACK_PER_TASK) and in time (GRAFT_FEEDBACK_RETENTION_DAYS).
docs/monitoring.md."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from graft import schemas as s

from ...application import feedback as use
from ...application import loop
from .deps import ERRORS, RuntimeDep, TenantDep, WriterDep, job_out

router = APIRouter(prefix="/v1")


@router.post("/tasks/{name}/feedback", response_model=s.FeedbackAccepted, responses=ERRORS)
async def feedback(name: str, body: s.FeedbackRequest, rt: RuntimeDep, me: TenantDep) -> s.FeedbackAccepted:
    """Store true labels: each item quotes a prediction's `id`, or sends the `input` (predicted now)."""
    use.check_items(rt, me.id, len(body.items))  # size, then one rate token per item
    items = [use.Item(label=item.label, id=item.id, input=item.input) for item in body.items]
    done = await use.record(rt, me.id, name, items)
    retrain = done.retrain
    return s.FeedbackAccepted(
        task=done.task.name,
        accepted=len(items),
        kept=done.kept,
        examples_added=retrain.added if retrain else 0,
        job=job_out(retrain.job) if retrain and retrain.job else None,
        retrain_note=done.note,
    )


@router.post("/tasks/{name}/feedback/promote", response_model=s.FeedbackPromoted, responses=ERRORS)
def promote_feedback(name: str, rt: RuntimeDep, me: WriterDep) -> s.FeedbackPromoted:
    """Copy the labelled feedback inputs not yet used into the task's examples (flagged `source: feedback`;
    quotas apply) and queue a training job; its version is promoted only if it beats the active one."""
    done = loop.promote_feedback(rt, me.id, name)
    return s.FeedbackPromoted(
        task=done.task.name, examples_added=done.added, job=job_out(done.job) if done.job else None
    )


@router.get("/tasks/{name}/monitoring", response_model=s.MonitoringOut, responses=ERRORS)
async def monitoring(name: str, rt: RuntimeDep, me: TenantDep) -> s.MonitoringOut:
    """Accuracy on feedback (active version and per version) and the recent OOD flag rate."""
    return s.MonitoringOut.model_validate(await anyio.to_thread.run_sync(use.monitoring, rt, me.id, name))
