"""Tenant administration use cases: create a tenant (with its first ``owner`` key), disable or enable it,
issue and revoke API keys. Every key event is an audit line: JSON with ``event`` (``key_issued``,
``key_revoked``), the tenant, the key id, its role and who did it (``by``: a key id or ``admin``); never
the key itself. Too many active keys raises the store's ``KeyLimit`` (the API answers 409
``too_many_keys``)."""

from __future__ import annotations

from .. import logs
from ..runtime import Runtime
from ..store.models import ApiKey, Tenant

audit = logs.get("audit")


def create_tenant(rt: Runtime, name: str) -> tuple[Tenant, str]:
    """A new tenant and its first ``owner`` key (returned once, in clear)."""
    created, key = rt.store.create_tenant(name)
    first = rt.store.list_keys(created.id)[0]
    audit.info(
        "key issued",
        extra={"event": "key_issued", "tenant": created.id, "key_id": first.id, "role": "owner", "by": "admin"},
    )
    return created, key


def set_disabled(rt: Runtime, tenant_id: str, disabled: bool) -> Tenant:
    """Disable a tenant (its keys stop working at once; its data is kept) or enable it again."""
    tenant = rt.store.set_tenant_disabled(tenant_id, disabled)
    rt.auth.forget()
    return tenant


def issue_key(rt: Runtime, tenant_id: str, role: str, by: str) -> tuple[ApiKey, str]:
    """A new key of ``role`` for the tenant (at most ``GRAFT_MAX_KEYS_PER_TENANT`` active ones)."""
    row, key = rt.store.issue_key(tenant_id, role, max_active=rt.settings.max_keys_per_tenant)
    audit.info(
        "key issued", extra={"event": "key_issued", "tenant": tenant_id, "key_id": row.id, "role": role, "by": by}
    )
    return row, key


def revoke_key(rt: Runtime, tenant_id: str, key_id: str, by: str) -> None:
    """Revoke a key: requests with it are refused from now on (other replicas within the cache TTL)."""
    rt.store.revoke_key(tenant_id, key_id)
    rt.auth.forget()
    audit.info("key revoked", extra={"event": "key_revoked", "tenant": tenant_id, "key_id": key_id, "by": by})
