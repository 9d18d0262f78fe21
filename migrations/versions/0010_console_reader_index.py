"""The console's readers list: filtered by status, paged by address

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Keyset paging of one status's readers in address order reads this index alone.
    op.create_index(
        "ix_subscribers_status_email_lower",
        "subscribers",
        ["status", sa.text("lower(email)")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_subscribers_status_email_lower", table_name="subscribers")
