"""The application layer's domain errors. Each carries a stable ``code``; the HTTP layer's one table
(service/api/errors.py ``ANSWERS``) gives each its status. Nothing here knows HTTP."""

from __future__ import annotations

from typing import ClassVar


class Invalid(ValueError):
    """The request breaks a business rule (a label that does not fit the task's kind, a text sent to an
    image task…); the message says which and where."""

    code: ClassVar[str] = "validation_error"


class TooLarge(ValueError):
    """The request holds more than a per-request limit allows (inputs, examples, characters)."""

    code: ClassVar[str] = "too_large"


class NotExportable(ValueError):
    """This version cannot be exported (its backbone is not configured or has no ONNX form, or its head
    has no ONNX form)."""

    code: ClassVar[str] = "not_exportable"


class ExportInProgress(Exception):
    """The tenant is already building an export in this process; retry after ``retry_after_s``."""

    code: ClassVar[str] = "export_in_progress"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
