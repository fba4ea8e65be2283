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
            "description": "zip: model.onnx, preprocessing files (tokenizer or image spec), graft-export.json",
        },
    },
    response_class=Response,
)
async def export_task(
    name: str,
    rt: RuntimeDep,
    me: TenantDep,
    format: str = Query("onnx", description="Only `onnx`."),
    version: int | None = Query(None, ge=1, description="Version to export; default: the active one."),
) -> Response:
    task, v, path = await exports.export(rt, me.id, name, format, version)
    return FileResponse(path, media_type="application/zip", filename=f"{task.name}-v{v.number}-onnx.zip")
