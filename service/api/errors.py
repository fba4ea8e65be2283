"""Every error leaves as ``{"error": {"code", "message"}}`` with a 4xx/5xx status; no stack traces."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.generation import GenerationLimitError
from adapters.training import TrainingDataError

from .. import audio, datasets, images, logs
from ..application.errors import ExportInProgress, Invalid, NotExportable, TooLarge
from ..application.quotas import InvalidForLimits, QuotaExceeded
from ..application.task_rules import InvalidTask
from ..batching import Overloaded
from ..logs import get as get_logger
from ..ratelimit import RateLimited
from ..router import NotTrained, VersionFailed, WrongKind
from ..store.repository import Conflict, KeyLimit, NotFound, QueueFull

log = get_logger("api")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _retry_after(exc: Exception) -> float | None:
    return getattr(exc, "retry_after_s", None)


@dataclass(frozen=True)
class Answer:
    """How the API answers one exception type: status, code, and optionally its own message and
    Retry-After seconds (default: the exception's text, and its ``retry_after_s`` when it has one)."""

    status: int
    code: str
    message: Callable[[Exception], str] = str
    retry_after: Callable[[Exception], float | None] = _retry_after
    log: str | None = None  # logged as an error with the exception's type (the client cannot fix it)


def _overloaded(exc: Exception) -> str:
    return f"Graft is overloaded ({exc}); retry after {max(1, math.ceil(_retry_after(exc) or 0))} s"


_STORE_DOWN = Answer(
    503,
    "store_unavailable",
    lambda _: "the store is unavailable; nothing was changed, retry shortly",
    lambda _: 5,
    log="store unavailable",
)  # unreachable, full or read-only: nothing was committed

# THE table: every domain exception the API answers, by type (the most derived type listed wins). Only
# this layer knows statuses; a domain exception that has a ``code`` must have the same one here
# (tests/service/test_errors_table.py checks).
ANSWERS: dict[type[Exception], Answer] = {
    NotFound: Answer(404, "not_found"),
    Conflict: Answer(409, "conflict"),
    KeyLimit: Answer(409, "too_many_keys"),
    NotTrained: Answer(409, "not_trained"),
    WrongKind: Answer(409, WrongKind.code),
    GenerationLimitError: Answer(422, GenerationLimitError.code),
    VersionFailed: Answer(503, "version_failed"),
    TrainingDataError: Answer(422, "validation_error"),
    InvalidTask: Answer(422, InvalidTask.code),
    Invalid: Answer(422, Invalid.code),
    TooLarge: Answer(413, TooLarge.code),
    NotExportable: Answer(422, NotExportable.code),
    ExportInProgress: Answer(429, ExportInProgress.code),
    QuotaExceeded: Answer(403, QuotaExceeded.code),
    InvalidForLimits: Answer(422, InvalidForLimits.code),
    RateLimited: Answer(429, RateLimited.code),
    QueueFull: Answer(429, "too_many_jobs"),
    Overloaded: Answer(503, "overloaded", _overloaded),
    OperationalError: _STORE_DOWN,
    SQLAlchemyTimeout: _STORE_DOWN,
    datasets.DatasetError: Answer(422, datasets.DatasetError.code),
    datasets.DatasetTooLarge: Answer(413, datasets.DatasetTooLarge.code),
    datasets.UnsupportedDataset: Answer(415, datasets.UnsupportedDataset.code),
    images.ImageError: Answer(422, images.ImageError.code),
    images.UnsupportedFormat: Answer(415, images.UnsupportedFormat.code),
    images.ImageTooLarge: Answer(413, images.ImageTooLarge.code),
    audio.AudioError: Answer(422, audio.AudioError.code),
    audio.UnsupportedAudio: Answer(415, audio.UnsupportedAudio.code),
    audio.AudioTooLarge: Answer(413, audio.AudioTooLarge.code),
}


def answer_for(exc: Exception) -> Answer | None:
    """The table's row for ``exc``: its own type's, else its nearest listed base class's."""
    for cls in type(exc).__mro__:
        if cls in ANSWERS:
            return ANSWERS[cls]
    return None


def table_answer(exc: Exception) -> tuple[int, str, str, dict[str, str] | None] | None:
    """(status, code, message, headers) of the table's row for ``exc`` (logged when the row says so),
    or None when ``exc`` is not a domain error the table lists."""
    answer = answer_for(exc)
    if answer is None:
        return None
    if answer.log:
        log.error(answer.log, extra={"error": type(exc).__name__})
    retry = answer.retry_after(exc)
    headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry is not None else None
    return answer.status, answer.code, answer.message(exc), headers


async def _from_table(_: Request, exc: Exception) -> JSONResponse:
    found = table_answer(exc)
    if found is None:  # registered for the table's types only
        raise exc
    return error_response(*found)


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
        if (
            about_body
            and request.method in ("POST", "PUT", "PATCH")
            and "json" not in content_type
            and "multipart" not in content_type
        ):
            return error_response(
                415,
                "unsupported_media_type",
                f"send a JSON body with 'Content-Type: application/json' (got {content_type or 'none'!r})",
            )
        status, code, message = _validation_message(exc)
        return error_response(status, code, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such endpoint"
        return error_response(exc.status_code, _STATUS_CODES.get(exc.status_code, "error"), message, exc.headers)

    for exc_type in ANSWERS:
        app.add_exception_handler(exc_type, _from_table)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logs.exception(log, "unhandled error", exc)
        return error_response(
            500, "internal_error", "internal error; the request id in X-Request-ID identifies it in the logs"
        )
