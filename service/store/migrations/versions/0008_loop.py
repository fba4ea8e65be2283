"""Closing the loop: examples copied from feedback (``examples.source``, ``feedback.promoted``), a per-task
retrain policy (``tasks.retrain_after_feedback``), shadow versions (``tasks.shadow_version``/``shadow_share``
and the ``shadow_predictions`` table). docs/monitoring.md.

Revision ID: 0008_loop
Revises: 0006_feedback
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_loop"
down_revision: str | None = "0006_feedback"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    tables = sa.inspect(op.get_bind()).get_table_names()
    if "shadow_predictions" in tables:  # made by create_all from the current models
        return
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=16), server_default="user", nullable=False))
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.add_column(sa.Column("promoted", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retrain_after_feedback", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("shadow_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("shadow_share", sa.Float(), nullable=True))
    op.create_table(
        "shadow_predictions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=False),
        sa.Column("prediction_id", sa.String(length=32), nullable=False),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("active_answer", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("shadow_predictions", schema=None) as batch_op:
        batch_op.create_index("ix_shadow_task_created", ["task_id", "created_at"], unique=False)
        batch_op.create_index("ix_shadow_task_prediction", ["task_id", "prediction_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_shadow_predictions_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("shadow_predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shadow_predictions_tenant_id"))
        batch_op.drop_index("ix_shadow_task_prediction")
        batch_op.drop_index("ix_shadow_task_created")
    op.drop_table("shadow_predictions")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("shadow_share")
        batch_op.drop_column("shadow_version")
        batch_op.drop_column("retrain_after_feedback")
    with op.batch_alter_table("feedback", schema=None) as batch_op:
        batch_op.drop_column("promoted")
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.drop_column("source")
