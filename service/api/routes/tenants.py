"""Tenant administration (admin token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from graft import schemas as s
from .deps import (
    ERRORS,
    RuntimeDep,
    admin,
)

router = APIRouter(prefix="/v1")


@router.post("/tenants", status_code=201, response_model=s.TenantCreated, responses=ERRORS, dependencies=[Depends(admin)])
def create_tenant(body: s.TenantCreate, rt: RuntimeDep) -> s.TenantCreated:
    created, key = rt.store.create_tenant(body.name)
    return s.TenantCreated(id=created.id, name=created.name, api_key=key)


@router.get("/tenants", response_model=list[s.TenantOut], responses=ERRORS, dependencies=[Depends(admin)])
def list_tenants(rt: RuntimeDep) -> list[s.TenantOut]:
    return [s.TenantOut(id=t.id, name=t.name, disabled=t.disabled, created_at=t.created_at) for t in rt.store.list_tenants()]
