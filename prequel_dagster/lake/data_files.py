"""A data file of the lake: how it is written, what its manifest records about it, how scans use that.

Files are Parquet (zstd, no dictionary pages), written whole by :class:`ParquetParts`. When a file is
closed its footer's statistics give the range of each integer and temporal column; the manifest
records them (``ranges``) with the file's row count and size, so a reader knows, without opening a
file, which commits it holds and which values it can contain. Scans turn that into each fragment's
guarantee (:meth:`DataFile.guarantee`): a filter that cannot match skips the file unopened.

A plain file holds one commit; a compacted one (see ``compaction``) holds many, with each row's commit
in :data:`SEQ_COLUMN`.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..stores import Store

SEQ_COLUMN = "_prequel_seq"
"""In compacted files only: the commit each row version came from (others hold one commit each)."""


def _range_kind(t: pa.DataType) -> str | None:
    """How a column's footer range is recorded: ``int`` (its values), ``raw`` (the stored integers of a
    temporal type) or not at all."""
    if pa.types.is_integer(t) and t != pa.uint64():
        return "int"
    if pa.types.is_timestamp(t) or pa.types.is_date32(t):
        return "raw"
    return None


def file_ranges(meta: pq.FileMetaData, schema: pa.Schema) -> dict[str, list | None]:
    """``{column: [min, max, has_nulls]}`` (or None: only nulls) for the integer and temporal columns
    whose footer has statistics in every row group; a column without them is left out (unknown)."""
    out: dict[str, list | None] = {}
    stored = meta.schema.to_arrow_schema()
    for i in range(meta.num_columns):
        name = meta.schema.column(i).path
        if name not in schema.names or name not in stored.names:
            continue
        t = schema.field(name).type
        kind = _range_kind(t)
        if kind is None:
            continue
        if kind == "raw":  # the stored integers mean the same as Arrow's only in the same unit
            s = stored.field(name).type
            same = (pa.types.is_timestamp(s) and pa.types.is_timestamp(t) and s.unit == t.unit) or (
                pa.types.is_date32(s) and pa.types.is_date32(t)
            )
            if not same:
                continue
        low = high = None
        nulls, known = False, True
        for g in range(meta.num_row_groups):
            chunk = meta.row_group(g).column(i)
            stats = chunk.statistics
            if stats is None or not stats.has_null_count:
                known = False
                break
            nulls = nulls or stats.null_count > 0
            if not stats.has_min_max:
                if stats.null_count == chunk.num_values:
                    continue  # nulls only
                known = False
                break
            a, b = (stats.min, stats.max) if kind == "int" else (stats.min_raw, stats.max_raw)
            low = a if low is None else min(low, a)
            high = b if high is None else max(high, b)
        if known:
            out[name] = None if low is None or high is None else [int(low), int(high), nulls]
    return out


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


def _bound(raw: int, stored: pa.DataType, target: pa.DataType, *, upper: bool) -> pa.Scalar | None:
    """A recorded range end as a literal of the dataset's type (rounded outwards), or None."""
    try:
        if pa.types.is_integer(stored) and pa.types.is_integer(target):
            return pa.scalar(raw, target)
        if pa.types.is_date32(stored) and pa.types.is_date32(target):
            return pa.scalar(raw, target)
        if pa.types.is_timestamp(stored) and pa.types.is_timestamp(target):
            have, want = _PER_SECOND[stored.unit], _PER_SECOND[target.unit]
            if want >= have:
                return pa.scalar(raw * (want // have), target)
            step = have // want
            return pa.scalar(-(-raw // step) if upper else raw // step, target)
    except (pa.ArrowException, OverflowError):
        pass
    return None


@dataclass(frozen=True)
class DataFile:
    """A live data file: the commits it holds (one, unless compacted), its schema and column ranges."""

    path: str
    rows: int
    first_seq: int
    last_seq: int
    schema: pa.Schema | None = field(default=None, compare=False, repr=False)
    ranges: Mapping[str, list | None] | None = field(default=None, compare=False, repr=False)
    """Per column ``[min, max, has_nulls]`` or None (nulls only); None for files from before ranges
    were recorded (their footers are read instead)."""
    bytes: int | None = field(default=None, compare=False)
    compacted: bool = False

    def entry(self) -> dict[str, Any]:
        """The file as a manifest lists it."""
        data: dict[str, Any] = {"path": self.path, "rows": self.rows}
        if self.bytes is not None:
            data["bytes"] = self.bytes
        if self.ranges is not None:
            data["ranges"] = dict(self.ranges)
        if self.compacted:
            data.update(first=self.first_seq, last=self.last_seq)
        return data

    @classmethod
    def from_entry(
        cls, data: dict[str, Any], *, seq: int | None, schema: pa.Schema | None, compacted: bool | None = None
    ) -> "DataFile":
        """From a manifest's file entry (``seq``: the commit's, for a plain file; else the entry says)."""
        first = data["first"] if seq is None else seq
        last = data["last"] if seq is None else seq
        ranges = data.get("ranges")
        return cls(
            path=data["path"],
            rows=data["rows"],
            first_seq=first,
            last_seq=last,
            schema=schema,
            ranges=ranges if isinstance(ranges, dict) else None,
            bytes=data.get("bytes"),
            compacted=seq is None if compacted is None else compacted,
        )

    def guarantee(self, dataset_schema: pa.Schema, columns: Collection[str] = ()) -> pads.Expression:
        """What holds for every row of the file: its commit(s) and the ranges of ``columns``."""
        seq = pads.field(SEQ_COLUMN)
        if self.compacted:
            expr = (seq >= pa.scalar(self.first_seq, pa.int64())) & (seq <= pa.scalar(self.last_seq, pa.int64()))
        else:  # the file has no seq column: the scan fills it from this equality
            expr = seq == pa.scalar(self.first_seq, pa.int64())
        if not columns or not self.ranges or self.schema is None:
            return expr
        for name in columns:
            if name not in self.ranges or name not in dataset_schema.names or name not in self.schema.names:
                continue
            span, column = self.ranges[name], pads.field(name)
            if span is None:
                expr = expr & ~column.is_valid()
                continue
            stored, target = self.schema.field(name).type, dataset_schema.field(name).type
            low = _bound(span[0], stored, target, upper=False)
            high = _bound(span[1], stored, target, upper=True)
            if low is None or high is None:
                continue
            bounded = (column >= low) & (column <= high)
            expr = expr & (bounded | ~column.is_valid() if span[2] else bounded)
        return expr


@dataclass
class PendingFile:
    path: str
    rows: int = 0
    bytes: int | None = None
    ranges: dict[str, list | None] | None = None


class ParquetParts:
    """Parquet files written one after another under ``directory`` as ``<stem>-<part>.parquet``,
    each with its footer's column ranges recorded (shared by extracts and compactions)."""

    def __init__(self, storage: Store, directory: str, stem: str, *, row_group_rows: int | None = None):
        self.storage, self.directory, self.stem = storage, directory, stem
        self.row_group_rows = row_group_rows
        self.files: list[PendingFile] = []
        self.schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None
        self._stream: Any = None

    def start(self, schema: pa.Schema) -> None:
        """Begin the next part, with its own schema."""
        self.close()
        self.schema = schema
        self._roll(schema)

    def write(self, batch: pa.RecordBatch | pa.Table, *, roll: bool = False) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None or roll:
            self._roll(batch.schema)
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)
        if self.row_group_rows:
            self._writer.write(batch, row_group_size=self.row_group_rows)  # type: ignore[union-attr]
        else:
            self._writer.write(batch)  # type: ignore[union-attr]
        self.files[-1].rows += batch.num_rows

    def _roll(self, schema: pa.Schema) -> None:
        self.close()
        if self.schema is None:
            self.schema = schema
        path = f"{self.directory}/{self.stem}-{len(self.files):05d}.parquet"
        self._stream = self.storage.open_output(path)
        # No dictionary pages: trying them on high-cardinality columns doubles the CPU and the size,
        # and zstd compresses repeated values about as well.
        self._writer = pq.ParquetWriter(self._stream, self.schema, compression="zstd", use_dictionary=False)
        self.files.append(PendingFile(path))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            pending = self.files[-1]
            try:
                pending.bytes = self._stream.tell()
                pending.ranges = file_ranges(self._writer.writer.metadata, self.schema)  # type: ignore[arg-type]
            except (AttributeError, pa.ArrowException, OSError, ValueError):
                pending.ranges = None  # unknown: readers use the footer
            self._stream.close()
            self._writer = self._stream = None

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for f in self.files:
            entry: dict[str, Any] = {"path": f.path, "rows": f.rows}
            if f.bytes is not None:
                entry["bytes"] = f.bytes
            if f.ranges is not None:
                entry["ranges"] = f.ranges
            out.append(entry)
        return out

    def remove(self) -> None:
        """Drop what was written (best effort; files no manifest names are never read anyway)."""
        self.close()
        for f in self.files:
            try:
                self.storage.delete(f.path)
            except OSError:
                pass
