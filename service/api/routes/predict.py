"""Predictions: backbone batch + the task's active head."""

from __future__ import annotations

from fastapi import APIRouter

from .. import schemas as s
from ..errors import ApiError
from .deps import (
    ERRORS,
    RuntimeDep,
    TenantDep,
    check_texts,
)

router = APIRouter(prefix="/v1")


@router.post("/tasks/{name}/predict", response_model=s.PredictResponse, responses=ERRORS)
async def predict(name: str, body: s.PredictRequest, rt: RuntimeDep, me: TenantDep) -> s.PredictResponse:
    limit = rt.settings.max_predict_inputs
    if len(body.inputs) > limit:
        raise ApiError(413, "too_large", f"{len(body.inputs)} inputs in one predict request; the limit is {limit}")
    check_texts(rt, body.inputs, "inputs")
    task, version, predictions = await rt.router.predict(me.id, name, body.inputs, body.top_k)
    return s.PredictResponse(
        task=task.name,
        version=version,
        predictions=[s.PredictionOut(label=p.label, score=p.score, scores=p.scores) for p in predictions],
    )
