"""Change detection against the lake: which extracted rows are new, updated, deleted or unchanged.

Vectorised: the previous version of each extracted key is looked up in the lake with a pushed-down
``isin`` filter, aligned with ``index_in`` + ``take``, and compared column by column.
"""

from dataclasses import dataclass, field

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


def _dedupe_last(table: pa.Table, key: str) -> pa.Table:
    """Keep the last row of each key (sources may return a key twice within one read)."""
    if pc.count_distinct(table.column(key)).as_py() == table.num_rows:
        return table
    ordinal = "__prequel_ordinal"
    with_ord = table.append_column(ordinal, pa.array(range(table.num_rows), pa.int64()))
    last = with_ord.group_by(key, use_threads=False).aggregate([(ordinal, "max")])
    keep = pc.sort_indices(last.column(f"{ordinal}_max"))
    return table.take(pc.take(last.column(f"{ordinal}_max"), keep))


def latest_versions(log: DatasetLog, keys: pa.Array, key: str) -> pa.Table | None:
    """The latest committed version of each of ``keys`` (None when the lake has no commits)."""
    if log.latest() is None:
        return None
    parts = [b for b in log.scan(filter=pads.field(key).isin(keys)) if b.num_rows]
    schema = log.schema()
    if not parts:
        return schema.empty_table()  # type: ignore[union-attr]
    return _dedupe_last(pa.Table.from_batches(parts, schema=schema), key)


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
        batch = _dedupe_last(batch, key)
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

    op = pc.if_else(deleted, "delete", pc.if_else(pc.or_(is_new, prev_deleted), "insert", "update"))
    changed_rows = batch.append_column(OP_COLUMN, op.cast(pa.string())).filter(changed)

    not_deleted = pc.invert(deleted)
    counts.records_new_inserted = _count(pc.and_(is_new, not_deleted))
    counts.records_existing_updated = _count(pc.and_(pc.and_(changed, pc.invert(is_new)), not_deleted))
    counts.records_existing_deleted = _count(pc.and_(changed, deleted))
    counts.records_existing_unchanged = n - _count(changed)
    return Classified(changed_rows, counts)


def _count(mask: pa.Array) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)
