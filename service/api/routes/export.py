"""Export of an adapted model as a zip (the use case: service/application/exports.py)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse

from ...application import exports
from .deps import ERRORS, RuntimeDep, TenantDep

router = APIRouter(prefix="/v1")


@router.get(
    "/tasks/{name}/export",
    responses={
        **ERRORS,
        200: {
            "content": {"application/zip": {}},
            "description": "zip. `format=onnx`: model.onnx, preprocessing files (tokenizer or image spec), "
            "graft-export.json. `format=peft` (generation tasks): adapter_config.json, adapter_model.safetensors "
            "(a PEFT adapter directory for peft.PeftModel.from_pretrained), README.md, graft-export.json.",
        },
    },
    response_class=Response,
)
async def export_task(
    name: str,
    rt: RuntimeDep,
    me: TenantDep,
    format: str | None = Query(
        None,
        description="`onnx` (one ONNX graph: text, image and audio classification, multilabel, regression, speakers, "
        "entities, answers and detection tasks) or `peft` "
        "(a generation task's LoRA adapter as a PEFT adapter directory). Default: the task kind's format. A "
        "format the task's kind does not have is refused (422 `not_exportable`, naming the one to use).",
    ),
    version: int | None = Query(None, ge=1, description="Version to export; default: the active one."),
) -> Response:
    out = await exports.export(rt, me.id, name, format, version)
    filename = f"{out.task.name}-v{out.version.number}-{out.format}.zip"
    return FileResponse(out.path, media_type="application/zip", filename=filename)
