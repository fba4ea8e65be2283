"""Tenant administration: create, list, disable (admin token); API keys: issue, list, revoke
(admin token, or an ``owner`` key of the tenant for its own keys). The use cases, with their audit
trail, are service/application/tenants.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from graft import schemas as s

from ...application import tenants
from ...store.models import ApiKey, Tenant
from ...store.repository import NotFound
from ..errors import ApiError
from .deps import (
    ERRORS,
    RuntimeDep,
    admin,
    caller,
)

router = APIRouter(prefix="/v1")

TenantId = Annotated[str, Path(max_length=64)]


def tenant_out(t: Tenant) -> s.TenantOut:
    return s.TenantOut(id=t.id, name=t.name, disabled=t.disabled, created_at=t.created_at)


def key_out(k: ApiKey) -> s.ApiKeyOut:
    return s.ApiKeyOut(id=k.id, prefix=k.prefix, role=k.role, created_at=k.created_at, revoked_at=k.revoked_at)  # type: ignore[arg-type]


def admin_or_owner(tenant_id: TenantId, request: Request, rt: RuntimeDep) -> str:
    """The admin, or an ``owner`` key of the tenant itself; returns who (``admin`` or the key id).
    Another tenant's id is 404, as if it did not exist."""
    who = caller(request, rt)
    if who is None:
        raise ApiError(401, "unauthorized", "missing or invalid API key; send 'Authorization: Bearer <api_key>'")
    if who.is_admin:
        return "admin"
    assert who.tenant is not None
    if who.role != "owner":
        raise ApiError(
            403, "forbidden", f"managing keys needs an API key with role 'owner'; this key's role is '{who.role}'"
        )
    if who.tenant.id != tenant_id:
        raise NotFound("no such tenant")
    return who.key_id or "?"


Actor = Annotated[str, Depends(admin_or_owner)]


@router.post(
    "/tenants", status_code=201, response_model=s.TenantCreated, responses=ERRORS, dependencies=[Depends(admin)]
)
def create_tenant(body: s.TenantCreate, rt: RuntimeDep) -> s.TenantCreated:
    created, key = tenants.create_tenant(rt, body.name)
    return s.TenantCreated(id=created.id, name=created.name, api_key=key)


@router.get("/tenants", response_model=list[s.TenantOut], responses=ERRORS, dependencies=[Depends(admin)])
def list_tenants(rt: RuntimeDep) -> list[s.TenantOut]:
    return [tenant_out(t) for t in rt.store.list_tenants()]


@router.patch("/tenants/{tenant_id}", response_model=s.TenantOut, responses=ERRORS, dependencies=[Depends(admin)])
def update_tenant(tenant_id: TenantId, body: s.TenantUpdate, rt: RuntimeDep) -> s.TenantOut:
    """Disable a tenant (its keys stop working at once; its data is kept) or enable it again."""
    return tenant_out(tenants.set_disabled(rt, tenant_id, body.disabled))


@router.post("/tenants/{tenant_id}/keys", status_code=201, response_model=s.ApiKeyCreated, responses=ERRORS)
def issue_key(tenant_id: TenantId, rt: RuntimeDep, by: Actor, body: s.ApiKeyCreate | None = None) -> s.ApiKeyCreated:
    """A new API key (rotation: issue one, move clients to it, then revoke the old one), or a narrower
    one: ``{"role": "predict"}`` for a client that only predicts. No body: an ``owner`` key."""
    role = body.role if body is not None else "owner"
    row, key = tenants.issue_key(rt, tenant_id, role, by)
    return s.ApiKeyCreated(**key_out(row).model_dump(), api_key=key)


@router.get(
    "/tenants/{tenant_id}/keys", response_model=s.ApiKeyList, responses=ERRORS, dependencies=[Depends(admin_or_owner)]
)
def list_keys(tenant_id: TenantId, rt: RuntimeDep) -> s.ApiKeyList:
    rt.store.get_tenant(tenant_id)
    return s.ApiKeyList(keys=[key_out(k) for k in rt.store.list_keys(tenant_id)])


@router.delete("/tenants/{tenant_id}/keys/{key_id}", status_code=204, responses=ERRORS)
def revoke_key(tenant_id: TenantId, key_id: Annotated[str, Path(max_length=64)], rt: RuntimeDep, by: Actor) -> Response:
    """Revoke a key: requests with it are refused from now on (other replicas within the cache TTL)."""
    tenants.revoke_key(rt, tenant_id, key_id, by)
    return Response(status_code=204)
