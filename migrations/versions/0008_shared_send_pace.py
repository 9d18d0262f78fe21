"""send_pace and send_breakers: one pace and one failure breaker for every worker

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import newsletter.core.clock

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Both start empty: workers create the rows they need (a full bucket, a fresh breaker).
    op.create_table(
        "send_pace",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("second_tokens", sa.Float(), nullable=True),
        sa.Column("hour_tokens", sa.Float(), nullable=True),
        sa.Column("refilled_at", newsletter.core.clock.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "send_breakers",
        sa.Column("edition_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("failing_in_a_row", sa.Integer(), nullable=False),
        sa.Column("updated_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"]),
        sa.PrimaryKeyConstraint("edition_id"),
    )


def downgrade() -> None:
    op.drop_table("send_breakers")
    op.drop_table("send_pace")
