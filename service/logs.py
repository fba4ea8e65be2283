"""Structured JSON logs carrying the request, job and tenant ids of the current context.

Logs never carry API keys or example payloads: callers log counts and ids only.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)
tenant_id: ContextVar[str | None] = ContextVar("tenant_id", default=None)

_CONTEXT = {"request_id": request_id, "job_id": job_id, "tenant_id": tenant_id}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, var in _CONTEXT.items():
            value = var.get()
            if value is not None:
                entry[key] = value
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str = "INFO", as_json: bool = True) -> None:
    """Route Graft's loggers (and BentoML's) through one JSON handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    for name in ("graft", "bentoml", "bentoml.access", "_bentoml_impl", "_bentoml_sdk"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    logging.getLogger("graft").setLevel(level.upper())
    logging.getLogger("bentoml.access").setLevel(logging.WARNING)  # graft.http logs each request with its id


def exception(logger: logging.Logger, msg: str, exc: BaseException, **extra: object) -> None:
    """Log an unexpected exception. A database error is logged by its type and SQL shape only: its
    driver message can quote the row (PostgreSQL's DETAIL does), i.e. customer data."""
    from sqlalchemy.exc import DBAPIError  # the store is always installed; kept lazy for import time

    if isinstance(exc, DBAPIError):
        logger.error(msg, extra={**extra, "error": type(exc.orig).__name__, "sql": (exc.statement or "")[:300]})
    else:
        logger.error(msg, exc_info=exc, extra=extra)


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"graft.{name}")
