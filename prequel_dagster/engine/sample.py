"""random-sample: current records of a dataset chosen uniformly at random, read from the lake in bounded memory."""

import base64
import datetime as dt
import decimal
import math
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from ..config.models import PrequelConfig
from ..lake.changes import latest_versions
from ..lake.commits import OP_COLUMN, DatasetLog
from ..lake.data_files import SEQ_COLUMN
from ..language.expressions import to_string
from ..stores import Store, open_datalake

if TYPE_CHECKING:
    import numpy as np  # imported where used: definitions load without it

MAX_SAMPLE_SIZE = 1000
INTERNAL_COLUMNS = frozenset({OP_COLUMN, SEQ_COLUMN})
"""The lake's own columns: never shown as data."""

SCAN_BATCH_ROWS = 65_536
"""Keys read per batch while sampling: with the candidate pool, the whole of the sample's memory."""


@dataclass
class Sample:
    """Prequel's ``random-sample`` data: the dataset's column descriptors and the sampled records."""

    schema: list[dict[str, Any]]
    records: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"schema": self.schema, "records": self.records}


def random_sample(
    config: PrequelConfig,
    dataset_id: str,
    size: int,
    *,
    storage: Store | None = None,
    seed: int | None = None,
) -> Sample:
    """``size`` current records of the dataset (the latest version of each key, deleted keys left out),
    chosen uniformly at random among the current keys; all of them when there are fewer. A ValueError
    unless ``1 <= size <= 1000``. The same ``seed`` gives the same sample of the same lake.

    Each key gets a pseudo-random priority from a hash of the key and the seed; the sample is the
    ``size`` current keys of lowest priority. One pass over the key column keeps only a pool of the
    lowest priorities seen (a key's versions share its priority, so keys updated often are not
    favoured), then their latest versions are fetched by key. When deleted keys crowd the sample out
    of the pool, the pass is repeated with a pool four times larger. Memory follows the pool and one
    batch of keys, never the dataset.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_SAMPLE_SIZE:
        raise ValueError(f"sample_size must be a whole number from 1 to {MAX_SAMPLE_SIZE}; got {size!r}")
    dataset = config.dataset(dataset_id)
    chain = config.chain(dataset.id)
    storage = storage or open_datalake(chain.datalake, config)
    lake = DatasetLog(storage, chain.provider.id, dataset.id)
    schema = lake.schema() if lake.latest() is not None else None
    if schema is None:
        return Sample([], [])
    data_fields = [f for f in schema if f.name not in INTERNAL_COLUMNS]
    descriptors = [column_descriptor(f) for f in data_fields]
    key = dataset.primary_key
    salt = _salt(secrets.randbits(64) if seed is None else seed)
    pool = 2 * size + 32  # room for some deleted keys among the lowest priorities
    while True:
        keys, saturated = _lowest_keys(lake, key, pool, salt)
        if not len(keys):
            return Sample(descriptors, [])
        current = _current_versions(lake, key, keys)
        if current.num_rows >= size or not saturated:
            chosen = current.slice(0, size).select([f.name for f in data_fields])
            return Sample(descriptors, json_rows(chosen))
        pool *= 4


def _lowest_keys(lake: DatasetLog, key: str, pool: int, salt: int) -> tuple[pa.Array, bool]:
    """The ``pool`` distinct keys of lowest priority (every key, if fewer), in priority order, and
    whether the pool filled up (other keys may exist)."""
    import numpy as np

    key_type = lake.schema().field(key).type  # type: ignore[union-attr]
    kept_keys = pa.array([], key_type)
    kept: np.ndarray = np.empty(0, dtype=np.uint64)
    saturated = False
    for batch in lake.scan_columns([key], batch_size=SCAN_BATCH_ROWS):
        keys = batch.column(0)
        if keys.null_count:
            keys = keys.filter(pc.is_valid(keys))
        if not len(keys):
            continue
        priorities = key_priorities(keys, salt)
        if saturated:  # only keys below the pool's highest priority can enter it
            below = priorities < kept[-1]
            if not below.any():
                continue
            keys, priorities = keys.filter(pa.array(below)), priorities[below]
        # a key's versions share its priority: one entry per priority is one entry per key
        merged = np.concatenate([kept, priorities])
        distinct, first = np.unique(merged, return_index=True)
        take = first[:pool]
        every = pa.concat_arrays([kept_keys, keys.cast(key_type)])
        kept_keys, kept = every.take(pa.array(take)), distinct[:pool]
        saturated = saturated or len(distinct) >= pool
    return kept_keys, saturated


def _current_versions(lake: DatasetLog, key: str, keys: pa.Array) -> pa.Table:
    """The latest versions of ``keys`` that are not deletes, in the order of ``keys``."""
    found = latest_versions(lake, keys, key)
    if found is None or not found.num_rows:
        return lake.schema().empty_table()  # type: ignore[union-attr]
    live = pc.invert(pc.fill_null(pc.equal(found.column(OP_COLUMN), "delete"), False))
    found = found.filter(live)
    rank = pc.index_in(found.column(key), value_set=keys)
    return found.take(pc.sort_indices(rank))


# ---------------------------------------------------------------------------------------------- priorities

_GOLDEN = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def _salt(seed: int) -> int:
    """A 64-bit salt from any integer seed (negative and large ones too)."""
    x = (seed * _GOLDEN + _GOLDEN) & _MASK
    for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        x = ((x ^ (x >> shift)) * factor) & _MASK
    return x ^ (x >> 31)


def _mix(x: "np.ndarray") -> "np.ndarray":
    """splitmix64's finalizer on uint64 values (a bijection; arithmetic wraps)."""
    import numpy as np

    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def key_priorities(keys: pa.Array, salt: int) -> "np.ndarray":
    """A pseudo-random uint64 per key (no nulls), the same for equal keys and salts, vectorised.

    Integer and temporal keys are mixed as 64-bit integers (distinct keys never collide); other keys
    as their bytes (text), each byte mixed with its position and the results summed per key.
    """
    import numpy as np

    t = keys.type
    salt_word = np.uint64(salt)
    golden = np.uint64(_GOLDEN)
    with np.errstate(over="ignore"):
        words = _integer_words(keys)
        if words is not None:
            return _mix(words * golden + salt_word)
        direct = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
        binary = (keys if direct or pa.types.is_large_binary(t) else keys.cast(pa.string())).cast(pa.large_binary())
        offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[binary.offset : binary.offset + len(binary) + 1]
        data = binary.buffers()[2]
        start, end = int(offsets[0]), int(offsets[-1])
        raw = (
            np.frombuffer(data, dtype=np.uint8)[start:end]
            if data is not None and end > start
            else np.empty(0, np.uint8)
        )
        lengths = np.diff(offsets)
        position = np.arange(len(raw), dtype=np.int64) - np.repeat(offsets[:-1] - start, lengths)
        per_byte = _mix(((position.astype(np.uint64) << np.uint64(8)) | raw.astype(np.uint64)) * golden + salt_word)
        sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(per_byte, dtype=np.uint64)])
        bounds = offsets - start
        total = sums[bounds[1:]] - sums[bounds[:-1]]
        return _mix(total + _mix(lengths.astype(np.uint64) ^ salt_word))


