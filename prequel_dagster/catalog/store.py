"""The catalog: resources created through the API, kept by revision in a SQL database.

Every change is a revision. An entry's version lives from the revision that wrote it until the one
that replaced or deleted it, so the catalog can be read *as of* a revision: the code server builds its
definitions from one revision and a run worker builds the same ones from it, whatever changed since.
"""

import base64
import datetime as dt
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ..config.errors import PrequelError
from ..config.loading import KINDS
from . import tables as t
from .crypto import SecretBox
from .secret_fields import seal, unseal

URL_ENV_VAR = "PREQUEL_CATALOG_URL"
STATE_DIR = ".prequel"
DEFAULT_NAME = "catalog.db"
KEY_FILE_NAME = "catalog.key"


class CatalogError(PrequelError):
    """A catalog that cannot be opened or a change it refuses, with the fix."""


class DuplicateId(CatalogError):
    pass


class EntryNotFound(CatalogError):
    pass


class StaleCatalog(CatalogError):
    """Another writer changed the catalog after the caller read it: read again and redo the checks."""


def now() -> str:
    """RFC 3339 UTC with microseconds (sortable as text)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_url(root: Path | None = None) -> str:
    return f"sqlite:///{(root or Path.cwd()) / STATE_DIR / DEFAULT_NAME}"


def catalog_url(environ: Mapping[str, str] | None = None, root: Path | None = None) -> tuple[str, bool]:
    """The catalog's URL and whether it is the default SQLite file."""
    env = os.environ if environ is None else environ
    url = env.get(URL_ENV_VAR)
    return (url, False) if url else (default_url(root), True)


@dataclass(frozen=True)
class StoredEntry:
    """One version of a resource: ``body`` is the config entry (secrets sealed unless said otherwise)."""

    kind: str
    id: str
    provider_id: str | None
    body: dict[str, Any]
    created_at: str
    updated_at: str
    revision: int
    status: dict[str, Any] | None = None


@dataclass(frozen=True)
class ApiKey:
    id: str
    provider_id: str | None
    label: str | None
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class Job:
    """An Extract or a Load the API started: the Dagster run holds its progress and counters."""

    id: str
    kind: str
    target_id: str
    provider_id: str
    run_id: str | None
    submitted_at: str
    actor_id: str | None
    record_ids: list[str] | None
    error: dict[str, Any] | None


@dataclass(frozen=True)
class Changes:
    """What changed after a revision: the live versions written since, and the entries gone since."""

    revision: int
    written: list[StoredEntry]
    removed: list[tuple[str, str]]


KEY_PREFIX = "pqd"


