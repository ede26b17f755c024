"""The dataset log: Parquet files of row versions, made visible only by a commit manifest.

An extract writes its data files first, then creates ``_commits/<seq>.json`` naming them, with
the cursor and counters, in one atomic create. A run that dies before that leaves files no
manifest names: they are never read, and the next run starts again from the last commit's cursor.
"""

import base64
import datetime as dt
import decimal
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..stores import Store
from . import layout
from .lake_files import corrupt, read_json_object

OP_COLUMN = "_prequel_op"
"""Per-row change kind in the lake: ``insert``, ``update`` or ``delete``."""

FILE_ROWS = 1_000_000
"""Rows per Parquet file before a writer rolls to the next part."""


def encode_cursor(value: Any) -> dict[str, Any] | None:
    """A cursor value as JSON that keeps its type (timestamps stay timestamps)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return {"kind": "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {"kind": "date", "value": value.isoformat()}
    if isinstance(value, bool):
        raise TypeError("a boolean column cannot be a cursor")
    if isinstance(value, dict):  # a glob dataset's file fingerprints
        return {"kind": "files", "value": value}
    if isinstance(value, int):
        return {"kind": "int", "value": value}
    if isinstance(value, (float, decimal.Decimal)):
        return {"kind": "number", "value": str(value)}
    return {"kind": "string", "value": str(value)}


def decode_cursor(data: dict[str, Any] | None) -> Any:
    if not data:
        return None
    kind, value = data["kind"], data["value"]
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "int":
        return int(value)
    if kind == "number":
        return decimal.Decimal(value)
    return value


def schema_to_b64(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from_b64(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


@dataclass(frozen=True)
class Commit:
    """One committed extract, as its manifest says."""

    seq: int
    files: tuple[str, ...]
    rows: int
    cursor: Any
    schema: pa.Schema | None
    row_count: int
    counts: dict[str, int]
    committed_at: str
    run_id: str | None = None
    token: str = ""  # unique to this commit (its writer's token)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Commit":
        return cls(
            seq=data["seq"],
            files=tuple(f["path"] for f in data["files"]),
            rows=sum(f["rows"] for f in data["files"]),
            cursor=decode_cursor(data.get("cursor")),
            schema=schema_from_b64(data["schema"]) if data.get("schema") else None,
            row_count=data.get("row_count", 0),
            counts=data.get("counts", {}),
            committed_at=data["committed_at"],
            run_id=data.get("run_id"),
            token=data.get("token") or data["committed_at"],  # manifests before tokens: the commit time
        )


@dataclass
class _PendingFile:
    path: str
    rows: int = 0


@dataclass
class CommitWriter:
    """Writes one extract's row versions; nothing is visible until :meth:`commit`."""

    log: "DatasetLog"
    seq: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    files: list[_PendingFile] = field(default_factory=list)
    schema: pa.Schema | None = None
    _writer: pq.ParquetWriter | None = None
    _stream: Any = None

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None or self.files[-1].rows >= FILE_ROWS:
            self._roll(batch.schema)
        if batch.schema != self.schema:
            batch = batch.cast(self.schema)
        self._writer.write(batch)  # type: ignore[union-attr]
        self.files[-1].rows += batch.num_rows

    def _roll(self, schema: pa.Schema) -> None:
        self._close_file()
        if self.schema is None:
            self.schema = schema
        name = f"{self.seq:0{layout.SEQ_WIDTH}d}-{self.token}-{len(self.files):05d}.parquet"
        path = f"{self.log.directory}/data/{name}"
        self._stream = self.log.storage.open_output(path)
        # No dictionary pages: trying them on high-cardinality columns doubles the CPU and the size,
        # and zstd compresses repeated values about as well.
        self._writer = pq.ParquetWriter(self._stream, self.schema, compression="zstd", use_dictionary=False)
        self.files.append(_PendingFile(path))

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self._writer = self._stream = None

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def commit(self, *, cursor: Any, counts: dict[str, int], row_count: int, run_id: str | None) -> Commit:
        """Make the written files visible together with the new cursor, atomically."""
        self._close_file()
        manifest = {
            "seq": self.seq,
            "token": self.token,
            "committed_at": dt.datetime.now(dt.UTC).isoformat(),
            "files": [{"path": f.path, "rows": f.rows} for f in self.files],
            "cursor": encode_cursor(cursor),
            "schema": schema_to_b64(self.schema) if self.schema is not None else None,
            "row_count": row_count,
            "counts": counts,
            "run_id": run_id,
        }
        self.log.storage.create_exclusive(
            f"{self.log.directory}/_commits/{layout.seq_name(self.seq)}", json.dumps(manifest, indent=1).encode()
        )
        self.log._cache = None
        return Commit.from_json(manifest)

    def abort(self) -> None:
        """Drop what was written (best effort; unreferenced files are ignored anyway)."""
        self._close_file()
        for f in self.files:
            try:
                self.log.storage.delete(f.path)
            except OSError:
                pass


