"""Request body size, enforced before anything parses the body.

A raw ASGI middleware, after the auth gate (:mod:`.gate`): a declared ``Content-Length`` over the
limit is refused at once; every body without one (chunked) is counted as it streams — JSON bodies
are read here up to the limit and replayed, uploads are passed on and counted as they are read
(413 past the limit). The limit is chosen by the *matched route* (never by how a path ends): the
upload routes (dataset, multipart predict) may send ``GRAFT_MAX_UPLOAD_BYTES``; every other body,
``GRAFT_MAX_REQUEST_BYTES``.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from .errors import ApiError
from .gate import matched_route

UPLOAD_ROUTES = frozenset({"/v1/tasks/{name}/dataset", "/v1/tasks/{name}/predict/files"})  # route templates (POST)


def is_upload(scope: Scope) -> bool:
    route = matched_route(scope)
    return route is not None and getattr(route, "path", None) in UPLOAD_ROUTES


def _settings(scope: Scope) -> Settings:
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    return runtime.settings if runtime is not None else Settings.from_env()


async def _too_large(send: Send, limit: int, size: int | None) -> None:
    said = f"the request body is {size} bytes" if size is not None else "the request body is larger than the limit"
    body = json.dumps({"error": {"code": "too_large", "message": f"{said}; the limit is {limit} bytes"}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        settings = _settings(scope)
        upload = is_upload(scope)
        limit = settings.max_upload_bytes if upload else settings.max_request_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared:
            if not declared.isdigit():
                await self._bad_length(send)
                return
            if int(declared) > limit:
                await _too_large(send, limit, int(declared))
                return
        if upload or declared:
            await self.app(scope, _counted(receive, limit), send)
            return
        # no Content-Length: read the body here, counting, and replay it
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await _too_large(send, limit, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    @staticmethod
    async def _bad_length(send: Send) -> None:
        body = json.dumps({"error": {"code": "bad_request", "message": "Content-Length is not a number"}}).encode()
        await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then the client's own messages (a disconnect, later)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _counted(receive: Receive, limit: int) -> Receive:
    """The client's messages, refusing (413) a body that grows past ``limit`` whatever it declared."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, "too_large", f"the request body is larger than the limit of {limit} bytes")
        return message

    return counted
