"""Change detection against the lake: which extracted rows are new, updated, deleted or unchanged.

Vectorised: the previous version of each extracted key is looked up in the lake with a pushed-down
``isin`` filter, aligned with ``index_in`` + ``take``, and compared column by column.
"""

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from .commits import OP_COLUMN, DatasetLog


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


def latest_versions(log: DatasetLog, keys: pa.Array, key: str, *,
                    also: pads.Expression | None = None) -> pa.Table | None:
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

    Answers "is this key new?" for incremental reads without reading whole rows back. Integer and
    temporal keys are held as one sorted numpy array (8 bytes a key, sorted in place) and looked up
    by binary search, so a lookup costs the batch's size, not the lake's; other keys fall back to a
    hash probe of the lake's keys. Deleted keys are few: they are kept apart, with their latest op.
    """

    def __init__(self, log: DatasetLog, key: str):
        self.type = log.schema().field(key).type  # type: ignore[union-attr]
        t = self.type
        numeric = pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)
        chunks: list[pa.Array] = []
        sorted_keys = None
        filled = 0
        if numeric:
            import numpy as np

            sorted_keys = np.empty(sum(c.rows for c in log.commits()), dtype=pa.array([], t).to_numpy().dtype)
        deleted_keys = []
        for batch in log.scan_columns([key, OP_COLUMN]):
            keys = batch.column(0)
            if keys.null_count:
                keys = keys.filter(pc.is_valid(keys))
            if sorted_keys is not None:
                sorted_keys[filled:filled + len(keys)] = keys.to_numpy()
                filled += len(keys)
            else:
                chunks.append(keys)
            is_delete = pc.fill_null(pc.equal(batch.column(1), "delete"), False)
            if is_delete.true_count:
                deleted_keys.append(batch.column(0).filter(is_delete))
        if sorted_keys is not None:
            sorted_keys = sorted_keys[:filled]
            sorted_keys.sort()
        self._sorted = sorted_keys
        self.keys = pa.chunked_array(chunks, t).combine_chunks() if chunks else pa.array([], t)
        self.deleted = self._latest_deletes(log, key, deleted_keys)

    def _latest_deletes(self, log: DatasetLog, key: str, candidates: list[pa.Array]) -> pa.Array:
        """Of the keys ever deleted, those whose latest version is still the delete."""
        if not candidates:
            return pa.array([], self.type)
        keys = pc.unique(pa.chunked_array(candidates, self.type).combine_chunks())
        versions = [b for b in log.scan(columns=[key, OP_COLUMN], filter=pads.field(key).isin(keys)) if b.num_rows]
        latest = dedupe_last(pa.Table.from_batches(versions), key)
        return latest.column(key).filter(pc.equal(latest.column(OP_COLUMN), "delete")).combine_chunks()

    def all_keys(self) -> pa.Array:
        """Every key the lake has (each once when sorted; in lake order otherwise)."""
        if self._sorted is not None:
            import numpy as np

            keys = self._sorted
            distinct = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
            return pa.array(distinct).cast(self.type)
        return pc.unique(self.keys)

    def lookup(self, keys: pa.Array) -> tuple[pa.Array, pa.Array]:
        """For each of ``keys``: whether the lake has it, and whether its latest version is a delete."""
        keys = keys.cast(self.type)
        deleted = pc.is_in(keys, value_set=self.deleted)
        if self._sorted is not None and keys.null_count == 0:
            import numpy as np

            wanted = keys.to_numpy()
            if not len(self._sorted):
                return pa.repeat(False, len(keys)), deleted
            at = np.minimum(np.searchsorted(self._sorted, wanted), len(self._sorted) - 1)
            return pa.array(self._sorted[at] == wanted), deleted
        return pc.is_in(keys, value_set=self.keys), deleted


def classify_newer(batch: pa.Table, snapshot: KeySnapshot, *, key: str, deleted_column: str | None,
                   append_only: bool) -> Classified:
    """Rows whose cursor is past the previous extract's: changed by definition, so only their op is
    looked up (new, updated, deleted), from the key snapshot instead of whole previous rows."""
    n = batch.num_rows
    counts = ExtractCounts(records_processed=n)
    deleted = (pc.fill_null(batch.column(deleted_column).cast(pa.bool_()), False).combine_chunks()
               if deleted_column and deleted_column in batch.column_names else pa.repeat(False, n))
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
    batch: pa.Table, previous: pa.Table | None, *, key: str, deleted_column: str | None, append_only: bool,
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
