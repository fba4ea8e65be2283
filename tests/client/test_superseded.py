"""Waiting on a job that a newer job of the same task replaced follows the newer job to its end
(the client, against a small local server playing Graft's job endpoint)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from graft import Graft, errors
from tests.conftest import free_port


def job(job_id: str, status: str, **extra: object) -> dict:
    return {
        "id": job_id,
        "task": "news",
        "status": status,
        "progress": 1.0 if status == "succeeded" else 0.0,
        "error": None,
        "version": 2 if status == "succeeded" else None,
        "created_at": "2026-12-04T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        **extra,
    }


@pytest.fixture
def jobs() -> Iterator[tuple[str, dict[str, list[dict]]]]:
    """Each job id answers its list of states in order (the last one repeats)."""
    states: dict[str, list[dict]] = {}
    asked: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            job_id = self.path.rsplit("/", 1)[-1]
            asked[job_id] = asked.get(job_id, 0) + 1
            found = states.get(job_id)
            status, body = (
                (200, found[min(asked[job_id], len(found)) - 1])
                if found
                else (404, {"error": {"code": "not_found", "message": f"no job {job_id}"}})
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", states
    httpd.shutdown()
    httpd.server_close()


def test_waiting_follows_the_job_that_superseded_it(jobs) -> None:
    url, states = jobs
    states["job_a"] = [
        job("job_a", "queued"),
        job("job_a", "superseded", superseded_by="job_b", error="replaced by job_b"),
    ]
    states["job_b"] = [job("job_b", "running"), job("job_b", "succeeded")]
    with Graft(url, "k", poll_interval=0.01, progress=False) as g:
        done = g.wait("job_a", timeout=10)
    assert done.id == "job_b" and done.status == "succeeded" and done.version == 2


def test_a_superseded_job_without_a_successor_is_reported(jobs) -> None:
    url, states = jobs
    states["job_a"] = [job("job_a", "superseded", error="replaced")]
    with Graft(url, "k", poll_interval=0.01, progress=False) as g, pytest.raises(errors.JobFailed, match="superseded"):
        g.wait("job_a", timeout=10)
