"""Engine creation. SQLite gets WAL, ``synchronous=FULL`` (a committed write — a just-issued key —
survives power loss), a busy timeout, foreign keys and real transactions (``BEGIN IMMEDIATE`` for
writers, so concurrent writers queue instead of failing). Its directory is created 0700 and the
database file 0600 (SQLite gives its -wal and -shm files the database file's mode)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

WRITE = {"graft_write": True}


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) readable by this user only (0700), whatever the umask.
    An existing directory keeps its mode: it may be a volume whose permissions the operator set."""
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # another process created it first
            pass
        else:
            os.chmod(path, 0o700)  # mkdir's mode is masked by the umask; make it exactly 0700
    return path


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (SQLite would create it 0644)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def create(url: str) -> Engine:
    """An engine whose errors never quote statement parameters (examples, labels): a logged
    database error carries the SQL shape only (``hide_parameters``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, future=True, hide_parameters=True)

    if parsed.database and parsed.database != ":memory:":
        private_dir(Path(parsed.database).parent)
        private_file(Path(parsed.database))
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, future=True, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let the "begin" hook below control transactions
        cur = dbapi_conn.cursor()
        _use_wal(cur)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("graft_write") else "BEGIN")

    return engine


def _use_wal(cur: sqlite3.Cursor, attempts: int = 50) -> None:
    """Switch the file to WAL (persistent, so a no-op after the first time). Processes opening a new
    file at the same moment can get "database is locked" here at once, without SQLite's busy
    handler waiting (its deadlock avoidance), so retry for up to a few seconds."""
    for attempt in range(attempts):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
