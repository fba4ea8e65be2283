"""Alembic environment. The service calls it through :func:`service.store.migrate.upgrade`, which
hands over a connection already inside a locked transaction; the ``alembic`` CLI (see
``service/store/alembic.ini``) gets a connection of its own from ``GRAFT_DATABASE_URL``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from service.store.migrate import configure_context
from service.store.models import Base


def run(connection: Connection) -> None:
    configure_context(context, connection, Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    from service.config import Settings
    from service.store import db

    engine = db.create(Settings.from_env().resolved_database_url)
    try:
        with engine.connect() as connection:
            run(connection)
            connection.commit()
    finally:
        engine.dispose()
