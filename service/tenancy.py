"""Who is calling: the admin token, and tenants identified by their API keys."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .caching import TTLCache
from .config import Settings
from .logs import get as get_logger
from .store.db import private_dir
from .store.models import Tenant
from .store.repository import Store, hash_key

log = get_logger("tenancy")


def load_admin_token(settings: Settings) -> tuple[str, Path | None]:
    """The admin token from ``GRAFT_ADMIN_TOKEN``, else from (or newly into) ``<data>/admin-token``.

    Returns the token and, when it lives in a file, that file's path.
    """
    if settings.admin_token:
        return settings.admin_token, None
    path = settings.data_path / "admin-token"
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), path
    token = "gfa_" + secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    log.info("generated an admin token", extra={"path": str(path)})
    return token, path


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class Auth:
    """Bearer tokens → admin or tenant. Valid keys are remembered for ``cache_ttl_s`` (by hash), so
    the hot path makes no store query; a revoked key or disabled tenant is refused within that time."""

    def __init__(self, store: Store, admin_token: str, cache_ttl_s: float = 0.0) -> None:
        self.store = store
        self._admin_token = admin_token
        self._known: TTLCache[str, Tenant] = TTLCache(cache_ttl_s, max_entries=10_000)

    def is_admin(self, token: str | None) -> bool:
        return token is not None and secrets.compare_digest(token.encode(), self._admin_token.encode())

    def forget(self) -> None:
        """A key was revoked or a tenant disabled: drop every remembered key, so this process
        refuses it from the next request on (other processes within the cache TTL)."""
        self._known.clear()

    def tenant(self, token: str | None) -> Tenant | None:
        if not token:
            return None
        digest = hash_key(token)
        tenant = self._known.get(digest)
        if tenant is None:
            asked = self._known.now()
            tenant = self.store.tenant_for_key(token)
            if tenant is not None:
                self._known.put(digest, tenant, at=asked)
        return tenant