class DatasetLog:
    """The committed history of one provider dataset in the lake."""

    def __init__(self, storage: Store, provider_id: str, dataset_id: str):
        self.storage = storage
        self.provider_id = provider_id
        self.dataset_id = dataset_id
        self.directory = layout.dataset_dir(provider_id, dataset_id)
        self._cache: list[Commit] | None = None

    def commits(self) -> list[Commit]:
        if self._cache is None:
            names = self.storage.list_names(f"{self.directory}/_commits")
            seqs = sorted(s for s in (layout.parse_seq(n) for n in names) if s is not None)
            self._cache = [self._read_manifest(f"{self.directory}/_commits/{layout.seq_name(s)}") for s in seqs]
        return self._cache

    def _read_manifest(self, path: str) -> Commit:
        fix = (
            "Restore it from a backup, or move it (and every later manifest) aside: the next extract then "
            "continues from the commit before it."
        )
        data = read_json_object(
            self.storage, path, what="commit manifest", fix=fix, keys={"seq": int, "files": list, "committed_at": str}
        )
        try:
            return Commit.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(self.storage, path, "commit manifest", f"an entry is malformed ({exc!r})", fix) from None

    def latest(self) -> Commit | None:
        commits = self.commits()
        return commits[-1] if commits else None

    def begin(self) -> CommitWriter:
        latest = self.latest()
        return CommitWriter(self, (latest.seq if latest else 0) + 1)

    def schema(self, commits: list[Commit] | None = None) -> pa.Schema | None:
        """The union of the schemas of the given commits (all by default); columns added later are nullable."""
        schemas = [c.schema for c in (self.commits() if commits is None else commits) if c.schema is not None]
        if not schemas:
            return None
        return pa.unify_schemas(schemas, promote_options="permissive")

    def scan_columns(self, columns: list[str], *, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """A few columns of every row version, file by file with no read-ahead: the leanest full pass
        (used for key snapshots, whose memory must not grow with readers' buffers)."""
        schema = self.schema()
        if schema is None:
            return
        target = pa.schema([schema.field(c) for c in columns])
        for commit in self.commits():
            for path in commit.files:
                with self.storage.fs.open_input_file(self.storage.full_path(path)) as handle:
                    for batch in pq.ParquetFile(handle).iter_batches(
                        columns=columns, batch_size=batch_size, use_threads=False
                    ):
                        yield batch if batch.schema == target else batch.cast(target)

    def column_range(self, column: str) -> tuple[Any, Any] | None:
        """Smallest and largest non-null value of ``column`` over every committed file, read from the
        Parquet footers' statistics (no data read); None when some row group has no statistics."""
        low = high = None
        for commit in self.commits():
            for path in commit.files:
                with self.storage.fs.open_input_file(self.storage.full_path(path)) as handle:
                    meta = pq.ParquetFile(handle).metadata
                names = [meta.schema.column(i).path for i in range(meta.num_columns)]
                if column not in names:
                    continue  # a file written before the column existed holds only nulls for it
                index = names.index(column)
                for g in range(meta.num_row_groups):
                    chunk = meta.row_group(g).column(index)
                    stats = chunk.statistics
                    if stats is None or not stats.has_min_max:
                        if stats is not None and stats.has_null_count and stats.null_count == chunk.num_values:
                            continue  # nulls only
                        return None
                    low = stats.min if low is None else min(low, stats.min)
                    high = stats.max if high is None else max(high, stats.max)
        return None if low is None else (low, high)

    def scan(
        self,
        commits: list[Commit] | None = None,
        *,
        columns: list[str] | None = None,
        filter: pads.Expression | None = None,
        batch_size: int = 65_536,
        use_threads: bool = True,
    ) -> Iterator[pa.RecordBatch]:
        """Row versions of the given commits, in commit order, in bounded memory.

        ``use_threads=False`` decodes on the calling thread: cheaper in total CPU when the caller
        already keeps the cores busy (a load's prepare threads).
        """
        commits = self.commits() if commits is None else commits
        schema = self.schema(commits)
        for commit in commits:
            if not commit.files:
                continue
            ds = pads.dataset(
                [self.storage.full_path(p) for p in commit.files],
                schema=schema,
                format="parquet",
                filesystem=self.storage.fs,
            )
            yield from ds.to_batches(columns=columns, filter=filter, batch_size=batch_size, use_threads=use_threads)
