"""A task's versions: list them with their metrics, promote one by hand, roll back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from graft import schemas as s

from ...application import feedback as shadow_use
from ...application import loop
from ...store.models import Version
from .deps import (
    ERRORS,
    RuntimeDep,
    TenantDep,
    WriterDep,
    task_out,
    version_out,
)

router = APIRouter(prefix="/v1")


def version_detail(v: Version, active: int | None, shadow: dict[str, Any] | None = None) -> s.VersionDetail:
    metrics = v.metrics or {}
    promotion = metrics.get("promotion")
    status: s.VersionStatus
    if v.error:
        status = "failed"
    elif v.number == active:
        status = "active"
    elif (promotion or {"activated": True}).get(
        "activated", True
    ):  # versions from before promotion existed were active
        status = "previous"
    else:
        status = "candidate"
    return s.VersionDetail(
        **version_out(v, active).model_dump(),
        status=status,
        accuracy=metrics.get("accuracy"),
        ece=metrics.get("ece"),
        transferability=metrics.get("transferability"),
        warnings=metrics.get("warnings", []),
        promotion=promotion,
        error=v.error,
        shadow=None if shadow is None else s.ShadowFigures.model_validate(shadow),
    )


def version_list(rt: RuntimeDep, tenant_id: str, name: str) -> s.VersionList:
    task = rt.store.get_task(tenant_id, name)
    shadows = shadow_use.shadow_figures(rt, tenant_id, task)
    return s.VersionList(
        task=task.name,
        active_version=task.active_version,
        versions=[version_detail(v, task.active_version, shadows.get(v.number)) for v in rt.store.versions(task.id)],
    )


@router.get("/tasks/{name}/versions", response_model=s.VersionList, responses=ERRORS)
def list_versions(name: str, rt: RuntimeDep, me: TenantDep) -> s.VersionList:
    return version_list(rt, me.id, name)


@router.post("/tasks/{name}/promote", response_model=s.VersionList, responses=ERRORS)
def promote(name: str, body: s.PromoteRequest, rt: RuntimeDep, me: WriterDep) -> s.VersionList:
    """Serve version ``body.version`` from now on (e.g. a candidate that auto-promotion kept back)."""
    rt.store.promote(me.id, name, body.version)
    rt.router.forget(me.id, name)  # this process serves the switch at once; others within the task cache TTL
    return version_list(rt, me.id, name)


@router.post("/tasks/{name}/versions/{version}/shadow", response_model=s.TaskOut, responses=ERRORS)
def start_shadow(name: str, version: int, body: s.ShadowRequest, rt: RuntimeDep, me: WriterDep) -> s.TaskOut:
    """Serve a candidate version in shadow on `share` of predict requests: it answers on the same embeddings,
    its answers are recorded (GET .../monitoring, GET .../versions), never returned. One shadow per task."""
    return task_out(loop.set_shadow(rt, me.id, name, version, body.share))


@router.delete("/tasks/{name}/versions/{version}/shadow", status_code=204, responses=ERRORS)
def stop_shadow(name: str, version: int, rt: RuntimeDep, me: WriterDep) -> Response:
    """Stop serving the version in shadow (its recorded figures stay, within the retention window)."""
    loop.clear_shadow(rt, me.id, name, version)
    return Response(status_code=204)


@router.post("/tasks/{name}/rollback", response_model=s.VersionList, responses=ERRORS)
def rollback(name: str, rt: RuntimeDep, me: WriterDep) -> s.VersionList:
    """Serve the version that was active before the current one again."""
    rt.store.rollback(me.id, name)
    rt.router.forget(me.id, name)
    return version_list(rt, me.id, name)
