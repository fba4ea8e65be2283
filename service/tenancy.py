"""Who is calling: the admin token, and tenants identified by their API keys."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .caching import TTLCache
from .config import Settings
from .logs import get as get_logger
from .store.db import private_dir
from .store.models import Tenant
from .store.repository import Store, hash_key

log = get_logger("tenancy")

ROLES = ("predict", "write", "owner")  # each may do what the ones before it may
ADMIN_TOKEN_MIN_CHARS = 32
ADMIN_TOKEN_MIN_DISTINCT = 12


def weak_admin_token(token: str) -> str | None:
    """Why an admin token from the environment is too weak to use, or None. A generated token
    (``gfa_`` + 256 random bits) passes; so does ``openssl rand -hex 32``."""
    if len(token) < ADMIN_TOKEN_MIN_CHARS:
        return f"it has {len(token)} characters; at least {ADMIN_TOKEN_MIN_CHARS} are needed"
    if len(set(token)) < ADMIN_TOKEN_MIN_DISTINCT:
        return f"it has {len(set(token))} distinct characters; at least {ADMIN_TOKEN_MIN_DISTINCT} are needed"
    return None


def role_allows(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the admin (``tenant`` None), or a tenant through one of its keys."""

    tenant: Tenant | None
    key_id: str | None = None
    role: str = "admin"

    @property
    def is_admin(self) -> bool:
        return self.tenant is None


def load_admin_token(settings: Settings) -> tuple[str, Path | None]:
    """The admin token from ``GRAFT_ADMIN_TOKEN``, else from (or newly into) ``<data>/admin-token``.

    Returns the token and, when it lives in a file, that file's path.
    """
    if settings.admin_token:
        weak = weak_admin_token(settings.admin_token)
        if weak:
            raise ValueError(
                f"GRAFT_ADMIN_TOKEN is too weak: {weak}. Use a random token (e.g. `openssl rand -hex 32`), "
                "or unset it to have one generated into <GRAFT_DATA_DIR>/admin-token"
            )
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
        self._known: TTLCache[str, Caller] = TTLCache(cache_ttl_s, max_entries=10_000)

    def is_admin(self, token: str | None) -> bool:
        return token is not None and secrets.compare_digest(token.encode(), self._admin_token.encode())

    def forget(self) -> None:
        """A key was revoked or a tenant disabled: drop every remembered key, so this process
        refuses it from the next request on (other processes within the cache TTL)."""
        self._known.clear()

    def identify(self, token: str | None) -> Caller | None:
        """The admin, a tenant's key (with its id and role), or None for a missing or unknown token."""
        if not token:
            return None
        if self.is_admin(token):
            return Caller(None)
        digest = hash_key(token)
        caller = self._known.get(digest)
        if caller is None:
            asked = self._known.now()
            found = self.store.key_for(token)
            if found is not None:
                caller = Caller(found[0], found[1].id, found[1].role)
                self._known.put(digest, caller, at=asked)
        return caller

    def known(self, token: str | None) -> Caller | None:
        """The caller if it is the admin or a key remembered from a recent lookup; None means "ask
        :meth:`identify`" (no store query here, so the event loop may call it)."""
        if not token:
            return None
        if self.is_admin(token):
            return Caller(None)
        return self._known.get(hash_key(token))

    def tenant(self, token: str | None) -> Tenant | None:
        caller = self.identify(token) if token and not self.is_admin(token) else None
        return caller.tenant if caller else None


class Throttle:
    """Token buckets of failures: ``burst`` failures at once, refilled at ``rate`` a second."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.rate, self.burst, self.clock, self.max_keys = rate, max(1, burst), clock, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def blocked(self, *keys: str) -> float | None:
        """Seconds until the first of ``keys`` may fail again, if any is spent; else None."""
        if self.rate <= 0:
            return None
        with self._lock:
            now = self.clock()
            waits = [(1.0 - level) / self.rate for level in (self._level(k, now) for k in keys) if level < 1.0]
        return max(waits) if waits else None

    def fail(self, *keys: str) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # forgetting refunds at most one burst per key
            for key in keys:
                self._buckets[key] = (max(0.0, self._level(key, now) - 1.0), now)
