"""The client's retry logic: 429 and 503 are retried, waiting what ``Retry-After`` asks.

A small local HTTP server plays the part of an overloaded Graft (it answers a scripted sequence of
statuses), because what is tested is the client's behaviour, not the server's."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from graft import AsyncGraft, Graft, errors
from tests.conftest import free_port

TASKS = {"tasks": []}


class Script:
    """Answers in order: (status, headers); the last one repeats. Records when each request came."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.seen: list[tuple[float, str, str]] = []


@pytest.fixture
def stub() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            script.seen.append((time.monotonic(), self.command, self.headers.get("authorization", "")))
            status, headers = script.answers[min(len(script.seen), len(script.answers)) - 1]
            body = json.dumps(
                TASKS if status < 400 else {"error": {"code": f"code_{status}", "message": f"status {status}"}}
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        do_GET = do_POST = _answer

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


def gaps(script: Script) -> list[float]:
    times = [t for t, _, _ in script.seen]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def test_503_then_200_waits_retry_after(stub) -> None:
    url, script = stub
    script.answers = [(503, {"Retry-After": "1"}), (200, {})]
    with Graft(url, "k", backoff=0.01) as g:  # the backoff alone would retry after 10 ms
        assert g.list_tasks() == []
    assert len(script.seen) == 2 and script.seen[0][2] == "Bearer k"
    assert 0.9 <= gaps(script)[0] < 3


def test_429_is_retried_with_backoff_then_raised_typed(stub) -> None:
    url, script = stub
    script.answers = [(429, {"Retry-After": "0"})]
    with Graft(url, "k", max_retries=2) as g, pytest.raises(errors.RateLimited) as raised:
        g.list_tasks()
    assert len(script.seen) == 3  # the first try and 2 retries
    assert (raised.value.status, raised.value.code, raised.value.retry_after) == (429, "code_429", 0.0)

    script.seen.clear()
    script.answers = [(503, {}), (503, {}), (200, {})]  # no Retry-After: exponential backoff with jitter
    with Graft(url, "k", backoff=0.2) as g:
        assert g.list_tasks() == []
    first, second = gaps(script)
    assert 0.1 <= first < 1 and 0.2 <= second < 2


def test_other_errors_are_not_retried(stub) -> None:
    url, script = stub
    script.answers = [(500, {}), (200, {})]
    with Graft(url, "k") as g, pytest.raises(errors.ServerError) as raised:
        g.list_tasks()
    assert len(script.seen) == 1 and raised.value.status == 500 and not isinstance(raised.value, errors.Unavailable)


def test_retry_after_is_capped(stub) -> None:
    url, script = stub
    script.answers = [(503, {"Retry-After": "3600"}), (200, {})]
    started = time.monotonic()
    with Graft(url, "k", max_backoff=0.5) as g:
        assert g.list_tasks() == []
    assert time.monotonic() - started < 3


def test_the_async_client_retries_too(stub) -> None:
    url, script = stub
    script.answers = [(429, {"Retry-After": "1"}), (503, {"Retry-After": "0"}), (200, {})]

    async def run() -> list:
        async with AsyncGraft(url, "k", backoff=0.01) as g:
            return await g.list_tasks()

    assert asyncio.run(run()) == []
    assert len(script.seen) == 3 and 0.9 <= gaps(script)[0] < 3


def test_a_refused_connection_is_retried_then_raised() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with Graft(url, "k", max_retries=2, backoff=0.1) as g, pytest.raises(errors.ConnectionFailed) as raised:
        g.list_tasks()
    assert raised.value.code == "connect_error" and time.monotonic() - started >= 0.1


def test_retry_after_as_an_http_date() -> None:
    from email.utils import formatdate

    assert 8 <= errors.parse_retry_after(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert errors.parse_retry_after("2") == 2.0 and errors.parse_retry_after("soon") is None


def test_error_classes_by_status_and_code() -> None:
    def parse(status: int, code: str) -> errors.GraftError:
        return errors.from_response(
            status, json.dumps({"error": {"code": code, "message": "m"}}).encode(), {"X-Request-ID": "r1"}
        )

    assert (
        type(parse(403, "quota_exceeded")) is errors.QuotaExceeded and type(parse(403, "forbidden")) is errors.Forbidden
    )
    assert type(parse(409, "not_trained")) is errors.NotTrained and type(parse(409, "conflict")) is errors.Conflict
    assert type(parse(503, "overloaded")) is errors.Unavailable and type(parse(502, "error")) is errors.ServerError
    assert type(parse(418, "teapot")) is errors.GraftError and parse(418, "teapot").status == 418
    assert parse(404, "not_found").request_id == "r1"
    plain = errors.from_response(502, b"<html>bad gateway</html>")  # a proxy's answer, not Graft's shape
    assert type(plain) is errors.ServerError and plain.code == "error" and "bad gateway" in plain.message


@pytest.mark.integration
def test_a_real_servers_rate_limit_is_waited_out(server_factory) -> None:
    """Graft's predict rate limit (1 request/s, burst 2) answers 429 with Retry-After; the client waits
    and gets through. (The token is spent before the task is looked up, so an unknown task will do.)"""
    srv = server_factory(GRAFT_PREDICT_RATE_PER_S="1", GRAFT_PREDICT_BURST="2")
    with Graft(srv.url, srv.admin_token) as admin:
        key = admin.create_tenant("limited").api_key
    with Graft(srv.url, key, max_retries=0) as impatient:
        for _ in range(2):
            with pytest.raises(errors.NotFound):
                impatient.predict("nope", "text")
        with pytest.raises(errors.RateLimited) as limited:
            impatient.predict("nope", "text")
    assert limited.value.code == "rate_limited" and limited.value.retry_after >= 1
    started = time.monotonic()
    with Graft(srv.url, key, backoff=0.01) as patient:
        for _ in range(3):
            with pytest.raises(errors.NotFound):  # got past the limiter every time
                patient.predict("nope", "text")
    assert time.monotonic() - started >= 0.9  # at most 2 tokens saved: the third waited Retry-After (1 s)
