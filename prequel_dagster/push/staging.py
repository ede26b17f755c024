"""Accepted pushes, staged durably in the provider's lake before the client hears 2xx.

Each accepted request becomes one file under ``artifacts/<provider>/push/<source>/<table>/staged/``,
written with the store's atomic create (fsync'd on a local disk, a completed conditional PUT on object
stores): a crash after the answer loses nothing, and a crash before it leaves no partial file (a
client retries what it was not told was accepted).

* ``<ns>-<id>.json``: a Batch request (``/v2/import/batch``) as it arrived, once validated. Stitch's
  answer needs only the validation; the Arrow table is built when the batch is read (by the commit),
  so a request costs what its checks and one durable write cost.
* ``<ns>-<id>.parquet``: one table of a Push request (``/v2/import/push``, which can mix tables), with
  the table's JSON Schema and ``key_names`` in its metadata.

Both read back (:func:`read_staged`) as the same table: the records, ``_sdc_received_at`` (the
``<ns>`` of the name) and the key column the dataset uses.
"""

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

import orjson
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..config.errors import SourceError
from ..lake.layout import PUSH_STAGED_SUFFIXES, push_dir, push_staged_dir, push_table_segment
from ..stores import Store
from .synthetic_keys import COMPOSITE_KEY, RECORD_ID, composite_key, key_column, record_ids
from .wire import JSON_MEDIA_TYPE, Batch, WireError, parse_batch

STAGED = "staged"
SDC_RECEIVED_AT = "_sdc_received_at"
ACTIVATED_VERSIONS = b"prequel.push.activated_versions"


class StagingUnavailable(Exception):
    """The lake did not take the write: the client is answered 503 and sends the batch again."""


class StagedBatchUnreadable(SourceError):
    """A staged file the commit cannot read: named, with the fix; the other batches are not committed past it."""


table_segment = push_table_segment
staged_dir = push_staged_dir


def push_root(provider_id: str, source_id: str) -> str:
    return push_dir(provider_id, source_id)


@dataclass(frozen=True)
class StagedBatch:
    path: str
    records: int
    received_at: dt.datetime


def _new_stem() -> tuple[str, dt.datetime]:
    """A staged file's name without suffix (sorting by arrival: nanoseconds, then a random part) and
    the receive time it records."""
    ns = time.time_ns()
    return f"{ns:020d}-{uuid.uuid4().hex}", _received_at(ns)


def _received_at(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns // 1000 / 1e6, dt.UTC)


def _create(storage: Store, path: str, data: bytes) -> None:
    try:
        storage.create_exclusive(path, data)
    except Exception as exc:  # any failure of the lake: not accepted, the client sends it again
        raise StagingUnavailable(f"the lake did not take the batch ({type(exc).__name__})") from exc


def stage_request(
    storage: Store, provider_id: str, source_id: str, table_name: str, body: bytes, *, records: int
) -> StagedBatch:
    """Write a validated Batch request's body (of ``records`` messages) durably, as it arrived; read
    back by :func:`read_staged`."""
    stem, received = _new_stem()
    path = f"{staged_dir(provider_id, source_id, table_name)}/{stem}.json"
    _create(storage, path, body)
    return StagedBatch(path, records, received)


def stage(storage: Store, provider_id: str, source_id: str, batch: Batch) -> StagedBatch:
    """Write one accepted table durably as Parquet (a Push request's, which may carry several tables)."""
    stem, received = _new_stem()
    table = staged_table(batch, stem, received)
    sink = pa.BufferOutputStream()
    # Read once, by the next commit: written for speed (lz4, no dictionaries or statistics), a third
    # of zstd's time in the request that waits for it.
    pq.write_table(table, sink, compression="lz4", use_dictionary=False, write_statistics=False)
    path = f"{staged_dir(provider_id, source_id, batch.table_name)}/{stem}.parquet"
    _create(storage, path, sink.getvalue().to_pybytes())
    return StagedBatch(path, table.num_rows, received)


def staged_table(batch: Batch, stem: str, received: dt.datetime) -> pa.Table:
    """The batch's records with ``_sdc_received_at`` and, for a table keyed by several columns or by
    none, the one key column its dataset uses (``push/synthetic_keys.py``); the table's schema,
    ``key_names`` and activated versions in the metadata."""
    table = batch.records.append_column(
        pa.field(SDC_RECEIVED_AT, pa.timestamp("us", "UTC"), nullable=False),
        pa.repeat(pa.scalar(received, pa.timestamp("us", "UTC")), batch.records.num_rows),
    )
    synthetic = key_column(batch.key_names)
    if synthetic == COMPOSITE_KEY:
        keys = composite_key(table, batch.key_names or [])
        table = table.append_column(pa.field(COMPOSITE_KEY, pa.string(), nullable=False), keys)
    elif synthetic == RECORD_ID:
        table = table.append_column(pa.field(RECORD_ID, pa.string(), nullable=False), record_ids(stem, table.num_rows))
    metadata = {
        b"prequel.push.table_name": batch.table_name.encode(),
        b"prequel.push.schema": orjson.dumps(batch.schema),
        b"prequel.push.key_names": orjson.dumps(batch.key_names),
        ACTIVATED_VERSIONS: orjson.dumps(list(batch.activated_versions)),
    }
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})


def activated_versions(table: pa.Table) -> list[int]:
    """The ``activate_version`` messages a staged batch carried (Singer's full-table replacement)."""
    raw = (table.schema.metadata or {}).get(ACTIVATED_VERSIONS)
    return [int(v) for v in orjson.loads(raw)] if raw else []


def is_staged_batch(name: str) -> bool:
    """A whole staged batch: not the temporary file a write killed mid-way leaves behind (``.<name>.tmp``)."""
    return name.endswith(PUSH_STAGED_SUFFIXES) and not name.startswith(".")


def staged_tables(storage: Store, provider_id: str, source_id: str) -> dict[str, list[str]]:
    """Every table of the source with staged batches, and their files in arrival order."""
    root = push_root(provider_id, source_id)
    selector = pafs.FileSelector(storage.full_path(root), allow_not_found=True, recursive=False)
    found: dict[str, list[str]] = {}
    for info in storage.fs.get_file_info(selector):
        if info.type != pafs.FileType.Directory:
            continue
        folder = f"{root}/{info.base_name}/{STAGED}"
        files = [name for name in storage.list_names(folder) if is_staged_batch(name)]
        if files:
            found[unquote(info.base_name)] = [f"{folder}/{name}" for name in files]
    return found


def read_staged(storage: Store, path: str) -> pa.Table:
    """A staged batch as a table (a request's body is parsed again: it was validated when accepted)."""
    data = storage.read_bytes(path)
    if not path.endswith(".json"):
        return pq.read_table(pa.BufferReader(data))
    stem = path.rsplit("/", 1)[-1].removesuffix(".json")
    try:
        batch = parse_batch(data, JSON_MEDIA_TYPE)
        received = _received_at(int(stem.split("-", 1)[0]))
    except (WireError, ValueError) as exc:  # not a file this module wrote, or written by another version
        raise StagedBatchUnreadable(
            f"the staged batch {storage.uri(path)} cannot be read ({exc}); move it out of the staged folder to "
            "commit the others, and push its records again"
        ) from None
    return staged_table(batch, stem, received)
