"""Change detection against the lake: which extracted rows are new, updated, deleted or unchanged.

Vectorised: the previous version of each extracted key is looked up in the lake with a pushed-down
``isin`` filter, aligned with ``index_in`` + ``take``, and compared column by column.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from .commits import OP_COLUMN, DatasetLog

if TYPE_CHECKING:
    import numpy as np  # imported where used: definitions load without it


@dataclass
class ExtractCounts:
    """Prequel's Extract counters."""

    records_processed: int = 0
    records_new_inserted: int = 0
    records_existing_updated: int = 0
    records_existing_unchanged: int = 0
    records_existing_deleted: int = 0
    records_errored: int = 0

    def add(self, other: "ExtractCounts") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass
class Classified:
    changed: pa.Table  # source columns + _prequel_op, only rows that changed
    counts: ExtractCounts = field(default_factory=ExtractCounts)

    @classmethod
    def combine(cls, parts: list["Classified"]) -> "Classified":
        counts = ExtractCounts()
        for part in parts:
            counts.add(part.counts)
        tables = [p.changed for p in parts if p.changed.num_rows] or [parts[0].changed]
        return cls(tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive"), counts)


def dedupe_last(table: pa.Table, key: str) -> pa.Table:
    """Keep the last row of each key (sources may return a key twice within one read)."""
    if pc.count_distinct(table.column(key)).as_py() == table.num_rows:
        return table
    ordinal = "__prequel_ordinal"
    with_ord = table.append_column(ordinal, pa.array(range(table.num_rows), pa.int64()))
    last = with_ord.group_by(key, use_threads=False).aggregate([(ordinal, "max")])
    keep = pc.sort_indices(last.column(f"{ordinal}_max"))
    return table.take(pc.take(last.column(f"{ordinal}_max"), keep))


def latest_versions(
    log: DatasetLog, keys: pa.Array, key: str, *, also: pads.Expression | None = None
) -> pa.Table | None:
    """The latest committed version of each of ``keys`` (None when the lake has no commits).

    ``also`` narrows the scan further (a cursor range, so row groups are skipped by their statistics).
    """
    if log.latest() is None:
        return None
    condition = pads.field(key).isin(keys)
    parts = [b for b in log.scan(filter=condition if also is None else condition & also) if b.num_rows]
    schema = log.schema()
    if not parts:
        return schema.empty_table()  # type: ignore[union-attr]
    return dedupe_last(pa.Table.from_batches(parts, schema=schema), key)


class KeySnapshot:
    """Every key in the lake, and the keys whose latest version is a delete; read once per extract.

    Answers "is this key new?" for incremental reads without reading whole rows back, at a cost that
    grows with the batch looked up, not with the lake. Integer keys that fill their range (the usual
    serial or identity key) are held as one flag per value of the range, found from the Parquet
    footers: 1 byte a key. Other integer and temporal keys are one sorted numpy array (8 bytes a key)
    searched by bisection; other key types fall back to a hash probe. Deleted keys are few: they are
    kept apart, with their latest op.
    """

    DENSE_BYTES_PER_ROW = 8
    """A range is held as flags when it costs no more than the sorted array would (8 bytes a row)."""

    def __init__(self, log: DatasetLog, key: str):
        import numpy as np

        self.type = t = log.schema().field(key).type  # type: ignore[union-attr]
        rows = sum(c.rows for c in log.commits())
        self._low = 0
        self._present: np.ndarray | None = None  # dense: _present[k - _low] says whether key k is in the lake
        self._sorted: np.ndarray | None = None
        chunks: list[pa.Array] = []
        if pa.types.is_integer(t) and t != pa.uint64():
            span = log.column_range(key)
            if span is not None and span[1] - span[0] < max(self.DENSE_BYTES_PER_ROW * rows, 1 << 16):
                self._low = int(span[0])
                self._present = np.zeros(int(span[1]) - self._low + 1, dtype=bool)
        if self._present is None and (pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)):
            self._sorted = np.empty(rows, dtype=pa.array([], t).to_numpy().dtype)
        filled = 0
        deleted_keys = []
        for batch in log.scan_columns([key, OP_COLUMN]):
            keys = batch.column(0)
            if keys.null_count:
                keys = keys.filter(pc.is_valid(keys))
            if self._present is not None:
                self._present[self._offsets(keys.to_numpy())] = True
            elif self._sorted is not None:
                self._sorted[filled : filled + len(keys)] = keys.to_numpy()
                filled += len(keys)
            else:
                chunks.append(keys)
            is_delete = pc.fill_null(pc.equal(batch.column(1), "delete"), False)
            if is_delete.true_count:
                deleted_keys.append(batch.column(0).filter(is_delete))
        if self._sorted is not None:
            self._sorted = self._sorted[:filled]
            self._sorted.sort()
        self.keys = pa.chunked_array(chunks, t).combine_chunks() if chunks else pa.array([], t)
        self.deleted = self._latest_deletes(log, key, deleted_keys)

    def _offsets(self, values: "np.ndarray") -> "np.ndarray":
        import numpy as np

        return values.astype(np.int64, copy=False) - np.int64(self._low)

    def _latest_deletes(self, log: DatasetLog, key: str, candidates: list[pa.Array]) -> pa.Array:
        """Of the keys ever deleted, those whose latest version is still the delete."""
        if not candidates:
            return pa.array([], self.type)
        keys = pc.unique(pa.chunked_array(candidates, self.type).combine_chunks())
        versions = [b for b in log.scan(columns=[key, OP_COLUMN], filter=pads.field(key).isin(keys)) if b.num_rows]
        latest = dedupe_last(pa.Table.from_batches(versions), key)
        return latest.column(key).filter(pc.equal(latest.column(OP_COLUMN), "delete")).combine_chunks()

    def all_keys(self) -> pa.Array:
        """Every key the lake has: each once and sorted for integer and temporal keys, else in lake order."""
        import numpy as np

        if self._present is not None:
            return pa.array(np.flatnonzero(self._present) + self._low).cast(self.type)
        if self._sorted is not None:
            keys = self._sorted
            distinct = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
            return pa.array(distinct).cast(self.type)
        return pc.unique(self.keys)

    def lookup(self, keys: pa.Array) -> tuple[pa.Array, pa.Array]:
        """For each of ``keys``: whether the lake has it, and whether its latest version is a delete."""
        import numpy as np

        keys = keys.cast(self.type)
        deleted = pc.is_in(keys, value_set=self.deleted)
        if keys.null_count:
            return pc.is_in(keys, value_set=self.all_keys()), deleted
        if self._present is not None:
            offsets = self._offsets(keys.to_numpy())
            inside = (offsets >= 0) & (offsets < len(self._present))
            found = np.zeros(len(keys), dtype=bool)
            found[inside] = self._present[offsets[inside]]
            return pa.array(found), deleted
        if self._sorted is not None:
            wanted = keys.to_numpy()
            if not len(self._sorted):
                return pa.repeat(False, len(keys)), deleted
            at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
            return pa.array(self._sorted[at] == wanted), deleted
        return pc.is_in(keys, value_set=self.keys), deleted


