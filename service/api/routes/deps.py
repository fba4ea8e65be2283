"""Shared route dependencies (runtime, auth), conversions to API models, and validation
that depends on configuration."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import Depends, Request

from graft import schemas as s

from ... import logs
from ...runtime import Runtime
from ...store.models import Job, Task, Tenant, Version
from ...tenancy import Caller, bearer, role_allows
from ..errors import ApiError
from ..gate import CALLER

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
}


def runtime(request: Request) -> Runtime:
    rt = getattr(request.app.state, "runtime", None)
    if rt is None or not rt.ready:
        raise ApiError(503, "unavailable", "Graft is starting or stopping; retry shortly", {"Retry-After": "1"})
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]


def caller(request: Request, rt: Runtime) -> Caller | None:
    """The caller the auth gate resolved (see :mod:`..gate`), else resolved here."""
    found = request.scope.get("state", {}).get(CALLER)
    return found if found is not None else rt.auth.identify(bearer(request.headers.get("authorization")))


def admin(request: Request, rt: RuntimeDep) -> None:
    who = caller(request, rt)
    if who is None or not who.is_admin:
        raise ApiError(401, "unauthorized", "this call needs the admin token as 'Authorization: Bearer <token>'")


def tenant_caller(request: Request, rt: Runtime, needed: str) -> Caller:
    who = caller(request, rt)
    if who is None or who.tenant is None:
        raise ApiError(401, "unauthorized", "missing or invalid API key; send 'Authorization: Bearer <api_key>'")
    if not role_allows(who.role, needed):
        raise ApiError(
            403,
            "forbidden",
            f"this call needs an API key with role '{needed}' (or higher); this key's role is '{who.role}'",
        )
    logs.tenant_id.set(who.tenant.id)
    return who


def tenant(request: Request, rt: RuntimeDep) -> Tenant:
    """Any key of the tenant (role ``predict`` or higher): predict and read."""
    found = tenant_caller(request, rt, "predict").tenant
    assert found is not None
    return found


def writer(request: Request, rt: RuntimeDep) -> Tenant:
    """A key of role ``write`` or ``owner``: manage tasks, examples, datasets and versions."""
    found = tenant_caller(request, rt, "write").tenant
    assert found is not None
    return found


TenantDep = Annotated[Tenant, Depends(tenant)]
WriterDep = Annotated[Tenant, Depends(writer)]


# -- conversions -------------------------------------------------------------------------


def task_out(task: Task) -> s.TaskOut:
    return s.TaskOut(
        name=task.name,
        modality=task.modality,
        kind=task.kind,
        backbone=task.backbone,
        head=task.head,
        active_version=task.active_version,
        created_at=task.created_at,
        updated_at=task.updated_at,
        retrain_after_feedback=task.retrain_after_feedback,
        shadow=(
            s.ShadowConfig(version=task.shadow_version, share=task.shadow_share or 0.0)
            if task.shadow_version is not None
            else None
        ),
    )


def job_out(job: Job) -> s.JobOut:
    return s.JobOut(
        id=job.id,
        task=job.task_name,
        status=cast(s.JobStatus, job.status),
        progress=job.progress,
        error=job.error,
        version=job.version,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        superseded_by=job.superseded_by,
    )


def version_out(v: Version, active: int | None) -> s.VersionOut:
    return s.VersionOut(
        version=v.number,
        head=v.head,
        backbone=v.backbone,
        backbone_revision=v.backbone_revision,
        runtime=v.runtime,
        labels=v.labels,
        n_examples=v.n_examples,
        metrics=v.metrics,
        created_at=v.created_at,
        active=v.number == active,
    )
