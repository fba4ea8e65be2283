"""The real PostgreSQL the tests use: 127.0.0.1:5432, trust auth (`.ci/run` starts it when it is down).

Each test gets a schema or a database of its own, dropped afterwards. PostgreSQL being
unreachable fails the tests that need it, with a message saying so — never a skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

URL = make_url(os.environ.get("GRAFT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))


def _autocommit(database: str) -> Engine:
    return create_engine(URL.set(database=database), isolation_level="AUTOCOMMIT", poolclass=NullPool)


def _execute(database: str, *statements: str) -> None:
    engine = _autocommit(database)
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    except OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL is needed at {URL.render_as_string()} (run .ci/run, which starts it): {exc.orig}"
        ) from None
    finally:
        engine.dispose()


def _name() -> str:
    return f"graft_t_{secrets.token_hex(6)}"


def as_string(url) -> str:  # type: ignore[no-untyped-def]
    return url.render_as_string(hide_password=False)


@contextmanager
def temp_schema() -> Iterator[str]:
    """A fresh schema in the test database; yields a URL whose search_path is that schema."""
    name = _name()
    _execute(URL.database or "test", f'CREATE SCHEMA "{name}"')
    try:
        yield as_string(URL.update_query_dict({"options": f"-csearch_path={name}"}))
    finally:
        _execute(URL.database or "test", f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@contextmanager
def temp_database() -> Iterator[str]:
    """A fresh database (for servers in other processes); dropped even while they still hold connections."""
    name = _name()
    _execute("postgres", f'CREATE DATABASE "{name}"')
    try:
        yield as_string(URL.set(database=name))
    finally:
        _execute("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
