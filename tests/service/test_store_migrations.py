"""Alembic migrations, on SQLite and on the real PostgreSQL (`store_url` runs each test on both)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import inspect, text

from service.store import db, migrate
from service.store.models import Base
from service.store.repository import Store

from . import store_replicas
from .test_store import EXAMPLES, new_version


def test_migrations_make_exactly_the_models_schema(store_url: str) -> None:
    engine = db.create(store_url)
    try:
        assert migrate.current(engine) is None
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.head()
        # autogenerate's comparison: tables, columns, types, nullability, indexes, unique and foreign keys
        assert migrate.differences(engine) == []
        assert set(inspect(engine).get_table_names()) == set(Base.metadata.tables) | {"alembic_version"}
    finally:
        engine.dispose()


def test_the_comparison_sees_a_schema_that_drifted(store_url: str) -> None:
    """The check above can fail: a missing index and an extra column are both reported."""
    engine = db.create(store_url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP INDEX ix_jobs_status_created"))
            conn.execute(text("ALTER TABLE tasks ADD COLUMN stray INTEGER"))
        found = {(d[0], d[-1].name) for d in migrate.differences(engine) if isinstance(d, tuple)}
        assert ("add_index", "ix_jobs_status_created") in found and ("remove_column", "stray") in found
    finally:
        engine.dispose()


def test_migrating_again_changes_nothing_and_keeps_data(store: Store, store_url: str) -> None:
    tenant, key = store.create_tenant("acme")
    store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
    again = Store(store_url)
    try:
        again.migrate()
        assert again.tenant_for_key(key).id == tenant.id
        assert len(again.examples(again.get_task(tenant.id, "t").id)) == len(EXAMPLES)
        assert migrate.current(again.engine) == migrate.head()
    finally:
        again.close()


def test_a_database_made_before_migrations_is_adopted(store_url: str) -> None:
    """The foundation created its tables with create_all and no version table: migrate stamps it
    (as the baseline, 0001) and applies the later revisions."""
    engine = db.create(store_url)
    migrate.upgrade(engine, migrate.BASELINE)  # the foundation's tables, as create_all made them then
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        # a row written by that old code (today's models have columns the baseline lacks)
        conn.execute(
            text("INSERT INTO tenants (id, name, disabled, created_at) VALUES ('ten_old', 'old', false, :now)"),
            {"now": datetime.now(UTC)},
        )
    engine.dispose()
    store = Store(store_url)
    try:
        store.migrate()
        assert migrate.current(store.engine) == migrate.head()
        assert [(t.id, t.name) for t in store.list_tenants()] == [("ten_old", "old")]
        assert migrate.differences(store.engine) == []
    finally:
        store.close()


def test_replicas_starting_together_migrate_once(store_url: str) -> None:
    """Four processes (as four replicas) migrate the same empty database at the same moment.
    Without the lock, PostgreSQL fails the losers' CREATE TABLE and SQLite's their version insert."""
    ctx = multiprocessing.get_context("spawn")
    barrier, errors = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=store_replicas.migrate_when_all_ready, args=(store_url, barrier, errors)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    failures = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
    assert failures == []
    store = Store(store_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [migrate.head()]
        assert migrate.differences(store.engine) == []
        tenant, _ = store.create_tenant("acme")  # and the schema works: a full job cycle
        _, job = store.create_task(tenant.id, "t", modality="text", backbone="minilm", head="linear", examples=EXAMPLES)
        assert store.claim_job("w", lease_s=60, max_attempts=3).id == job.id
        assert store.complete_job(job.id, "w", new_version()) == 1
    finally:
        store.close()


def test_migrate_command_upgrades_and_checks(store_url: str, tmp_path) -> None:
    env = {"GRAFT_DATABASE_URL": store_url, "GRAFT_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    check = [sys.executable, "-m", "service.store.migrate", "check"]
    before = subprocess.run(check, env=env, capture_output=True, text=True, timeout=120)
    assert before.returncode == 1 and "schema at None" in before.stdout, before.stdout + before.stderr
    up = subprocess.run(
        [sys.executable, "-m", "service.store.migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert up.returncode == 0 and f"schema at {migrate.head()}" in up.stdout, up.stderr
    after = subprocess.run(check, env=env, capture_output=True, text=True, timeout=120)
    assert after.returncode == 0 and "0 difference(s)" in after.stdout, after.stdout + after.stderr


def test_switching_a_new_sqlite_file_to_wal_retries_while_another_process_holds_it() -> None:
    """SQLite answers "database is locked" at once (no busy wait) to one of two connections switching
    a new file to WAL together — seen as a failed start when replicas share a new file. The switch
    retries; any other error is raised as is."""

    class Cursor:
        def __init__(self, failures: list[str]) -> None:
            self.failures, self.calls = failures, 0

        def execute(self, sql: str) -> None:
            self.calls += 1
            if self.failures:
                raise sqlite3.OperationalError(self.failures.pop(0))

    busy = Cursor(["database is locked", "database is locked"])
    db._use_wal(busy)  # type: ignore[arg-type]
    assert busy.calls == 3
    with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
        db._use_wal(Cursor(["disk I/O error"]))  # type: ignore[arg-type]
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db._use_wal(Cursor(["database is locked"] * 3), attempts=3)  # type: ignore[arg-type]
