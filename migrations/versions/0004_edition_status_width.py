"""editions.status: room for `finished_with_failures` (22 characters)

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite has no ALTER COLUMN, so the (index-free) editions table is copied.
    with op.batch_alter_table("editions") as batch:
        batch.alter_column("status", existing_type=sa.String(length=16), type_=sa.String(length=32))


def downgrade() -> None:
    op.execute("UPDATE editions SET status = 'sent' WHERE status = 'finished_with_failures'")
    with op.batch_alter_table("editions") as batch:
        batch.alter_column("status", existing_type=sa.String(length=32), type_=sa.String(length=16))
