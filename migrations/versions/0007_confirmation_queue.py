"""confirmation_queue: confirmation emails queued with the sign-up, sent by a worker

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import newsletter.core.clock

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "confirmation_queue",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("claimed_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.Column("previous_sent_at", newsletter.core.clock.UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.Column("leased_by", sa.String(length=200), nullable=True),
        sa.Column("leased_until", newsletter.core.clock.UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscriber_id"),
    )
    op.create_index(
        op.f("ix_confirmation_queue_next_attempt_at"),
        "confirmation_queue",
        ["next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_confirmation_queue_next_attempt_at"), table_name="confirmation_queue")
    op.drop_table("confirmation_queue")
