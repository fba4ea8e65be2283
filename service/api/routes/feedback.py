"""Feedback (true labels for predictions) and monitoring (accuracy on feedback, OOD flag rates).

Role ``predict`` for both: the application that predicts is the one that learns the outcome, and
feedback is bounded per request (GRAFT_MAX_FEEDBACK_ITEMS, the predict rate), per task
(GRAFT_MAX_FEEDBACK_PER_TASK) and in time (GRAFT_FEEDBACK_RETENTION_DAYS). docs/monitoring.md."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter

from graft import schemas as s

from ...application import feedback as use
from .deps import ERRORS, RuntimeDep, TenantDep

router = APIRouter(prefix="/v1")


@router.post("/tasks/{name}/feedback", response_model=s.FeedbackAccepted, responses=ERRORS)
async def feedback(name: str, body: s.FeedbackRequest, rt: RuntimeDep, me: TenantDep) -> s.FeedbackAccepted:
    """Store true labels: each item quotes a prediction's `id`, or sends the `input` (predicted now)."""
    use.check_items(rt, me.id, len(body.items))  # size, then one rate token per item
    items = [use.Item(label=item.label, id=item.id, input=item.input) for item in body.items]
    task, kept = await use.record(rt, me.id, name, items)
    return s.FeedbackAccepted(task=task.name, accepted=len(items), kept=kept)


@router.get("/tasks/{name}/monitoring", response_model=s.MonitoringOut, responses=ERRORS)
async def monitoring(name: str, rt: RuntimeDep, me: TenantDep) -> s.MonitoringOut:
    """Accuracy on feedback (active version and per version) and the recent OOD flag rate."""
    return s.MonitoringOut.model_validate(await anyio.to_thread.run_sync(use.monitoring, rt, me.id, name))
