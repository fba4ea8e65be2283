"""Authentication before any body is read.

An ASGI middleware in front of the body limit and the routes: it matches the request to its route,
reads which caller the route needs from the route's own dependencies (``admin``, ``tenant``,
``writer``, ``admin_or_owner``), resolves the bearer token (admin token or an API key, through the
runtime's :class:`~service.tenancy.Auth`) and answers 401 — or 403 for a key whose role is too
low — without reading a byte of the body. Failed authentications are throttled per client address
and per key prefix (token buckets; 429 with Retry-After once spent). The caller it found is left
in the request state for the route's dependencies.
"""

from __future__ import annotations

import json
import math
from typing import Any

import anyio.to_thread
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from ..tenancy import Caller, Throttle, bearer, role_allows
from .errors import table_answer

CALLER = "graft_caller"  # key of the resolved caller in the ASGI scope's state
ROUTE = "graft_route"  # key of the matched route in the ASGI scope


def matched_route(scope: Scope) -> BaseRoute | None:
    """The API route that fully matches this request (None: 404 or 405, or a page outside the API
    such as the dashboard or the OpenAPI document: the app answers)."""
    if ROUTE in scope:
        return scope[ROUTE]
    from .routes import ROUTES

    found = None
    for route in ROUTES:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            found = route
            break
    scope[ROUTE] = found
    return found


_NEEDS: dict[int, str | None] = {}


def needs(route: BaseRoute | None) -> str | None:
    """``admin``, ``owner`` (the admin or an owner key), ``write``, ``predict``, or None (public)."""
    if route is None:
        return None
    if id(route) not in _NEEDS:
        from .routes import deps, tenants

        calls = _calls(getattr(route, "dependant", None))
        if deps.admin in calls:
            need = "admin"
        elif tenants.admin_or_owner in calls:
            need = "owner"
        elif deps.writer in calls:
            need = "write"
        elif deps.tenant in calls:
            need = "predict"
        else:
            need = None
        _NEEDS[id(route)] = need
    return _NEEDS[id(route)]


def _calls(dependant: Any) -> set[Any]:
    out: set[Any] = set()
    for dep in getattr(dependant, "dependencies", ()):
        out.add(dep.call)
        out |= _calls(dep)
    return out


async def _refuse(send: Send, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


UNAUTHORIZED = {
    "admin": "this call needs the admin token as 'Authorization: Bearer <token>'",
    "owner": "missing or invalid API key; send 'Authorization: Bearer <api_key>'",
    "write": "missing or invalid API key; send 'Authorization: Bearer <api_key>'",
    "predict": "missing or invalid API key; send 'Authorization: Bearer <api_key>'",
}


class AuthGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
        if scope["type"] != "http" or runtime is None or not runtime.ready:
            await self.app(scope, receive, send)  # starting or stopping: the routes answer 503
            return
        need = needs(matched_route(scope))
        if need is None:
            await self.app(scope, receive, send)
            return
        token = bearer(dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1") or None)
        client = scope.get("client")
        keys = [f"addr:{client[0] if client else '-'}"] + ([f"key:{token[:8]}"] if token else [])
        throttle: Throttle = runtime.auth_throttle
        wait = throttle.blocked(*keys)
        if wait is not None:
            retry = max(1, math.ceil(wait))
            await _refuse(
                send,
                429,
                "rate_limited",
                f"too many failed authentications from this client or for this key; retry after {retry} s",
                {"Retry-After": str(retry)},
            )
            return
        caller: Caller | None = runtime.auth.known(token)  # the hot path: no thread hop, no query
        if caller is None:
            try:
                caller = await anyio.to_thread.run_sync(runtime.auth.identify, token)
            except (
                Exception
            ) as exc:  # e.g. the store is unreachable: the table's answer (503), never a dropped connection
                found = table_answer(exc)
                if found is None:
                    raise
                await _refuse(send, *found)
                return
        if caller is None:
            throttle.fail(*keys)
            await _refuse(send, 401, "unauthorized", UNAUTHORIZED[need])
            return
        if need == "admin" and not caller.is_admin:
            await _refuse(send, 401, "unauthorized", UNAUTHORIZED[need])
            return
        if need in ("write", "predict") and caller.is_admin:
            await _refuse(send, 401, "unauthorized", "this call needs a tenant's API key, not the admin token")
            return
        if need in ("owner", "write", "predict") and not caller.is_admin and not role_allows(caller.role, need):
            await _refuse(
                send,
                403,
                "forbidden",
                f"this call needs an API key with role '{need}' (or higher); this key's role is '{caller.role}'",
            )
            return
        scope.setdefault("state", {})[CALLER] = caller
        await self.app(scope, receive, send)
