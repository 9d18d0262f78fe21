"""suppressions: mailboxes that get no digest; subscribers.mailbox, the key they are found by

Existing rows get their mailbox computed here, and every subscriber already
`bounced` or `complained` becomes a suppression, so an upgrade protects them
at once.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import newsletter.core.clock
from subscribers.addresses import mailbox_of

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 1000


def upgrade() -> None:
    # A plain ALTER TABLE, also on SQLite: batch mode would copy the table and
    # lose its expression index (unique lower(email)), which SQLite cannot reflect.
    op.add_column(
        "subscribers",
        sa.Column("mailbox", sa.String(length=320), nullable=False, server_default=""),
    )
    op.create_index("ix_subscribers_mailbox", "subscribers", ["mailbox"], unique=False)
    suppressions = op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.Column("lifted_at", newsletter.core.clock.UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("address"),
    )
    _fill_mailboxes_and_suppressions(suppressions)


def _fill_mailboxes_and_suppressions(suppressions: sa.Table) -> None:
    connection = op.get_bind()
    subscribers = sa.table(
        "subscribers",
        sa.column("id", sa.Integer()),
        sa.column("email", sa.String()),
        sa.column("mailbox", sa.String()),
        sa.column("status", sa.String()),
        sa.column("bounced_at", newsletter.core.clock.UtcDateTime()),
        sa.column("updated_at", newsletter.core.clock.UtcDateTime()),
    )
    blocked: dict[str, dict[str, object]] = {}
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(
                subscribers.c.id,
                subscribers.c.email,
                subscribers.c.status,
                subscribers.c.bounced_at,
                subscribers.c.updated_at,
            )
            .where(subscribers.c.id > last_id)
            .order_by(subscribers.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        connection.execute(
            sa.update(subscribers)
            .where(subscribers.c.id == sa.bindparam("row_id"))
            .values(mailbox=sa.bindparam("row_mailbox")),
            [{"row_id": row.id, "row_mailbox": mailbox_of(row.email)} for row in rows],
        )
        for row in rows:
            if row.status in ("bounced", "complained"):
                # A complaint outweighs a bounce of the same mailbox.
                mailbox = mailbox_of(row.email)
                if blocked.get(mailbox, {}).get("reason") != "complained":
                    blocked[mailbox] = {
                        "address": mailbox,
                        "reason": row.status,
                        "note": f"subscriber {row.email} was {row.status} before suppressions existed",
                        "created_at": row.bounced_at or row.updated_at or datetime.now(UTC),
                    }
        last_id = rows[-1].id
    if blocked:
        connection.execute(sa.insert(suppressions), list(blocked.values()))


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("ix_subscribers_mailbox", table_name="subscribers")
    op.drop_column("subscribers", "mailbox")  # SQLite has ALTER TABLE DROP COLUMN since 3.35
