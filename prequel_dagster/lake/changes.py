"""Change detection against the lake: which extracted rows are new, updated, deleted or unchanged.

Vectorised: the previous version of each extracted key is looked up in the lake with a pushed-down
``isin`` filter, aligned with ``index_in`` + ``take``, and compared column by column.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from . import checkpoints
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
    schema = log.schema()
    condition = pads.field(key).isin(keys)
    # files are skipped by the ranges of the key and of the columns ``also`` names (a short expression)
    named = str(also) if also is not None else ""
    prune = [key, *(n for n in schema.names if n != key and n in named)]  # type: ignore[union-attr]
    parts = [b for b in log.scan(filter=condition if also is None else condition & also, prune=prune) if b.num_rows]
    if not parts:
        return schema.empty_table()  # type: ignore[union-attr]
    return dedupe_last(pa.Table.from_batches(parts, schema=schema), key)


class KeySnapshot:
    """Every key in the lake, and the keys whose latest version is a delete; read once per extract.

    Answers "is this key new?" for incremental reads without reading whole rows back, at a cost that
    grows with the batch looked up, not with the lake. Integer keys that fill their range (the usual
    serial or identity key) are held as one flag per value of the range, found from the files' recorded
    footer ranges: 1 byte a key. Other integer and temporal keys are one sorted numpy array (8 bytes a
    key) searched by bisection; other key types fall back to a hash probe. Deleted keys are few: they
    are kept apart, with their latest op.

    Kept with the log's checkpoints: the first extract after checkpoint ``seq`` stores the snapshot
    through ``seq`` next to it (``checkpoints.write_key_snapshot``: the distinct keys and whether each
    one's latest version is a delete), made from the previous checkpoint's snapshot and the commits in
    between (or, without one, from the data files). Every extract then reads that one file and the
    commits after the checkpoint: its cost follows the keys and the recent changes, not the history.
    A missing or damaged snapshot is rebuilt, never trusted.
    """

    DENSE_BYTES_PER_ROW = 8
    """A range is held as flags when it costs no more than the sorted array would (8 bytes a row)."""

    def __init__(self, log: DatasetLog, key: str):
        import numpy as np

        state = log.state()
        self.type = t = state.schema.field(key).type  # type: ignore[union-attr]
        self._low = 0
        self._present: np.ndarray | None = None  # dense: _present[k - _low] says whether key k is in the lake
        self._sorted: np.ndarray | None = None
        self.keys = pa.array([], t)  # the hash-probed keys (other key types)
        self.deleted = pa.array([], t)
        if pa.types.is_integer(t) and t != pa.uint64():
            span = log.column_range(key)
            if span is not None and span[1] - span[0] < max(self.DENSE_BYTES_PER_ROW * state.rows, 1 << 16):
                self._low = int(span[0])
                self._present = np.zeros(int(span[1]) - self._low + 1, dtype=bool)
        self._sortable = self._present is None and (
            pa.types.is_integer(t) or pa.types.is_timestamp(t) or pa.types.is_date(t)
        )
        through = state.checkpoint
        if not through:  # no checkpoint yet: from the (few) data files
            self._fill(log, key, None)
            return
        stored = checkpoints.read_key_snapshot(log.storage, log.directory, through, key, log.warn)
        if stored is None or not self._load(stored):
            if not self._from_previous(log, key, state.previous, through):
                self._fill(log, key, through)
            try:  # kept for the next extracts
                checkpoints.write_key_snapshot(log.storage, log.directory, through, key, self._export())
            except Exception as exc:  # a cache: this extract goes on, the next one tries again
                log.warn(f"key snapshot through commit {through} of {log.storage.uri(log.directory)} not kept: {exc!r}")
        self._add(log, key, through, state.seq)

    def _from_previous(self, log: DatasetLog, key: str, previous: int, through: int) -> bool:
        """The previous checkpoint's snapshot plus the commits up to ``through``; False without one."""
        older = checkpoints.read_key_snapshot(log.storage, log.directory, previous, key, log.warn) if previous else None
        if older is None or not self._load(older):
            return False
        self._add(log, key, previous, through)
        return True

    # ------------------------------------------------------------------ building

    def _fill(self, log: DatasetLog, key: str, through: int | None) -> None:
        """From every row version of commits up to ``through`` (all by default), file by file."""
        import numpy as np

        t = self.type
        rows = sum(f.rows for f in log.state().files if through is None or f.first_seq <= through)
        self._clear()
        if self._sortable:
            self._sorted = np.empty(rows, dtype=pa.array([], t).to_numpy().dtype)
        filled = 0
        chunks: list[pa.Array] = []
        deleted_keys = []
        for batch in log.scan_columns([key, OP_COLUMN], through=through):
            keys = batch.column(0)
            if keys.null_count:
                keys = keys.filter(pc.is_valid(keys))
            if self._present is not None:
                self._present[self._offsets(keys.to_numpy())] = True
            elif self._sorted is not None:
                if filled + len(keys) > len(self._sorted):  # more rows than the manifests say: grow
                    self._sorted = np.resize(self._sorted, max(2 * len(self._sorted), filled + len(keys)))
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
        self.deleted = self._latest_deletes(log, key, deleted_keys, through)

    def _clear(self) -> None:
        """Empty the key set (its mode stays)."""
        if self._present is not None:
            self._present[:] = False
        self._sorted = None

    def _load(self, stored: pa.Table) -> bool:
        """From a kept snapshot; False if it does not fit (another key type, keys outside the range)."""
        import numpy as np

        try:
            keys = stored.column("key").combine_chunks().cast(self.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False
        if keys.null_count:
            return False
        flags = stored.column("deleted").combine_chunks()
        if self._present is not None:
            offsets = self._offsets(keys.to_numpy())
            if len(offsets) and (offsets.min() < 0 or offsets.max() >= len(self._present)):
                return False
            self._clear()
            self._present[offsets] = True  # type: ignore[index]
        elif self._sortable:
            values = keys.to_numpy()
            if len(values) > 1 and not bool(np.all(values[1:] > values[:-1])):
                values = np.unique(values)
            self._sorted = values
        else:
            self.keys = keys
        self.deleted = keys.filter(pc.fill_null(flags, False))
        return True

    def _add(self, log: DatasetLog, key: str, after: int, through: int) -> None:
        """The commits ``(after, through]``: their keys join the snapshot, their latest ops set the deletes."""
        import numpy as np

        if through <= after:
            return
        parts = [b for b in log.scan_between(after, through, columns=[key, OP_COLUMN], use_threads=False) if b.num_rows]
        if not parts:
            return
        changes = pa.Table.from_batches(parts).combine_chunks()
        changes = changes.filter(pc.is_valid(changes.column(0)))
        if not changes.num_rows:
            return
        last = dedupe_last(changes, key)
        keys = last.column(0).combine_chunks().cast(self.type)
        is_delete = pc.fill_null(pc.equal(last.column(1).combine_chunks(), "delete"), False)
        found, _ = self.lookup(keys)
        new = keys.filter(pc.invert(found))
        if len(new):
            if self._present is not None:
                offsets = self._offsets(new.to_numpy())
                if offsets.min() < 0 or offsets.max() >= len(self._present):  # outside the range: sorted instead
                    present = np.flatnonzero(self._present) + self._low
                    self._present = None
                    self._sortable = True
                    self._sorted = np.unique(np.concatenate([present, new.cast(pa.int64()).to_numpy()])).astype(
                        pa.array([], self.type).to_numpy().dtype
                    )
                else:
                    self._present[offsets] = True
            elif self._sorted is not None:
                values = np.sort(new.to_numpy())
                self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, values), values)
            else:
                self.keys = pa.concat_arrays([self.keys, new])
        still = self.deleted.filter(pc.invert(pc.is_in(self.deleted, value_set=keys)))
        self.deleted = pa.concat_arrays([still, keys.filter(is_delete)])

    def _export(self) -> pa.Table:
        """The kept form: each key once (sorted for integer and temporal keys) and whether it is deleted."""
        keys = self.all_keys()
        return pa.table({"key": keys, "deleted": pc.is_in(keys, value_set=self.deleted)})

    def _offsets(self, values: "np.ndarray") -> "np.ndarray":
        import numpy as np

        return values.astype(np.int64, copy=False) - np.int64(self._low)

    def _latest_deletes(self, log: DatasetLog, key: str, candidates: list[pa.Array], through: int | None) -> pa.Array:
        """Of the keys ever deleted, those whose latest version is still the delete."""
        if not candidates:
            return pa.array([], self.type)
        keys = pc.unique(pa.chunked_array(candidates, self.type).combine_chunks())
        wanted = pads.field(key).isin(keys)
        scan = (
            log.scan(columns=[key, OP_COLUMN], filter=wanted, prune=[key])
            if through is None
            else log.scan_between(0, through, columns=[key, OP_COLUMN], filter=wanted, prune=[key])
        )
        versions = [b for b in scan if b.num_rows]
        latest = dedupe_last(pa.Table.from_batches(versions), key)
        return latest.column(key).filter(pc.equal(latest.column(OP_COLUMN), "delete")).combine_chunks().cast(self.type)

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
