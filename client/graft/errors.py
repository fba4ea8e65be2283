"""Typed exceptions for Graft's error answers (``{"error": {"code", "message"}}``).

Every answer with a 4xx/5xx status becomes a :class:`GraftError` subclass chosen by status,
carrying the server's ``code`` and ``message``; a failed training job is :class:`JobFailed`, and
an unreachable server :class:`ConnectionFailed`.
"""

from __future__ import annotations

import json


class GraftError(Exception):
    """Any error from Graft or from talking to it."""

    status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str = "error",
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.request_id, self.retry_after = message, code, request_id, retry_after
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status else ""
        return f"{self.code}: {self.message}{where}"


class BadRequest(GraftError):
    """400: malformed request (e.g. invalid JSON or multipart)."""

    status = 400


class Unauthorized(GraftError):
    """401: missing or invalid API key (or admin token)."""

    status = 401


class Forbidden(GraftError):
    status = 403


class QuotaExceeded(Forbidden):
    """403 ``quota_exceeded``: a tenant limit (tasks, examples, labels) is reached; retrying will not help."""


class NotFound(GraftError):
    """404: no such task, job or version for this tenant (another tenant's is 404 too)."""

    status = 404


class Conflict(GraftError):
    """409: e.g. the task already exists, or it has no trained version yet (code ``not_trained``)."""

    status = 409


class NotTrained(Conflict):
    """409 ``not_trained``: the task has no trained version yet (wait for its job)."""


class TooLarge(GraftError):
    """413: too many inputs or examples, or a too large upload."""

    status = 413


class UnsupportedMediaType(GraftError):
    status = 415


class ValidationError(GraftError):
    """422: the request is well-formed but invalid (the message names the field)."""

    status = 422


class RateLimited(GraftError):
    """429: over a quota; ``retry_after`` says when to retry (the client retries by itself first)."""

    status = 429


class ServerError(GraftError):
    """5xx other than 503."""

    status = 500


class Unavailable(ServerError):
    """503: starting, stopping or overloaded; retried by the client before it is raised."""

    status = 503


class ConnectionFailed(GraftError):
    """The server could not be reached (refused, timed out, DNS)."""


class JobFailed(GraftError):
    """A training job ended with status ``failed``; ``job`` is its final state."""

    def __init__(self, job: object, message: str) -> None:
        super().__init__(message, code="job_failed")
        self.job = job


BY_STATUS: dict[int, type[GraftError]] = {
    cls.status: cls  # type: ignore[misc]
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NotFound,
        Conflict,
        TooLarge,
        UnsupportedMediaType,
        ValidationError,
        RateLimited,
        Unavailable,
    )
}

BY_CODE: dict[str, type[GraftError]] = {"quota_exceeded": QuotaExceeded, "not_trained": NotTrained}


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def from_response(status: int, body: bytes, headers: dict[str, str] | None = None) -> GraftError:
    """The typed exception for an error answer; bodies that are not Graft's error shape still map by status."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    code, message = "error", body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    try:
        error = json.loads(body)["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else GraftError)
    if code in BY_CODE and issubclass(BY_CODE[code], cls):
        cls = BY_CODE[code]
    return cls(
        message,
        code=code,
        status=status,
        request_id=headers.get("x-request-id"),
        retry_after=parse_retry_after(headers.get("retry-after")),
    )
