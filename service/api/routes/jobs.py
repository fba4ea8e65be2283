"""Training job status."""

from __future__ import annotations

from fastapi import APIRouter

from graft import schemas as s

from .deps import (
    ERRORS,
    RuntimeDep,
    TenantDep,
    job_out,
)

router = APIRouter(prefix="/v1")


@router.get("/jobs/{job_id}", response_model=s.JobOut, responses=ERRORS)
def get_job(job_id: str, rt: RuntimeDep, me: TenantDep) -> s.JobOut:
    return job_out(rt.store.get_job(me.id, job_id))
