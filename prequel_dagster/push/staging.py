"""Accepted pushes, staged durably in the provider's lake before the client hears 2xx.

Each accepted batch becomes one Parquet file under
``artifacts/<provider>/push/<source>/<table>/staged/``, written with the store's atomic create
(fsync'd on a local disk, a completed conditional PUT on object stores): a crash after the answer
loses nothing, and a crash before it leaves no partial file (a client retries what it was not told
was accepted). The file carries the table's JSON Schema and ``key_names`` in its metadata.
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

from ..lake.layout import push_dir, push_staged_dir, push_table_segment
from ..stores import Store
from .synthetic_keys import COMPOSITE_KEY, RECORD_ID, composite_key, key_column, record_ids
from .wire import Batch

STAGED = "staged"
SDC_RECEIVED_AT = "_sdc_received_at"
ACTIVATED_VERSIONS = b"prequel.push.activated_versions"


class StagingUnavailable(Exception):
    """The lake did not take the write: the client is answered 503 and sends the batch again."""


table_segment = push_table_segment
staged_dir = push_staged_dir


def push_root(provider_id: str, source_id: str) -> str:
    return push_dir(provider_id, source_id)


@dataclass(frozen=True)
class StagedBatch:
    path: str
    records: int
    received_at: dt.datetime


def stage(
    storage: Store, provider_id: str, source_id: str, batch: Batch, *, now: dt.datetime | None = None
) -> StagedBatch:
    """Write one accepted batch durably; file names sort by arrival (nanoseconds, then a random suffix).

    A table keyed by several columns, or by none, also gets the one key column its dataset uses
    (``push/synthetic_keys.py``)."""
    received = now or dt.datetime.now(dt.UTC)
    stem = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
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
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    # Read once, by the next commit: written for speed (lz4, no dictionaries or statistics), a third
    # of zstd's time in the request that waits for it.
    pq.write_table(table, sink, compression="lz4", use_dictionary=False, write_statistics=False)
    path = f"{staged_dir(provider_id, source_id, batch.table_name)}/{stem}.parquet"
    try:
        storage.create_exclusive(path, sink.getvalue().to_pybytes())
    except Exception as exc:  # any failure of the lake: not accepted, the client sends it again
        raise StagingUnavailable(f"the lake did not take the batch ({type(exc).__name__})") from exc
    return StagedBatch(path, table.num_rows, received)


def activated_versions(table: pa.Table) -> list[int]:
    """The ``activate_version`` messages a staged batch carried (Singer's full-table replacement)."""
    raw = (table.schema.metadata or {}).get(ACTIVATED_VERSIONS)
    return [int(v) for v in orjson.loads(raw)] if raw else []


def is_staged_batch(name: str) -> bool:
    """A whole staged batch: not the temporary file a write killed mid-way leaves behind (``.<name>.tmp``)."""
    return name.endswith(".parquet") and not name.startswith(".")


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
    return pq.read_table(pa.BufferReader(storage.read_bytes(path)))