class Catalog:
    """The catalog in one SQL database (SQLite file by default, PostgreSQL by URL)."""

    def __init__(self, engine: Engine, box: "SecretBox | None" = None, key_file: Path | None = None):
        self.engine = engine
        self._box = box
        self._key_file = key_file
        self._write_lock = threading.Lock()  # SQLite has one writer: queue here, not on "database is locked"

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        create: bool = True,
        environ: Mapping[str, str] | None = None,
        root: Path | None = None,
    ) -> "Catalog | None":
        """The catalog at ``url`` (default: ``$PREQUEL_CATALOG_URL``, else ``.prequel/catalog.db``).

        With ``create`` the database is made and migrated to the current schema (Alembic); without
        it, a default SQLite file that does not exist means there is no catalog (None).
        """
        default = False
        if url is None:
            url, default = catalog_url(environ, root)
        key_file = None
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.exists() and not create:
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            if default:
                key_file = path.parent / KEY_FILE_NAME
        try:
            engine = _engine(url)
            catalog = cls(engine, key_file=key_file)
            if create:
                catalog.migrate()
        except sa.exc.SQLAlchemyError as exc:
            raise CatalogError(
                f"cannot open the catalog at {_shown_url(url)}: {str(getattr(exc, 'orig', exc)).splitlines()[0]}; "
                f"check {URL_ENV_VAR}"
            ) from None
        return catalog

    def migrate(self) -> None:
        """Bring the database to the newest schema (Alembic migrations in ``catalog/migrations``)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self._write_lock, self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @property
    def box(self) -> SecretBox:
        """The key that seals secrets (``PREQUEL_CATALOG_KEY``; a key file beside a default SQLite catalog)."""
        if self._box is None:
            self._box = SecretBox.from_environment(key_file=self._key_file)
        return self._box

    def close(self) -> None:
        self.engine.dispose()

    # ------------------------------------------------------------------ revisions and reading

    def revision(self) -> int:
        with self.engine.connect() as c:
            return int(c.execute(sa.select(sa.func.coalesce(sa.func.max(t.revisions.c.revision), 0))).scalar_one())

    def entries(self, revision: int | None = None, *, kinds: tuple[str, ...] = KINDS) -> list[StoredEntry]:
        """Every entry as of ``revision`` (default: the newest), secrets still sealed."""
        e = t.entries.c
        query = sa.select(t.entries).where(e.kind.in_(kinds))
        if revision is None:
            query = query.where(e.to_revision.is_(None))
        else:
            query = query.where(e.from_revision <= revision, sa.or_(e.to_revision.is_(None), e.to_revision > revision))
        with self.engine.connect() as c:
            return [_entry(row) for row in c.execute(query.order_by(e.row_id))]

    def changes_since(self, revision: int) -> Changes:
        """What a reader holding ``revision`` must apply to hold the newest one."""
        e = t.entries.c
        with self.engine.connect() as c:
            newest = int(c.execute(sa.select(sa.func.coalesce(sa.func.max(t.revisions.c.revision), 0))).scalar_one())
            if newest == revision:  # the usual case (every API request asks): one query
                return Changes(newest, [], [])
            written = [
                _entry(row)
                for row in c.execute(
                    sa.select(t.entries)
                    .where(e.from_revision > revision, e.from_revision <= newest)
                    .where(sa.or_(e.to_revision.is_(None), e.to_revision > newest))
                    .order_by(e.row_id)
                )
            ]
            ended = c.execute(
                sa.select(e.kind, e.entry_id).where(e.to_revision > revision, e.to_revision <= newest)
            ).all()
        live = {(w.kind, w.id) for w in written}
        removed = [(k, i) for k, i in ended if (k, i) not in live]
        return Changes(newest, written, removed)

    def get(self, kind: str, id: str) -> StoredEntry | None:
        e = t.entries.c
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(t.entries).where(e.kind == kind, e.entry_id == id, e.to_revision.is_(None))
            ).first()
        return _entry(row) if row is not None else None

    def page(
        self,
        kind: str,
        *,
        provider_id: str | None = None,
        page_size: int = 10,
        descending: bool = False,
        cursor: str | None = None,
    ) -> tuple[list[StoredEntry], str | None]:
        """One page of live entries ordered by creation, and the cursor of the next page (None: last page)."""
        e = t.entries.c
        query = sa.select(t.entries).where(e.kind == kind, e.to_revision.is_(None))
        if provider_id is not None:
            query = query.where(e.provider_id == provider_id)
        order = (e.created_at.desc(), e.entry_id.desc()) if descending else (e.created_at, e.entry_id)
        if cursor:
            at, id = decode_cursor(cursor)
            after = sa.tuple_(e.created_at, e.entry_id)
            query = query.where(after < sa.tuple_(at, id) if descending else after > sa.tuple_(at, id))
        with self.engine.connect() as c:
            rows = c.execute(query.order_by(*order).limit(page_size + 1)).all()
        found = [_entry(r) for r in rows[:page_size]]
        more = len(rows) > page_size
        return found, (encode_cursor(found[-1].created_at, found[-1].id) if more and found else None)

    # ------------------------------------------------------------------ writing

    def create(
        self,
        kind: str,
        id: str,
        provider_id: str | None,
        body: dict[str, Any],
        *,
        actor: str | None = None,
        expected: int | None = None,
    ) -> StoredEntry:
        """Add an entry (``body`` with secrets in clear: they are sealed here). With ``expected``, only
        if the catalog is still at that revision (:class:`StaleCatalog` otherwise)."""
        sealed = seal_entry(kind, body, self)
        stamp = now()
        with self._write_lock, self.engine.begin() as c:
            revision = _new_revision(c, actor, stamp, expected)
            if c.execute(sa.select(t.entries.c.row_id).where(*_live(kind, id))).first() is not None:
                raise DuplicateId(f"a {kind[:-1]} with id '{id}' already exists")
            try:
                c.execute(t.entries.insert().values(_row(kind, id, provider_id, sealed, stamp, stamp, revision)))
            except sa.exc.IntegrityError:
                raise DuplicateId(f"a {kind[:-1]} with id '{id}' already exists") from None
        return StoredEntry(kind, id, provider_id, sealed, stamp, stamp, revision)

    def update(
        self,
        kind: str,
        id: str,
        provider_id: str | None,
        body: dict[str, Any],
        *,
        actor: str | None = None,
        expected: int | None = None,
    ) -> StoredEntry:
        """Replace an entry's body (clear secrets sealed; sealed ones kept as they are)."""
        sealed = seal_entry(kind, body, self)
        stamp = now()
        with self._write_lock, self.engine.begin() as c:
            revision = _new_revision(c, actor, stamp, expected)
            old = c.execute(sa.select(t.entries).where(*_live(kind, id))).first()
            if old is None:
                raise EntryNotFound(f"no {kind[:-1]} with id '{id}'")
            c.execute(t.entries.update().where(t.entries.c.row_id == old.row_id).values(to_revision=revision))
            c.execute(t.entries.insert().values(_row(kind, id, provider_id, sealed, old.created_at, stamp, revision)))
        return StoredEntry(kind, id, provider_id, sealed, old.created_at, stamp, revision)

    def delete(self, kind: str, id: str, *, actor: str | None = None, expected: int | None = None) -> int:
        """End an entry's live version; a provider's API keys are revoked with it (a provider created
        later with the same id must not be reachable with them)."""
        stamp = now()
        with self._write_lock, self.engine.begin() as c:
            revision = _new_revision(c, actor, stamp, expected)
            old = c.execute(sa.select(t.entries.c.row_id).where(*_live(kind, id))).first()
            if old is None:
                raise EntryNotFound(f"no {kind[:-1]} with id '{id}'")
            c.execute(t.entries.update().where(t.entries.c.row_id == old.row_id).values(to_revision=revision))
            if kind == "providers":
                c.execute(
                    t.api_keys.update()
                    .where(t.api_keys.c.provider_id == id, t.api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=stamp)
                )
            if kind == "sources":  # an Import API source's access tokens go with it
                c.execute(
                    t.push_tokens.update()
                    .where(t.push_tokens.c.source_id == id, t.push_tokens.c.revoked_at.is_(None))
                    .values(revoked_at=stamp)
                )
        return revision

    def set_status(self, kind: str, id: str, status: dict[str, Any]) -> None:
        """Record a connectivity result on the live version (not a change of config: no new revision)."""
        with self._write_lock, self.engine.begin() as c:
            c.execute(t.entries.update().where(*_live(kind, id)).values(status=orjson.dumps(status).decode()))

    def rotate_secrets(self) -> int:
        """Seal every stored secret again with the first key of ``PREQUEL_CATALOG_KEY``; how many rows changed."""
        from .secret_fields import rotate_sealed

        changed = 0
        with self._write_lock, self.engine.begin() as c:
            for row in c.execute(sa.select(t.entries.c.row_id, t.entries.c.body)).all():
                body = orjson.loads(row.body)
                rotated = rotate_sealed(body, self.box)
                if rotated != body:
                    c.execute(
                        t.entries.update()
                        .where(t.entries.c.row_id == row.row_id)
                        .values(body=orjson.dumps(rotated).decode())
                    )
                    changed += 1
        return changed

    # ------------------------------------------------------------------ API keys

    def create_key(self, provider_id: str | None = None, label: str | None = None) -> tuple[ApiKey, str]:
        """A new key; its text is returned once and only its SHA-256 is stored."""
        key_id = secrets.token_hex(6)
        text = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, provider_id, label, now(), None)
        with self._write_lock, self.engine.begin() as c:
            c.execute(
                t.api_keys.insert().values(
                    id=key.id,
                    secret_hash=_digest(text),
                    provider_id=provider_id,
                    label=label,
                    created_at=key.created_at,
                )
            )
        return key, text

    def authenticate(self, text: str) -> ApiKey | None:
        """The live key with this text, or None (unknown or revoked)."""
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(t.api_keys).where(
                    t.api_keys.c.secret_hash == _digest(text), t.api_keys.c.revoked_at.is_(None)
                )
            ).first()
        return ApiKey(row.id, row.provider_id, row.label, row.created_at, row.revoked_at) if row else None

    def revoke_key(self, key_id: str) -> bool:
        with self._write_lock, self.engine.begin() as c:
            done = c.execute(
                t.api_keys.update()
                .where(t.api_keys.c.id == key_id, t.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
        return bool(done.rowcount)

    def keys(self) -> list[ApiKey]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(t.api_keys).order_by(t.api_keys.c.created_at)).all()
        return [ApiKey(r.id, r.provider_id, r.label, r.created_at, r.revoked_at) for r in rows]

    # ------------------------------------------------------------------ jobs

    def add_job(self, job: Job) -> None:
        with self._write_lock, self.engine.begin() as c:
            c.execute(
                t.jobs.insert().values(
                    id=job.id,
                    kind=job.kind,
                    target_id=job.target_id,
                    provider_id=job.provider_id,
                    run_id=job.run_id,
                    submitted_at=job.submitted_at,
                    actor_id=job.actor_id,
                    record_ids=orjson.dumps(job.record_ids).decode() if job.record_ids is not None else None,
                    error=orjson.dumps(job.error).decode() if job.error is not None else None,
                )
            )

    def set_job_run(self, id: str, run_id: str) -> None:
        with self._write_lock, self.engine.begin() as c:
            c.execute(t.jobs.update().where(t.jobs.c.id == id).values(run_id=run_id))

    def set_job_error(self, id: str, error: dict[str, Any]) -> None:
        with self._write_lock, self.engine.begin() as c:
            c.execute(t.jobs.update().where(t.jobs.c.id == id).values(error=orjson.dumps(error).decode()))

    def get_job(self, kind: str, id: str) -> Job | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(t.jobs).where(t.jobs.c.kind == kind, t.jobs.c.id == id)).first()
        return _job(row) if row is not None else None

    def page_jobs(
        self,
        kind: str,
        *,
        target_id: str | None = None,
        provider_id: str | None = None,
        page_size: int = 10,
        descending: bool = True,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        j = t.jobs.c
        query = sa.select(t.jobs).where(j.kind == kind)
        if target_id is not None:
            query = query.where(j.target_id == target_id)
        if provider_id is not None:
            query = query.where(j.provider_id == provider_id)
        if cursor:
            at, id = decode_cursor(cursor)
            key = sa.tuple_(j.submitted_at, j.id)
            query = query.where(key < sa.tuple_(at, id) if descending else key > sa.tuple_(at, id))
        order = (j.submitted_at.desc(), j.id.desc()) if descending else (j.submitted_at, j.id)
        with self.engine.connect() as c:
            rows = c.execute(query.order_by(*order).limit(page_size + 1)).all()
        found = [_job(r) for r in rows[:page_size]]
        more = len(rows) > page_size
        return found, (encode_cursor(found[-1].submitted_at, found[-1].id) if more and found else None)


# ---------------------------------------------------------------------- helpers


def seal_entry(kind: str, body: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    from .entries import MODELS

    return seal(MODELS[kind], body, _LazyBox(catalog))


def unseal_entry(kind: str, body: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    from .entries import MODELS

    return unseal(MODELS[kind], body, _LazyBox(catalog))


class _LazyBox:
    """The catalog's key, asked for only when a body holds a secret (most bodies hold none)."""

    def __init__(self, catalog: Catalog):
        self._catalog = catalog

    def encrypt(self, text: str) -> str:
        return self._catalog.box.encrypt(text)

    def decrypt(self, token: str) -> str:
        return self._catalog.box.decrypt(token)

    def rotate(self, token: str) -> str:
        return self._catalog.box.rotate(token)


def encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode("\x1f".join(parts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        at, id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("\x1f")
    except (ValueError, UnicodeDecodeError):
        raise CatalogError("cursor is not one this API returned; pass the next_url of the previous page") from None
    return at, id


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _live(kind: str, id: str) -> tuple[Any, ...]:
    e = t.entries.c
    return (e.kind == kind, e.entry_id == id, e.to_revision.is_(None))


def _new_revision(c: sa.Connection, actor: str | None, stamp: str, expected: int | None = None) -> int:
    """The next revision, first in its transaction: writers in other processes queue behind it (SQLite's
    write lock; a table lock on PostgreSQL), so revisions commit in their order and a reader that
    applies the changes after its revision misses none. With ``expected``, :class:`StaleCatalog` when
    another writer came after that revision."""
    if c.dialect.name == "postgresql":
        c.execute(sa.text("LOCK TABLE catalog_revisions IN EXCLUSIVE MODE"))
    key = c.execute(t.revisions.insert().values(created_at=stamp, actor_id=actor)).inserted_primary_key
    assert key is not None
    revision = int(key[0])
    if expected is not None:
        r = t.revisions.c.revision
        before = c.execute(sa.select(sa.func.coalesce(sa.func.max(r), 0)).where(r < revision)).scalar_one()
        if int(before) != expected:
            raise StaleCatalog(f"the catalog changed (revision {before}) since it was read (revision {expected})")
    return revision


def _row(
    kind: str, id: str, provider_id: str | None, body: dict[str, Any], created: str, updated: str, revision: int
) -> dict[str, Any]:
    return {
        "kind": kind,
        "entry_id": id,
        "provider_id": provider_id,
        "body": orjson.dumps(body).decode(),
        "created_at": created,
        "updated_at": updated,
        "from_revision": revision,
    }


def _entry(row: Any) -> StoredEntry:
    return StoredEntry(
        row.kind,
        row.entry_id,
        row.provider_id,
        orjson.loads(row.body),
        row.created_at,
        row.updated_at,
        row.from_revision,
        orjson.loads(row.status) if row.status else None,
    )


def _job(row: Any) -> Job:
    return Job(
        row.id,
        row.kind,
        row.target_id,
        row.provider_id,
        row.run_id,
        row.submitted_at,
        row.actor_id,
        orjson.loads(row.record_ids) if row.record_ids else None,
        orjson.loads(row.error) if row.error else None,
    )


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            cursor.execute("PRAGMA synchronous=FULL")  # a change the API acknowledged survives a crash
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _shown_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


@contextmanager
def opened(url: str | None = None) -> Iterator[Catalog]:
    catalog = Catalog.open(url)
    assert catalog is not None
    try:
        yield catalog
    finally:
        catalog.close()
