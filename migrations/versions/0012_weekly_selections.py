"""Weekly digests: a selection may leave out "For you" and carry the week's trending papers

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "selections",
        sa.Column("for_you", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.add_column("selections", sa.Column("trending", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE DROP COLUMN, as in 0009.
    op.drop_column("selections", "trending")
    op.drop_column("selections", "for_you")
