"""received_signups: each sign-up written before its answer, deleted as it is recorded

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "received_signups",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_received_signups_received_at", "received_signups", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_received_signups_received_at", table_name="received_signups")
    op.drop_table("received_signups")
