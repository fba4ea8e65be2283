"""API key roles: ``api_keys.role`` (owner, write, predict); existing keys become ``owner``.

Revision ID: 0004_key_roles
Revises: 0003_task_kinds
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_key_roles"
down_revision: str | None = "0003_task_kinds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_role() -> bool:
    """A database that ``create_all`` made from the current models (then stamped at the baseline) has it."""
    return "role" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("api_keys")}


def upgrade() -> None:
    if _has_role():
        return
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), server_default="owner", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("role")
