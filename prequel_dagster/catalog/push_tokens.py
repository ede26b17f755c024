"""Import API access tokens, as Stitch's Connect API manages them: at most two live per source (so a
client can rotate), the token shown once and stored as its SHA-256, revoked by its integer id."""

import hashlib
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from . import tables as t
from .store import Catalog, CatalogError, now

MAX_ACTIVE_TOKENS = 2
TOKEN_PREFIX = "at_"


class TooManyTokens(CatalogError):
    pass


@dataclass(frozen=True)
class PushSource:
    """An Import API source's integer id (Connect's ``id``, and the ``client_id`` its pushes carry)."""

    id: int
    source_id: str
    provider_id: str
    created_at: str


@dataclass(frozen=True)
class TokenOwner:
    """What a valid token may write to: one source of one provider."""

    token_id: int
    source_id: str
    provider_id: str
    client_id: int


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def push_source(catalog: Catalog, source_id: str, provider_id: str) -> PushSource:
    """The source's integer id, given on first use."""
    with catalog._write_lock, catalog.engine.begin() as c:
        row = c.execute(sa.select(t.push_sources).where(t.push_sources.c.source_id == source_id)).first()
        if row is None:
            stamp = now()
            key = c.execute(
                t.push_sources.insert().values(source_id=source_id, provider_id=provider_id, created_at=stamp)
            ).inserted_primary_key
            assert key is not None
            return PushSource(int(key[0]), source_id, provider_id, stamp)
    return PushSource(row.id, row.source_id, row.provider_id, row.created_at)


def push_source_by_id(catalog: Catalog, id: int) -> PushSource | None:
    with catalog.engine.connect() as c:
        row = c.execute(sa.select(t.push_sources).where(t.push_sources.c.id == id)).first()
    return PushSource(row.id, row.source_id, row.provider_id, row.created_at) if row else None


def push_sources(catalog: Catalog, provider_id: str | None = None) -> list[PushSource]:
    query = sa.select(t.push_sources).order_by(t.push_sources.c.id)
    if provider_id is not None:
        query = query.where(t.push_sources.c.provider_id == provider_id)
    with catalog.engine.connect() as c:
        return [PushSource(r.id, r.source_id, r.provider_id, r.created_at) for r in c.execute(query)]


def create_token(catalog: Catalog, source: PushSource) -> tuple[int, str]:
    """A new token for the source (:class:`TooManyTokens` with two live already): ``(id, token)``."""
    text = f"{TOKEN_PREFIX}{secrets.token_hex(20)}"
    with catalog._write_lock, catalog.engine.begin() as c:
        live = c.execute(
            sa.select(sa.func.count()).where(
                t.push_tokens.c.source_id == source.source_id, t.push_tokens.c.revoked_at.is_(None)
            )
        ).scalar_one()
        if live >= MAX_ACTIVE_TOKENS:
            raise TooManyTokens(
                f"source {source.id} has {MAX_ACTIVE_TOKENS} active access tokens already; revoke one first"
            )
        key = c.execute(
            t.push_tokens.insert().values(source_id=source.source_id, secret_hash=_digest(text), created_at=now())
        ).inserted_primary_key
        assert key is not None
    return int(key[0]), text


def token_ids(catalog: Catalog, source_id: str) -> list[int]:
    """The ids of the source's live tokens (never the tokens)."""
    with catalog.engine.connect() as c:
        rows = c.execute(
            sa.select(t.push_tokens.c.id)
            .where(t.push_tokens.c.source_id == source_id, t.push_tokens.c.revoked_at.is_(None))
            .order_by(t.push_tokens.c.id)
        ).all()
    return [int(r.id) for r in rows]


def revoke_token(catalog: Catalog, source_id: str, token_id: int) -> bool:
    with catalog._write_lock, catalog.engine.begin() as c:
        done = c.execute(
            t.push_tokens.update()
            .where(
                t.push_tokens.c.id == token_id,
                t.push_tokens.c.source_id == source_id,
                t.push_tokens.c.revoked_at.is_(None),
            )
            .values(revoked_at=now())
        )
    return bool(done.rowcount)


_OWNER_OF = (
    sa.select(
        t.push_tokens.c.id,
        t.push_sources.c.source_id,
        t.push_sources.c.provider_id,
        t.push_sources.c.id.label("client_id"),
    )
    .join(t.push_sources, t.push_sources.c.source_id == t.push_tokens.c.source_id)
    .where(t.push_tokens.c.secret_hash == sa.bindparam("digest"), t.push_tokens.c.revoked_at.is_(None))
)
"""Built once: every Import API request asks it."""


def authenticate(catalog: Catalog, text: str) -> TokenOwner | None:
    """The source a live token writes to, or None."""
    with catalog.engine.connect() as c:
        row = c.execute(_OWNER_OF, {"digest": _digest(text)}).first()
    return TokenOwner(int(row.id), row.source_id, row.provider_id, int(row.client_id)) if row else None
