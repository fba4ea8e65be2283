"""Crash safety with real processes: kill -9 at chosen points, restart, check the store.

A test-only hook (``GRAFT_FAULT_POINT``, :mod:`service.faults`) stops the server at a named point
with its transaction open; the test then kills the whole process tree with SIGKILL and restarts it
on the same data. After every restart: the previously active version serves, no partial version
or half-written upload is visible, the interrupted job is retried (never stuck running), and the
SQLite file passes its integrity check. A second test cuts the PostgreSQL connection (a TCP proxy
the test controls): requests get a clear 503, nothing is half-written, and the service recovers.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, wait_for_job
from tests.integration.test_api import TOY
from tests.postgres import temp_database

pytestmark = pytest.mark.integration


def wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the fault point was not reached: {path.name}"
        time.sleep(0.1)


def rows(db: Path, sql: str, *args) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, args).fetchall()


def restart_at(srv: Server, point: str | None, marker: Path) -> None:
    """Kill -9 the server (and its workers), then start it again with the next fault point."""
    srv.stop(signal.SIGKILL)
    marker.unlink(missing_ok=True)
    srv.env.pop("GRAFT_FAULT_POINT", None)
    if point:
        srv.env["GRAFT_FAULT_POINT"] = point
    srv.start()


def in_background(call) -> threading.Thread:
    """A request the fault point will stop forever (until the kill): fire it and move on."""

    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            call()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_kill_9_during_training_commit_switch_and_upload(server_factory, tmp_path) -> None:
    data = tmp_path / "data"
    marker = tmp_path / "fault"
    db = data / "graft.db"
    srv = server_factory(data, GRAFT_FAULT_POINT="training:2", GRAFT_FAULT_MARKER=str(marker), GRAFT_JOB_LEASE_S="3")
    c = srv.new_tenant("crash")
    first = c.post("/v1/tasks", json={"name": "t", "examples": TOY}).json()["job"]["id"]
    assert wait_for_job(c, first)["status"] == "succeeded"

    # 1. during training: the second job's head is fitted, nothing written yet
    job = c.post("/v1/tasks/t/examples", json={"examples": TOY[:2]}).json()["job"]["id"]
    wait_for(marker)
    restart_at(srv, "version_commit", marker)
    assert c.post("/v1/tasks/t/predict", json={"inputs": ["so happy"]}).json()["version"] == 1  # v1 serves at once

    # 2. during the version commit: the retried job wrote version 2 and switched to it, uncommitted
    wait_for(marker)  # the lease expired, the job was reclaimed and trained again
    srv.stop(signal.SIGKILL)
    # checked while no process runs: once restarted, the third attempt may commit version 2 at once
    assert rows(db, "SELECT number FROM versions") == [(1,)]  # no partial version
    assert rows(db, "SELECT active_version FROM tasks WHERE name = 't'") == [(1,)]
    restart_at(srv, "version_switch", marker)
    done = wait_for_job(c, job)  # third attempt, after the lease: retried, not stuck
    assert done["status"] == "succeeded" and done["version"] == 2, done
    assert rows(db, "SELECT attempts FROM jobs WHERE id = ?", job) == [(3,)]

    # 3. during a version switch: a rollback to v1 written, uncommitted
    in_background(lambda: c.post("/v1/tasks/t/rollback", timeout=60))
    wait_for(marker)
    restart_at(srv, "examples_commit", marker)
    assert c.get("/v1/tasks/t").json()["active_version"] == 2  # the switch never happened
    assert c.post("/v1/tasks/t/predict", json={"inputs": ["so happy"]}).json()["version"] == 2

    # 4. during a dataset upload: rows of a new task written, uncommitted
    examples_before = rows(db, "SELECT count(*) FROM examples")
    csv = "input,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(6))
    in_background(lambda: c.post("/v1/tasks/up/dataset", content=csv, headers={"content-type": "text/csv"}, timeout=60))
    wait_for(marker)
    restart_at(srv, None, marker)
    assert c.get("/v1/tasks/up").status_code == 404  # no half-made task
    assert rows(db, "SELECT count(*) FROM examples") == examples_before
    assert rows(db, "SELECT status, count(*) FROM jobs GROUP BY status") == [("succeeded", 2)]
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    # and everything works again
    upload = c.post("/v1/tasks/up/dataset", content=csv, headers={"content-type": "text/csv"})
    assert upload.status_code == 202 and upload.json()["examples"] == 6, upload.text
    assert c.post("/v1/tasks/t/rollback").json()["active_version"] == 1


class Proxy:
    """A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones refused)
    and restore on the same port."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = 0
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self) -> None:
        assert self.listener is not None
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread (close alone does not)
        self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_database_unavailable_is_a_503_and_the_service_recovers(server_factory, tmp_path) -> None:
    from sqlalchemy.engine import make_url

    with temp_database() as url:
        real = make_url(url)
        proxy = Proxy((real.host or "127.0.0.1", real.port or 5432))
        via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        srv = server_factory(
            tmp_path / "data", GRAFT_DATABASE_URL=via_proxy, GRAFT_TRAINING_WORKERS="0", GRAFT_TASK_CACHE_TTL_S="0"
        )
        c = srv.new_tenant("outage")
        assert c.post("/v1/tasks", json={"name": "kept", "examples": TOY}).status_code == 202
        proxy.cut()
        for resp in (
            c.post("/v1/tasks", json={"name": "lost", "examples": TOY}),
            c.post("/v1/tasks/kept/examples", json={"examples": TOY}),
            c.get("/v1/tasks"),
            c.post("/v1/tasks/kept/predict", json={"inputs": ["hi"]}),
        ):
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["code"] == "store_unavailable" and resp.headers["retry-after"], resp.text
            assert "psycopg" not in resp.text and "SELECT" not in resp.text and "127.0.0.1" not in resp.text
        proxy.restore()
        deadline = time.monotonic() + 30
        while (listed := c.get("/v1/tasks")).status_code != 200:
            assert time.monotonic() < deadline, listed.text
            time.sleep(0.5)
        assert [t["name"] for t in listed.json()["tasks"]] == ["kept"]  # nothing half-written
        assert c.get("/v1/tasks/kept").json()["examples_per_label"] == {"neg": 2, "pos": 2}
        assert c.post("/v1/tasks", json={"name": "after", "examples": TOY}).status_code == 202
        srv.stop()
        proxy.cut()
