"""feedback_events: bounces and complaints reported after sending

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import newsletter.core.clock

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feedback_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedupe_key", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("occurred_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.Column("created_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"]),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index(
        "ix_feedback_events_address",
        "feedback_events",
        ["address", "kind", "occurred_at"],
        unique=False,
    )
    op.create_index(
        "ix_feedback_events_delivery_id", "feedback_events", ["delivery_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_feedback_events_delivery_id", table_name="feedback_events")
    op.drop_index("ix_feedback_events_address", table_name="feedback_events")
    op.drop_table("feedback_events")
