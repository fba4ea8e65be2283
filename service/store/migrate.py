"""Schema migrations (Alembic, revisions in ``migrations/versions``), applied when a process starts.

Several replicas may start at once. Each takes a lock before looking at the schema — a PostgreSQL
advisory lock, or SQLite's write lock (``BEGIN IMMEDIATE``) — and upgrades inside that same
transaction: one replica migrates, the others wait and then find the schema at head. DDL is
transactional on both backends, so a migration that fails leaves the previous schema whole.

``python -m service.store.migrate [upgrade|check]`` runs the same from a shell (e.g. a one-off
Kubernetes Job before a rollout); ``check`` exits 1 when the models and the migrated schema differ.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, func, inspect, select
from sqlalchemy.engine import Connection

from . import db

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_xact_lock key shared by every Graft process on a database ("graft_db" in ASCII).
LOCK_KEY = 0x67726166745F6462
# The revision equal to the schema the first releases made with ``create_all`` (no version table).
BASELINE = "0001"
# Alembic's ``context``/``op`` are module globals: one migration at a time per process.
_alembic_in_use = threading.Lock()


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write ``UTCDateTime`` columns as plain ``sa.DateTime(timezone=True)`` in new revisions, so
    migrations never import the models (a revision must not change when the models do)."""
    from .models import UTCDateTime

    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def configure_context(context: Any, connection: Connection, metadata: MetaData) -> None:
    """Options shared by upgrades and autogenerate (batch mode lets SQLite alter tables)."""
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )


def head() -> str:
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None, "no migrations found"
    return revision


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``, holding the migration lock for the whole transaction."""
    with _alembic_in_use, engine.execution_options(**db.WRITE).connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(LOCK_KEY)))
        cfg = config()
        cfg.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        if "tenants" in tables and "alembic_version" not in tables:
            command.stamp(cfg, BASELINE)  # made by create_all before migrations existed
        command.upgrade(cfg, revision)


def differences(engine: Engine) -> list[Any]:
    """What autogenerate would change to make the database match the models (empty = in sync)."""
    from .models import Base

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "target_metadata": Base.metadata})
        return compare_metadata(context, Base.metadata)


def main(argv: list[str]) -> int:
    from ..config import Settings

    action = argv[0] if argv else "upgrade"
    if action not in {"upgrade", "check"}:
        print("usage: python -m service.store.migrate [upgrade|check]", file=sys.stderr)
        return 2
    engine = db.create(Settings.from_env().resolved_database_url)
    try:
        if action == "upgrade":
            upgrade(engine)
            print(f"schema at {current(engine)}")
            return 0
        diff = differences(engine)
        for item in diff:
            print(item)
        at = current(engine)
        print(f"schema at {at}, head is {head()}; {len(diff)} difference(s) from the models")
        return 0 if not diff and at == head() else 1
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
