"""The catalog's tables: resource versions by revision, API keys, and the Extract/Load jobs the API started."""

import sqlalchemy as sa

metadata = sa.MetaData()

revisions = sa.Table(
    "catalog_revisions",
    metadata,
    sa.Column("revision", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("actor_id", sa.String(64), nullable=True),
)
"""One row per change: an entry's version lives from the revision that wrote it to the one that replaced it."""

entries = sa.Table(
    "catalog_entries",
    metadata,
    sa.Column("row_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("entry_id", sa.String(64), nullable=False),
    sa.Column("provider_id", sa.String(64), nullable=True),  # the owner, for provider-scoped keys
    sa.Column("body", sa.Text, nullable=False),  # the config entry as JSON, secrets sealed
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.String(32), nullable=False),
    sa.Column("from_revision", sa.Integer, nullable=False),
    sa.Column("to_revision", sa.Integer, nullable=True),  # null: the live version
    sa.Column("status", sa.Text, nullable=True),  # JSON: last connectivity result (is_reachable), not config
    sa.Index(
        "catalog_entries_live",
        "kind",
        "entry_id",
        unique=True,
        sqlite_where=sa.text("to_revision IS NULL"),
        postgresql_where=sa.text("to_revision IS NULL"),
    ),
    sa.Index("catalog_entries_from", "from_revision"),
    sa.Index("catalog_entries_to", "to_revision"),
)

api_keys = sa.Table(
    "catalog_api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),  # SHA-256 of the whole key
    sa.Column("provider_id", sa.String(64), nullable=True),  # null: the company's key, every provider
    sa.Column("label", sa.String(200), nullable=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked_at", sa.String(32), nullable=True),
)

jobs = sa.Table(
    "catalog_jobs",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # extract | load
    sa.Column("target_id", sa.String(64), nullable=False),  # the dataset or the stream
    sa.Column("provider_id", sa.String(64), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=True),  # the Dagster run doing the work
    sa.Column("submitted_at", sa.String(32), nullable=False),
    sa.Column("actor_id", sa.String(64), nullable=True),
    sa.Column("record_ids", sa.Text, nullable=True),  # JSON list, loads of chosen records
    sa.Column("error", sa.Text, nullable=True),  # JSON error object when it could not be launched
    sa.Index("catalog_jobs_target", "kind", "target_id", "submitted_at"),
)

push_sources = sa.Table(
    "push_sources",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # Connect's integer source id
    sa.Column("source_id", sa.String(64), nullable=False, unique=True),
    sa.Column("provider_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
)
"""An Import API source's integer id (Connect's ``id`` and the ``client_id`` its pushes carry)."""

push_tokens = sa.Table(
    "push_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source_id", sa.String(64), nullable=False, index=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),  # SHA-256 of the token
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked_at", sa.String(32), nullable=True),
    sa.Index("push_tokens_source", "source_id"),
)
"""Import API access tokens: at most two live per source (rotation), shown once, stored hashed."""
