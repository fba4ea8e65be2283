"""Who is calling: the admin token, and tenants identified by their API keys."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from .config import Settings
from .logs import get as get_logger
from .store.models import Tenant
from .store.repository import Store

log = get_logger("tenancy")


def load_admin_token(settings: Settings) -> tuple[str, Path | None]:
    """The admin token from ``GRAFT_ADMIN_TOKEN``, else from (or newly into) ``<data>/admin-token``.

    Returns the token and, when it lives in a file, that file's path.
    """
    if settings.admin_token:
        return settings.admin_token, None
    path = settings.data_path / "admin-token"
    path.parent.mkdir(parents=True, exist_ok=True)
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
    def __init__(self, store: Store, admin_token: str) -> None:
        self.store = store
        self._admin_token = admin_token

    def is_admin(self, token: str | None) -> bool:
        return token is not None and secrets.compare_digest(token.encode(), self._admin_token.encode())

    def tenant(self, token: str | None) -> Tenant | None:
        return self.store.tenant_for_key(token) if token else None