def classify_newer(
    batch: pa.Table, snapshot: KeySnapshot, *, key: str, deleted_column: str | None, append_only: bool
) -> Classified:
    """Rows whose cursor is past the previous extract's: changed by definition, so only their op is
    looked up (new, updated, deleted), from the key snapshot instead of whole previous rows."""
    n = batch.num_rows
    counts = ExtractCounts(records_processed=n)
    deleted = (
        pc.fill_null(batch.column(deleted_column).cast(pa.bool_()), False).combine_chunks()
        if deleted_column and deleted_column in batch.column_names
        else pa.repeat(False, n)
    )
    exists, prev_deleted = snapshot.lookup(batch.column(key).combine_chunks())
    is_new = pc.invert(exists)
    changed = is_new if append_only else pa.repeat(True, n)
    inserted = pc.or_(is_new, prev_deleted)  # a key back after a delete is inserted again
    op = pc.if_else(deleted, "delete", pc.if_else(inserted, "insert", "update"))
    not_deleted = pc.invert(deleted)
    counts.records_new_inserted = _count(pc.and_(pc.and_(changed, inserted), not_deleted))
    counts.records_existing_updated = _count(pc.and_(pc.and_(changed, pc.invert(inserted)), not_deleted))
    counts.records_existing_deleted = _count(pc.and_(changed, deleted))
    counts.records_existing_unchanged = n - _count(changed)
    rows = batch.append_column(OP_COLUMN, op.cast(pa.string()))
    return Classified(rows if not append_only else rows.filter(changed), counts)