def _integer_words(keys: pa.Array) -> "np.ndarray | None":
    """Integer-like keys as uint64 words (None for other types)."""
    import numpy as np

    t = keys.type
    if pa.types.is_boolean(t):
        keys, t = keys.cast(pa.int8()), pa.int8()
    if t == pa.uint64():
        return keys.to_numpy(zero_copy_only=False).astype(np.uint64)
    if pa.types.is_integer(t):
        return keys.cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
    if pa.types.is_floating(t):
        return keys.cast(pa.float64()).to_numpy(zero_copy_only=False).view(np.uint64)
    if pa.types.is_temporal(t) and t.bit_width in (32, 64):
        width = pa.int64() if t.bit_width == 64 else pa.int32()
        return keys.view(width).cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
    return None


# ---------------------------------------------------------------------------------------------- shapes


def column_descriptor(field: pa.Field) -> dict[str, Any]:
    """Prequel's column descriptor for a lake column: ``{name, database_type_name, length, precision,
    scale, nullable}`` (sizes 0 when the type has none)."""
    name, length, precision, scale = _sql_type(field.type)
    return {
        "name": field.name,
        "database_type_name": name,
        "length": length,
        "precision": precision,
        "scale": scale,
        "nullable": bool(field.nullable),
    }


_INTEGERS = {
    8: ("TINYINT", "UTINYINT"),
    16: ("SMALLINT", "USMALLINT"),
    32: ("INTEGER", "UINTEGER"),
    64: ("BIGINT", "UBIGINT"),
}


