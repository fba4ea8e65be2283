"""The outermost ASGI layer, around BentoML's own app: every error leaves as JSON.

BentoML routes requests to Graft's FastAPI app by a path pattern that does not match every path
(one with a newline, e.g.); such requests, and anything else BentoML answers itself, would get a
plain-text error. This middleware rewrites any non-JSON 4xx/5xx into ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import _STATUS_CODES  # noqa: PLC2701  (one table of codes)

MESSAGES = {404: "no such endpoint", 405: "method not allowed on this endpoint"}


class JsonErrors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting: Message | None = None

        async def send_json(message: Message) -> None:
            nonlocal rewriting
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers") or [])
                if message["status"] >= 400 and b"json" not in headers.get(b"content-type", b""):
                    rewriting = message
                    return
            elif rewriting is not None and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                status = rewriting["status"]
                text = MESSAGES.get(status, "request failed" if status < 500 else "internal error")
                body = json.dumps({"error": {"code": _STATUS_CODES.get(status, "error"), "message": text}}).encode()
                kept = [
                    (k, v)
                    for k, v in rewriting.get("headers") or []
                    if k.lower() not in (b"content-type", b"content-length")
                ]
                await send(
                    {
                        **rewriting,
                        "headers": [
                            *kept,
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_json)
