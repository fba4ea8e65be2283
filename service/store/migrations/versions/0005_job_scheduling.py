"""Fair job scheduling: ``tenants.last_claimed_at`` (claims go round-robin across tenants) and
``jobs.superseded_by`` (the newer job that replaced a queued one).

Revision ID: 0005_job_scheduling
Revises: 0004_key_roles
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_job_scheduling"
down_revision: str | None = "0004_key_roles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_column(table: str, column: str) -> bool:
    """A database that ``create_all`` made from the current models (then stamped at the baseline) has it."""
    return column in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    if not _has_column("tenants", "last_claimed_at"):
        with op.batch_alter_table("tenants", schema=None) as batch_op:
            batch_op.add_column(sa.Column("last_claimed_at", sa.DateTime(timezone=True), nullable=True))
    if not _has_column("jobs", "superseded_by"):
        with op.batch_alter_table("jobs", schema=None) as batch_op:
            batch_op.add_column(sa.Column("superseded_by", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("superseded_by")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("last_claimed_at")