def _sql_type(t: pa.DataType) -> tuple[str, int, int, int]:
    """An uppercase SQL-ish name for an Arrow type, with its length, precision and scale."""
    if pa.types.is_dictionary(t):
        return _sql_type(t.value_type)
    if pa.types.is_boolean(t):
        return "BOOLEAN", 0, 0, 0
    if pa.types.is_integer(t):
        return _INTEGERS[t.bit_width][0 if pa.types.is_signed_integer(t) else 1], 0, 0, 0
    if pa.types.is_floating(t):
        return ("DOUBLE" if t.bit_width == 64 else "REAL"), 0, 0, 0
    if pa.types.is_decimal(t):
        return "DECIMAL", 0, t.precision, t.scale
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "VARCHAR", 0, 0, 0
    if pa.types.is_fixed_size_binary(t):
        return "BINARY", t.byte_width, 0, 0
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "VARBINARY", 0, 0, 0
    if pa.types.is_timestamp(t):
        return ("TIMESTAMPTZ" if t.tz else "TIMESTAMP"), 0, 0, 0
    if pa.types.is_date(t):
        return "DATE", 0, 0, 0
    if pa.types.is_time(t):
        return "TIME", 0, 0, 0
    if pa.types.is_duration(t) or pa.types.is_interval(t):
        return "INTERVAL", 0, 0, 0
    if pa.types.is_fixed_size_list(t):
        return "ARRAY", t.list_size, 0, 0
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return "ARRAY", 0, 0, 0
    if pa.types.is_map(t):
        return "MAP", 0, 0, 0
    if pa.types.is_struct(t):
        return "STRUCT", 0, 0, 0
    if pa.types.is_null(t):
        return "NULL", 0, 0, 0
    return str(t).upper(), 0, 0, 0


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts (nulls kept): timestamps as RFC 3339 text (zone-less ones taken as
    UTC), decimals as exact text, bytes as base64. For small tables (a sample, one record)."""
    names = table.column_names
    columns = [_json_values(table.column(name).combine_chunks()) for name in names]
    return [dict(zip(names, values)) for values in zip(*columns)] if names else [{} for _ in range(table.num_rows)]


def _json_values(col: pa.Array) -> list[Any]:
    t = col.type
    if pa.types.is_dictionary(t):
        return _json_values(col.dictionary_decode())
    if pa.types.is_null(t):
        return [None] * len(col)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return to_string(col).to_pylist()  # the wire's RFC 3339 text
    if pa.types.is_decimal(t) or pa.types.is_time(t):
        return col.cast(pa.string()).to_pylist()
    if pa.types.is_floating(t):
        return [v if v is None or math.isfinite(v) else None for v in col.to_pylist()]
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.to_pylist()
    return [_jsonable(v) for v in col.to_pylist()]


def _jsonable(value: Any) -> Any:
    """A Python value from Arrow as JSON-ready data (nested values included)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, dt.timedelta):
        seconds = value / dt.timedelta(seconds=1)
        return f"PT{seconds:g}S" if seconds == int(seconds) else f"PT{seconds:.6f}S"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def rfc3339(value: dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC (a zone-less value is taken as UTC), as the wire writes it."""
    utc = value.astimezone(dt.UTC) if value.tzinfo else value
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
