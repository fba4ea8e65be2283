"""Task kinds: ``tasks.kind`` (classification, multilabel, regression); existing tasks are classification.

Revision ID: 0003_task_kinds
Revises: 0002_tenant_security
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_task_kinds"
down_revision: str | None = "0002_tenant_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _has_kind() -> bool:
    """A database that ``create_all`` made from the current models (then stamped at the baseline) has it."""
    return "kind" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("tasks")}


def upgrade() -> None:
    if _has_kind():
        return
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.String(length=16), server_default="classification", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("kind")
