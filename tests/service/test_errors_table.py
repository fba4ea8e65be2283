"""service/api/errors.py: one table maps domain exceptions to (status, code); the answers are the
same bytes the one-handler-per-exception code gave (clients and tests pin them)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeout

from adapters.training import TrainingDataError
from graft import schemas
from service import datasets, images, ratelimit
from service.api import errors
from service.application import quotas
from service.application.task_rules import InvalidTask
from service.batching import Overloaded
from service.router import NotTrained, VersionFailed
from service.store.repository import Conflict, NotFound


def answer(exc: Exception) -> tuple[int, bytes, str | None]:
    app = FastAPI()
    errors.install(app)

    @app.get("/raise")
    def _raise() -> None:
        raise exc

    with TestClient(app, raise_server_exceptions=False) as client:
        resp = client.get("/raise")
    return resp.status_code, resp.content, resp.headers.get("retry-after")


STORE_DOWN = (
    503,
    b'{"error":{"code":"store_unavailable","message":"the store is unavailable; nothing was changed, retry shortly"}}',
    "5",
)


@pytest.mark.parametrize(
    "exc,expected",
    [
        (NotFound("no task named 'x'"), (404, b'{"error":{"code":"not_found","message":"no task named \'x\'"}}', None)),
        (Conflict("version 2 failed"), (409, b'{"error":{"code":"conflict","message":"version 2 failed"}}', None)),
        (NotTrained("not trained yet"), (409, b'{"error":{"code":"not_trained","message":"not trained yet"}}', None)),
        (VersionFailed("corrupt"), (503, b'{"error":{"code":"version_failed","message":"corrupt"}}', None)),
        (TrainingDataError("2 labels"), (422, b'{"error":{"code":"validation_error","message":"2 labels"}}', None)),
        (quotas.QuotaExceeded("10 tasks"), (403, b'{"error":{"code":"quota_exceeded","message":"10 tasks"}}', None)),
        (
            quotas.InvalidForLimits("label é"),
            (422, '{"error":{"code":"validation_error","message":"label é"}}'.encode(), None),
        ),
        (
            ratelimit.RateLimited("rate", retry_after_s=0.2),
            (429, b'{"error":{"code":"rate_limited","message":"rate"}}', "1"),
        ),
        (
            ratelimit.RateLimited("rate", retry_after_s=2.01),
            (429, b'{"error":{"code":"rate_limited","message":"rate"}}', "3"),
        ),
        (
            Overloaded("queue full", 2.3),
            (
                503,
                b'{"error":{"code":"overloaded","message":"Graft is overloaded (queue full); retry after 3 s"}}',
                "3",
            ),
        ),
        (
            Overloaded("queue full", 0.01),
            (
                503,
                b'{"error":{"code":"overloaded","message":"Graft is overloaded (queue full); retry after 1 s"}}',
                "1",
            ),
        ),
        (OperationalError("SELECT 1", {}, Exception("down")), STORE_DOWN),
        (SQLAlchemyTimeout("pool exhausted"), STORE_DOWN),
        (
            InvalidTask("unknown backbone 'x'"),
            (422, b'{"error":{"code":"validation_error","message":"unknown backbone \'x\'"}}', None),
        ),
        (
            datasets.DatasetError("CSV line 2: bad"),
            (422, b'{"error":{"code":"validation_error","message":"CSV line 2: bad"}}', None),
        ),
        (datasets.DatasetTooLarge("10 rows"), (413, b'{"error":{"code":"too_large","message":"10 rows"}}', None)),
        (
            datasets.UnsupportedDataset("gif"),
            (415, b'{"error":{"code":"unsupported_media_type","message":"gif"}}', None),
        ),
        (
            errors.ApiError(413, "too_large", "big", {"Retry-After": "7"}),
            (413, b'{"error":{"code":"too_large","message":"big"}}', "7"),
        ),
        (
            ValueError("bug"),
            (
                500,
                b'{"error":{"code":"internal_error","message":"internal error; the request id in '
                b'X-Request-ID identifies it in the logs"}}',
                None,
            ),
        ),
    ],
)
def test_each_exception_answers_the_same_bytes(exc: Exception, expected: tuple[int, bytes, str | None]) -> None:
    assert answer(exc) == expected


@pytest.mark.parametrize(
    "exc,status,code",
    [
        (images.NotAnImage("not an image"), 422, "invalid_image"),
        (images.UnsupportedFormat("GIF"), 415, "unsupported_media_type"),
        (images.ImageTooLarge("pixels"), 413, "too_large"),
    ],
)
def test_image_errors_take_their_status_from_the_table(exc: images.ImageError, status: int, code: str) -> None:
    found = errors.answer_for(exc)
    assert found is not None and (found.status, found.code) == (status, code)
    assert not hasattr(exc, "status")  # the domain exception knows its code, not an HTTP status


def test_domain_codes_agree_with_the_table() -> None:
    """A domain exception's own ``code`` is the table's; subclasses resolve to their nearest listed type."""
    ours = {t: row for t, row in errors.ANSWERS.items() if t.__module__.split(".")[0] in ("service", "adapters")}
    assert {quotas.QuotaExceeded, InvalidTask, images.ImageError, datasets.DatasetError} <= set(ours)
    for exc_type, row in ours.items():
        if hasattr(exc_type, "code"):
            assert exc_type.code == row.code, exc_type  # type: ignore[attr-defined]
    assert errors.answer_for(images.NotAnImage("x")) is errors.ANSWERS[images.ImageError]
    assert errors.answer_for(KeyError("x")) is None
    for raised in (
        quotas.QuotaExceeded("x"),
        quotas.InvalidForLimits("x"),
        ratelimit.RateLimited("x"),
        datasets.DatasetTooLarge("x"),
    ):
        assert not hasattr(raised, "status")


NUL, SURROGATE = "must not contain NUL (\\u0000) characters", "must be valid unicode (no lone surrogates)"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("fine", None),
        ("", None),
        ("é ü 漢字 🙂", None),
        ("tab\tnew\nline", None),
        ("a\x00b", NUL),
        ("\x00", NUL),
        ("\ud800", SURROGATE),
        ("x\udfffy", SURROGATE),
    ],
)
def test_the_quota_check_refuses_what_the_json_edge_refuses(value: str, problem: str | None) -> None:
    """One storability rule for both: the quota check (files that never pass the JSON edge) applies the
    core's copy (adapters.kinds: the core may not import the client), which must answer as the client's does."""
    assert quotas.unstorable(value) == schemas.unstorable(value) == problem
