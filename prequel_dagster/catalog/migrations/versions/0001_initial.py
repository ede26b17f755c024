"""The first catalog schema: entries by revision, API keys, jobs.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "catalog_revisions",
        sa.Column("revision", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=True),
    )
    op.create_table(
        "catalog_entries",
        sa.Column("row_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("entry_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
        sa.Column("from_revision", sa.Integer, nullable=False),
        sa.Column("to_revision", sa.Integer, nullable=True),
        sa.Column("status", sa.Text, nullable=True),
    )
    op.create_index(
        "catalog_entries_live",
        "catalog_entries",
        ["kind", "entry_id"],
        unique=True,
        sqlite_where=sa.text("to_revision IS NULL"),
        postgresql_where=sa.text("to_revision IS NULL"),
    )
    op.create_index("catalog_entries_from", "catalog_entries", ["from_revision"])
    op.create_index("catalog_entries_to", "catalog_entries", ["to_revision"])
    op.create_table(
        "catalog_api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("provider_id", sa.String(64), nullable=True),
        sa.Column("label", sa.String(200), nullable=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("revoked_at", sa.String(32), nullable=True),
    )
    op.create_table(
        "catalog_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("provider_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("submitted_at", sa.String(32), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("record_ids", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("catalog_jobs_target", "catalog_jobs", ["kind", "target_id", "submitted_at"])


def downgrade() -> None:
    op.drop_table("catalog_jobs")
    op.drop_table("catalog_api_keys")
    op.drop_table("catalog_entries")
    op.drop_table("catalog_revisions")
