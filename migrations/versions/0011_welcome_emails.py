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


# Plain ALTER TABLE, no batch copy: SQLite adds and (since 3.35) drops a column in place,
# and a batch copy would reflect the subscribers table's expression index, which it cannot.
def upgrade() -> None:
    op.add_column(
        "confirmation_queue",
        sa.Column("kind", sa.String(length=16), nullable=False, server_default="confirm"),
    )


def downgrade() -> None:
    op.drop_column("confirmation_queue", "kind")
