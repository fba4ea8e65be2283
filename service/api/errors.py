"""Every error leaves as ``{"error": {"code", "message"}}`` with a 4xx/5xx status; no stack traces."""

from __future__ import annotations

import math
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.training import TrainingDataError

from .. import logs
from ..batching import Overloaded
from ..logs import get as get_logger
from ..quotas import QuotaExceeded
from ..router import NotTrained, VersionFailed
from ..store.repository import Conflict, NotFound, QueueFull

log = get_logger("api")

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "validation_error",
                 429: "rate_limited", 503: "unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _location(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "body"


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {}).get("error", "")
        return 400, "malformed_json", f"the request body is not valid JSON{': ' + detail if detail else ''}"
    shown = [f"{_location(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "validation_error", "; ".join(shown) + more


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        about_body = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in exc.errors())
        if about_body and request.method in ("POST", "PUT", "PATCH") and "json" not in content_type and "multipart" not in content_type:
            return error_response(415, "unsupported_media_type", f"send a JSON body with 'Content-Type: application/json' (got {content_type or 'none'!r})")
        status, code, message = _validation_message(exc)
        return error_response(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        return error_response(exc.status_code, _STATUS_CODES.get(exc.status_code, "error"), message, exc.headers)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(NotTrained)
    async def _not_trained(_: Request, exc: NotTrained) -> JSONResponse:
        return error_response(409, "not_trained", str(exc))

    @app.exception_handler(VersionFailed)
    async def _version_failed(_: Request, exc: VersionFailed) -> JSONResponse:
        return error_response(503, "version_failed", str(exc))

    @app.exception_handler(TrainingDataError)
    async def _training_data(_: Request, exc: TrainingDataError) -> JSONResponse:
        return error_response(422, "validation_error", str(exc))

    @app.exception_handler(QuotaExceeded)
    async def _quota(_: Request, exc: QuotaExceeded) -> JSONResponse:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))} if exc.retry_after_s is not None else None
        return error_response(exc.status, exc.code, str(exc), headers)

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return error_response(429, "too_many_jobs", str(exc), {"Retry-After": str(math.ceil(exc.retry_after_s))})

    @app.exception_handler(OperationalError)
    @app.exception_handler(SQLAlchemyTimeout)
    async def _store_unavailable(_: Request, exc: Exception) -> JSONResponse:
        # the database is unreachable, full or read-only: nothing was committed (one transaction per write)
        log.error("store unavailable", extra={"error": type(exc).__name__})
        return error_response(503, "store_unavailable", "the store is unavailable; nothing was changed, retry shortly", {"Retry-After": "5"})

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return error_response(503, "overloaded", f"Graft is overloaded ({exc}); retry after {retry} s", {"Retry-After": retry})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logs.exception(log, "unhandled error", exc)
        return error_response(500, "internal_error", "internal error; the request id in X-Request-ID identifies it in the logs")
