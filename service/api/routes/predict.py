"""Predictions: backbone batch + the task's active head. JSON inputs, or image or WAV files as multipart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from graft import schemas as s

from ...application import predict as use
from ...application.inputs import Input
from ...runtime import Runtime
from ..errors import ApiError
from ..uploads import is_multipart, one_upload, read_form
from .deps import (
    ERRORS,
    RuntimeDep,
    TenantDep,
)

router = APIRouter(prefix="/v1")


async def _predict(
    rt: Runtime,
    tenant_id: str,
    name: str,
    inputs: Sequence[Input],
    names: Sequence[str],
    top_k: int | None,
    options: dict[str, Any] | None = None,
) -> s.PredictResponse:
    task, version, predictions = await use.predict(rt, tenant_id, name, inputs, names, top_k, options)
    # each prediction's JSON is in its task kind's form (adapters/kinds/); the response model validates it
    return s.PredictResponse.model_validate(
        {"task": task.name, "version": version, "predictions": [p.as_json() for p in predictions]}
    )


@router.post("/tasks/{name}/predict", response_model=s.PredictResponse, responses=ERRORS)
async def predict(name: str, body: s.PredictRequest, rt: RuntimeDep, me: TenantDep) -> s.PredictResponse:
    use.check_inputs(rt, me.id, len(body.inputs))  # size, then one rate token per input
    inputs = [s.input_value(value) for value in body.inputs]  # strings, or {question, context} (answers tasks)
    options = {"score_threshold": body.score_threshold, "max_objects": body.max_objects}  # detection tasks
    names = [f"inputs[{i}]" for i in range(len(inputs))]
    return await _predict(rt, me.id, name, inputs, names, body.top_k, options)


FILES_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One part per image (PNG, JPEG or WebP) or WAV clip (audio tasks), "
                            "all named `file`.",
                        },
                        "top_k": {"type": "integer", "minimum": 1},
                        "score_threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        "max_objects": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                }
            }
        },
    }
}


@router.post(
    "/tasks/{name}/predict/files", response_model=s.PredictResponse, responses=ERRORS, openapi_extra=FILES_BODY
)
async def predict_files(name: str, request: Request, rt: RuntimeDep, me: TenantDep) -> s.PredictResponse:
    """Predict an image or audio task from uploaded files: ``curl -F file=@a.jpg -F file=@b.png [-F top_k=3]``,
    ``curl -F file=@hello.wav``."""
    rt.predict_rate.take(me.id)  # the first file's token, before the body is read
    if not is_multipart(request):
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data with one 'file' part per image or WAV clip"
        )
    limit = rt.settings.max_predict_inputs
    with one_upload(me.id):  # one upload per tenant at a time: the spool holds at most one of its bodies
        files, form = await read_form(request, rt.settings.max_upload_bytes, max_files=limit)
        try:
            unknown = sorted({key for key, _ in form.multi_items()} - {"file", *FORM_OPTIONS})
            if unknown:
                raise ApiError(
                    422,
                    "validation_error",
                    f"unknown form fields {unknown}; send 'file' parts and optionally {', '.join(FORM_OPTIONS)}",
                )
            if not files:
                raise ApiError(422, "validation_error", "no files: send one 'file' part per image or WAV clip")
            top_k = form.get("top_k")
            if top_k is not None and (not isinstance(top_k, str) or not top_k.isdigit() or int(top_k) < 1):
                raise ApiError(422, "validation_error", "top_k must be a positive integer")
            options = _form_options(form)
            if len(files) > 1:
                rt.predict_rate.take(me.id, len(files) - 1)  # one token per input in all
            # decode() answers 413 for anything over the task's limit (images or audio)
            cap = max(rt.settings.max_image_bytes, rt.settings.max_audio_bytes) + 1
            raw = [upload.file.read(cap) for upload in files]
            names = [f"file[{i}] ({upload.filename!r})" for i, upload in enumerate(files)]
        finally:
            await form.close()
    return await _predict(rt, me.id, name, raw, names, int(top_k) if top_k else None, options)


FORM_OPTIONS = ("top_k", "score_threshold", "max_objects")


def _form_options(form: Any) -> dict[str, Any]:
    """Detection's request options from form fields, checked as the JSON request's are."""
    try:
        checked = s.PredictRequest.model_validate(
            {"inputs": ["x"], **{k: form.get(k) for k in ("score_threshold", "max_objects") if form.get(k) is not None}}
        )
    except ValidationError as exc:
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "validation_error", problem) from None
    return {"score_threshold": checked.score_threshold, "max_objects": checked.max_objects}
