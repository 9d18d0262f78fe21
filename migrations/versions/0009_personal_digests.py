"""Personal digests: readers' interests and choices, judged papers, corpus terms, selections

Revision ID: 0009
Revises: 0008
"""

import warnings
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import newsletter.core.clock

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "corpus_terms",
        sa.Column("term", sa.String(length=200), nullable=False),
        sa.Column("papers", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("term"),
    )
    op.create_table(
        "reader_papers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=False),
        sa.Column("paper_key", sa.String(length=80), nullable=False),
        sa.Column("arxiv_id", sa.String(length=32), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("abstract", sa.Text(), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.Column("updated_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reader_papers_subscriber_id", "reader_papers", ["subscriber_id"])
    op.create_index(
        "uq_reader_papers_subscriber_paper",
        "reader_papers",
        ["subscriber_id", "paper_key"],
        unique=True,
    )
    op.create_table(
        "selections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("picks", sa.JSON(), nullable=False),
        sa.Column("created_at", newsletter.core.clock.UtcDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("edition_id", "fingerprint", name="uq_selections_edition_fingerprint"),
    )
    op.create_index("ix_selections_edition_id", "selections", ["edition_id"])
    # A plain ALTER TABLE, also on SQLite: batch mode would copy the whole ledger
    # (slow on a large list) and reflect the subscribers table's expression
    # index, which SQLite cannot. SQLite takes REFERENCES on a new NULL column;
    # Alembic only adds a constraint separately, which SQLite has no ALTER for.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE deliveries ADD COLUMN selection_id INTEGER REFERENCES selections (id)")
    else:
        op.add_column("deliveries", sa.Column("selection_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            "fk_deliveries_selection_id", "deliveries", "selections", ["selection_id"], ["id"]
        )
    op.add_column("papers", sa.Column("indexed_terms", sa.JSON(), nullable=True))
    op.add_column(
        "papers", sa.Column("indexed_at", newsletter.core.clock.UtcDateTime(), nullable=True)
    )
    for column in (
        sa.Column("interests", sa.Text(), server_default="", nullable=False),
        sa.Column("digest_mode", sa.String(length=16), server_default="personal", nullable=False),
        sa.Column("personal_count", sa.Integer(), server_default="5", nullable=False),
        sa.Column("frequency", sa.String(length=16), server_default="daily", nullable=False),
        sa.Column("weekly_day", sa.Integer(), server_default="0", nullable=False),
    ):
        op.add_column("subscribers", column)


def downgrade() -> None:
    # Plain ALTER TABLE DROP COLUMN (SQLite has it since 3.35): batch mode would
    # copy the tables and lose the subscribers table's expression index.
    for name in ("weekly_day", "frequency", "personal_count", "digest_mode", "interests"):
        op.drop_column("subscribers", name)
    op.drop_column("papers", "indexed_at")
    op.drop_column("papers", "indexed_terms")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("fk_deliveries_selection_id", "deliveries", type_="foreignkey")
        op.drop_column("deliveries", "selection_id")
    else:
        # SQLite refuses to drop a column that a REFERENCES clause names, so the
        # ledger is copied. Reflecting it also reflects the subscribers table it
        # refers to, whose expression index SQLite cannot describe: a warning
        # about a table this copy does not touch.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Skipped unsupported reflection", sa.exc.SAWarning)
            with op.batch_alter_table("deliveries") as batch:
                batch.drop_column("selection_id")
    op.drop_index("ix_selections_edition_id", table_name="selections")
    op.drop_table("selections")
    op.drop_index("uq_reader_papers_subscriber_paper", table_name="reader_papers")
    op.drop_index("ix_reader_papers_subscriber_id", table_name="reader_papers")
    op.drop_table("reader_papers")
    op.drop_table("corpus_terms")