def _same(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Null-aware equality per row; nested types fall back to comparing Python values."""
    if a.type != b.type:
        try:
            b = b.cast(a.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            a, b = a.cast(pa.string()), b.cast(pa.string())
    try:
        eq = pc.fill_null(pc.equal(a, b), False)
    except pa.ArrowNotImplementedError:
        return pa.array([x == y for x, y in zip(a.to_pylist(), b.to_pylist())], pa.bool_())
    return pc.or_(eq, pc.and_(pc.is_null(a), pc.is_null(b)))


def classify(
    batch: pa.Table,
    previous: pa.Table | None,
    *,
    key: str,
    deleted_column: str | None,
    append_only: bool,
    keys_unique: bool = False,
) -> Classified:
    """Compare extracted rows with their previous versions; keep only changes, tagged with their op.

    ``keys_unique``: the source guarantees one row per key (a primary key), so no de-duplication.
    """
    if not keys_unique:
        batch = dedupe_last(batch, key)
    n = batch.num_rows
    counts = ExtractCounts(records_processed=n)
    has_deleted = bool(deleted_column and deleted_column in batch.column_names)
    deleted = (
        pc.fill_null(batch.column(deleted_column).cast(pa.bool_()), False).combine_chunks()
        if has_deleted
        else pa.repeat(False, n)
    )
    if previous is None or previous.num_rows == 0:  # every row is new: no comparison, no copy
        n_deleted = deleted.true_count
        op = pc.if_else(deleted, "delete", "insert") if n_deleted else pa.repeat("insert", n)
        counts.records_new_inserted = n - n_deleted
        counts.records_existing_deleted = n_deleted
        return Classified(batch.append_column(OP_COLUMN, op.cast(pa.string())), counts)

    index = pc.index_in(batch.column(key), value_set=previous.column(key))
    is_new = pc.is_null(index)
    aligned = previous.take(index)
    prev_deleted = pc.fill_null(pc.equal(aligned.column(OP_COLUMN), "delete"), False)
    if append_only:
        changed = is_new
    else:
        differs = pc.not_equal(deleted, prev_deleted)
        for name in batch.column_names:
            if name in aligned.column_names:
                differs = pc.or_(differs, pc.invert(_same(batch.column(name), aligned.column(name))))
            else:  # a column new at the source: changed where it has a value
                differs = pc.or_(differs, pc.is_valid(batch.column(name)))
        changed = pc.or_(is_new, differs)

    inserted = pc.or_(is_new, prev_deleted)  # a key back after a delete is inserted again
    op = pc.if_else(deleted, "delete", pc.if_else(inserted, "insert", "update"))
    changed_rows = batch.append_column(OP_COLUMN, op.cast(pa.string())).filter(changed)

    not_deleted = pc.invert(deleted)
    counts.records_new_inserted = _count(pc.and_(pc.and_(changed, inserted), not_deleted))
    counts.records_existing_updated = _count(pc.and_(pc.and_(changed, pc.invert(inserted)), not_deleted))
    counts.records_existing_deleted = _count(pc.and_(changed, deleted))
    counts.records_existing_unchanged = n - _count(changed)
    return Classified(changed_rows, counts)


def _count(mask: pa.Array) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)
