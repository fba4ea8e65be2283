"""Engine creation. SQLite gets WAL, a busy timeout, foreign keys and real transactions
(``BEGIN IMMEDIATE`` for writers, so concurrent writers queue instead of failing)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

WRITE = {"graft_write": True}


def create(url: str) -> Engine:
    """An engine whose errors never quote statement parameters (examples, labels): a logged
    database error carries the SQL shape only (``hide_parameters``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, future=True, hide_parameters=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, future=True, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # let the "begin" hook below control transactions
        cur = dbapi_conn.cursor()
        _use_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
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
