"""What the lake holds for a time window of a partitioned dataset (see :mod:`..sources.window`): the
keys whose **latest** version has ``created_at_column`` in the window and is not a delete
(:func:`live_records`), read a chunk of keys at a time.
"""

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from ..lake.changes import KeySnapshot, latest_versions
from ..lake.commits import OP_COLUMN, DatasetLog
from ..sources.window import Window, filter_to_window

__all__ = ["Window", "filter_to_window", "live_keys", "live_records"]

KEY_CHUNK = 50_000
"""Keys looked up in the lake at once when reading a window's records back."""


def live_keys(log: DatasetLog, key: str, column: str, window: Window | None) -> pa.Array | None:
    """Keys with a version in the window (every key without a window), each once; None for an empty lake.

    Candidates only: :func:`live_records` keeps those whose latest version is live and in the window."""
    schema = log.schema()
    if log.latest() is None or schema is None:
        return None
    if window is None:  # the key snapshot every extract keeps: no scan of the data
        snapshot = KeySnapshot(log, key)
        every = snapshot.all_keys()
        return every.filter(pc.invert(pc.is_in(every, value_set=snapshot.deleted)))
    if column not in schema.names:
        return pa.array([], schema.field(key).type)
    where = f"column '{column}' in the datalake"
    condition = window.expression(column, schema.field(column).type, where)
    parts = [b.column(0) for b in log.scan(columns=[key], filter=condition, prune=[column]) if b.num_rows]
    if not parts:
        return pa.array([], schema.field(key).type)
    return pc.unique(pa.chunked_array(parts, schema.field(key).type).combine_chunks())


def live_records(
    log: DatasetLog,
    key: str,
    column: str | None,
    window: Window | None,
    *,
    columns: list[str] | None = None,
    chunk: int = KEY_CHUNK,
) -> Iterator[pa.Table]:
    """The lake's current records (latest version not a delete) of the window (all of them without
    one), ``chunk`` keys at a time, with ``columns`` (all by default)."""
    if window is not None and column is None:
        raise ValueError("a window needs the dataset's created_at_column")
    keys = live_keys(log, key, column or key, window)
    if keys is None:
        return
    where = f"column '{column}' in the datalake"
    for start in range(0, len(keys), chunk):
        latest = latest_versions(log, keys.slice(start, chunk), key)
        if latest is None or not latest.num_rows:
            continue
        keep = pc.fill_null(pc.not_equal(latest.column(OP_COLUMN), "delete"), True)
        if window is not None:
            assert column is not None
            keep = pc.and_(keep, window.mask(latest.column(column), where))
        latest = latest.filter(keep)
        if latest.num_rows:
            yield latest.select(columns) if columns is not None else latest
