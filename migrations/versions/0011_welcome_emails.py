"""confirmation_queue.kind: the queue also carries the welcome email sent after confirming

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("confirmation_queue") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="confirm")
        )


def downgrade() -> None:
    with op.batch_alter_table("confirmation_queue") as batch:
        batch.drop_column("kind")
