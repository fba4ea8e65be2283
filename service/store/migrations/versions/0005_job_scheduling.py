"""Fair job scheduling: ``tenants.last_claimed_at`` (claims go round-robin across tenants).

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


def _has_column() -> bool:
    """A database that ``create_all`` made from the current models (then stamped at the baseline) has it."""
    return "last_claimed_at" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("tenants")}


def upgrade() -> None:
    if _has_column():
        return
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("last_claimed_at")
