"""The FastAPI application: routes, error handlers, request ids."""

from __future__ import annotations

import secrets
import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import logs, metrics
from . import dashboard, errors, routes
from .gate import AuthGate
from .limits import BodyLimit

log = logs.get("http")


class RequestContext:
    """Give every request an id (``X-Request-ID``, kept from the client if sane) and log it as JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = incoming if 0 < len(incoming) <= 64 and incoming.replace("-", "").isalnum() else secrets.token_hex(8)
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            route = scope.get("route")  # set by the router: its template keeps the label set bounded
            metrics.observe_request(
                getattr(route, "path", "unmatched"), scope["method"], status, time.perf_counter() - started
            )
            logs.request_id.reset(token)


def create() -> FastAPI:
    app = FastAPI(
        title="Graft",
        version="0.1.0",
        description="Multi-tenant transfer learning: shared pretrained backbones, per-tenant task heads.",
    )
    app.include_router(routes.router)
    dashboard.install(app)
    errors.install(app)
    app.add_middleware(BodyLimit)  # inside RequestContext: a refused body still gets an id and a log line
    app.add_middleware(AuthGate)  # before BodyLimit: nobody's body is read before they are authenticated
    app.add_middleware(RequestContext)
    return app
