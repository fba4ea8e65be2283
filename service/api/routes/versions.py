"""A task's versions: list them with their metrics, promote one by hand, roll back."""

from __future__ import annotations

from fastapi import APIRouter

from graft import schemas as s

from ...store.models import Version
from .deps import (
    ERRORS,
    RuntimeDep,
    TenantDep,
    WriterDep,
    version_out,
)

router = APIRouter(prefix="/v1")


def version_detail(v: Version, active: int | None) -> s.VersionDetail:
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
    )


def version_list(rt: RuntimeDep, tenant_id: str, name: str) -> s.VersionList:
    task = rt.store.get_task(tenant_id, name)
    return s.VersionList(
        task=task.name,
        active_version=task.active_version,
        versions=[version_detail(v, task.active_version) for v in rt.store.versions(task.id)],
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


@router.post("/tasks/{name}/rollback", response_model=s.VersionList, responses=ERRORS)
def rollback(name: str, rt: RuntimeDep, me: WriterDep) -> s.VersionList:
    """Serve the version that was active before the current one again."""
    rt.store.rollback(me.id, name)
    rt.router.forget(me.id, name)
    return version_list(rt, me.id, name)
