"""Examples' labels as Text: a kind's encoded structure (entity spans, detection objects) or a completion can
be longer than a class name's 256 characters (the kinds bound it: ``STRUCTURED_LABEL_CHARS``).

Revision ID: 0009_label_text
Revises: 0008_loop
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_label_text"
down_revision: str | None = "0008_loop"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.alter_column("label", existing_type=sa.String(length=256), type_=sa.Text(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("examples", schema=None) as batch_op:
        batch_op.alter_column("label", existing_type=sa.Text(), type_=sa.String(length=256), existing_nullable=False)
