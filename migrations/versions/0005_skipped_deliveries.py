"""deliveries.status `skipped`: the rows of readers who left after the audience was fixed

They used to end `failed` with a fixed error text, which every query then had
to tell apart from real failures.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The text those rows carried (newsletter.delivery.ledger.LEFT_BEFORE_SENDING), copied
# here because a migration must not change when the code does.
LEFT_BEFORE_SENDING = "not sent: the subscriber left or paused after the send started"


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE deliveries SET status = 'skipped' WHERE status = 'failed' AND last_error = :left"
        ).bindparams(left=LEFT_BEFORE_SENDING)
    )


def downgrade() -> None:
    op.execute("UPDATE deliveries SET status = 'failed' WHERE status = 'skipped'")
