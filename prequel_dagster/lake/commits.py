"""The dataset log: Parquet files of row versions, made visible only by a commit manifest.

An extract writes its data files first, then creates ``_commits/<seq>.json`` naming them, with
the cursor and counters, in one atomic create. A run that dies before that leaves files no
manifest names: they are never read, and the next run starts again from the last commit's cursor.

Readers work from the log's **state** (:class:`LogState`): the live data files in commit order (see
``data_files``: each with the commits it holds, its schema and the value ranges of its integer and
temporal columns, recorded in the manifest when the file is written), plus the latest commit.
The state is read from the newest checkpoint (see ``checkpoints``) and the commit and compaction
manifests listed after it, so its cost follows the commits since the last checkpoint, not the
dataset's history. Compactions (see ``compaction``) replace many live files by one that keeps every
row version with its commit seq in ``_prequel_seq``, so any commit range stays exactly readable.

Scans build one Arrow dataset whose fragments carry what the state knows about each file as
guarantees: a filter on a commit range, a key or a cursor skips the files that cannot match without
opening them. :meth:`DatasetLog.commits` still reads every manifest: the history, for audits only.
"""

import base64
import datetime as dt
import decimal
import json
import logging
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from ..config.errors import PrequelError
from ..stores import Store
from . import checkpoints, layout
from .data_files import SEQ_COLUMN, DataFile, ParquetParts, PendingFile
from .lake_files import corrupt, read_json_object

OP_COLUMN = "_prequel_op"
"""Per-row change kind in the lake: ``insert``, ``update`` or ``delete``."""

FILE_ROWS = 1_000_000
"""Rows per Parquet file before a writer rolls to the next part."""

Log = Callable[[str], None]
_LOGGER = logging.getLogger("prequel_dagster.lake")


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


class CommitRef(NamedTuple):
    seq: int
    token: str


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
    data_files: tuple[DataFile, ...] = field(default=(), compare=False, repr=False)
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Commit":
        schema = schema_from_b64(data["schema"]) if data.get("schema") else None
        entries = data["files"]
        return cls(
            seq=data["seq"],
            files=tuple(f["path"] for f in entries),
            rows=sum(f["rows"] for f in entries),
            cursor=decode_cursor(data.get("cursor")),
            schema=schema,
            row_count=data.get("row_count", 0),
            counts=data.get("counts", {}),
            committed_at=data["committed_at"],
            run_id=data.get("run_id"),
            token=data.get("token") or data["committed_at"],  # manifests before tokens: the commit time
            data_files=tuple(DataFile.from_entry(f, seq=data["seq"], schema=schema) for f in entries),
            manifest=data,
        )


@dataclass(frozen=True)
class Compaction:
    """One committed compaction: live files it replaced by the files it wrote."""

    number: int
    token: str
    committed_at: str
    base_seq: int  # the latest commit when it read the log: everything it replaced is at or before it
    replaces: tuple[str, ...]
    files: tuple[DataFile, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Compaction":
        files = tuple(
            DataFile.from_entry(f, seq=None, schema=schema_from_b64(f["schema"]) if f.get("schema") else None)
            for f in data["files"]
        )
        return cls(
            number=data["number"],
            token=data["token"],
            committed_at=data["committed_at"],
            base_seq=data["base_seq"],
            replaces=tuple(data["replaces"]),
            files=files,
        )


class InconsistentLog(PrequelError):
    """A compaction that does not fit the commits before it (manifests moved or removed by hand)."""


@dataclass
class LogState:
    """What readers need from a dataset's log: the live files in commit order, the latest commit."""

    latest: Commit | None = None
    files: list[DataFile] = field(default_factory=list)
    compaction: int = 0  # the last compaction applied
    checkpoint: int = 0  # the seq of the checkpoint it was read from (0: none)
    previous: int = 0  # the checkpoint before that one
    checkpoint_at: str | None = None
    with_rows: CommitRef | None = None  # the latest commit that brought rows
    retired_before: dict[str, str] = field(default_factory=dict)
    """Files retired (replaced by a compaction) between the checkpoint before ``checkpoint`` and it, with when."""
    retired_since: dict[str, str] = field(default_factory=dict)
    """Files retired by compactions after ``checkpoint``, with when."""
    _schema: pa.Schema | None = None
    _schema_known: bool = False

    @property
    def seq(self) -> int:
        return self.latest.seq if self.latest else 0

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def schema(self) -> pa.Schema | None:
        if not self._schema_known:
            self._schema = union_schema(f.schema for f in self.files)
            self._schema_known = True
        return self._schema

    def retired(self) -> dict[str, str]:
        return {**self.retired_before, **self.retired_since}

    def overlapping(self, after: int, through: int) -> list[DataFile]:
        """Live files holding any commit in ``(after, through]``, in commit order."""
        return [f for f in self.files if f.last_seq > after and f.first_seq <= through]

    def add_commit(self, commit: Commit) -> None:
        self.latest = commit
        if commit.data_files:
            self.files.extend(commit.data_files)
            self._schema_known = False
        if commit.rows:
            self.with_rows = CommitRef(commit.seq, commit.token)

    def apply(self, compaction: Compaction) -> None:
        """Replace the compaction's files; InconsistentLog if they are not all live (or it compacted
        commits this state does not have)."""
        live = {f.path: i for i, f in enumerate(self.files)}
        missing = [p for p in compaction.replaces if p not in live]
        if missing or compaction.base_seq > self.seq:
            why = f"{len(missing)} of the files it replaced are not live" if missing else "its commits are missing"
            raise InconsistentLog(why)
        at = min(live[p] for p in compaction.replaces)
        gone = set(compaction.replaces)
        kept = [f for f in self.files if f.path not in gone]
        position = sum(1 for f in self.files[:at] if f.path not in gone)
        self.files = kept[:position] + list(compaction.files) + kept[position:]
        self.compaction = compaction.number
        for path in compaction.replaces:
            self.retired_since[path] = compaction.committed_at
        self._schema_known = False

    # ------------------------------------------------------------------ checkpoint form

    def to_checkpoint(self) -> dict[str, Any]:
        distinct: list[pa.Schema] = []  # each schema once, however many files share it
        entries = []
        for f in self.files:
            entry = {**f.entry(), "first": f.first_seq, "last": f.last_seq, "compacted": f.compacted}
            if f.schema is not None:
                at = next((i for i, s in enumerate(distinct) if f.schema is s or f.schema.equals(s)), None)
                if at is None:
                    at = len(distinct)
                    distinct.append(f.schema)
                entry["schema"] = at
            entries.append(entry)
        schemas = [schema_to_b64(s) for s in distinct]
        assert self.latest is not None
        return {
            "compaction": self.compaction,
            "written_at": dt.datetime.now(dt.UTC).isoformat(),
            "previous": self.checkpoint,
            "latest": self.latest.manifest,
            "with_rows": list(self.with_rows) if self.with_rows else None,
            "schemas": schemas,
            "files": entries,
            "retired": self.retired_since,
        }

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any]) -> "LogState":
        schemas = [schema_from_b64(s) for s in data["schemas"]]
        files = []
        for entry in data["files"]:
            schema = schemas[entry["schema"]] if "schema" in entry else None
            files.append(DataFile.from_entry(entry, seq=None, schema=schema, compacted=bool(entry["compacted"])))
        latest = Commit.from_json(data["latest"])
        if latest.seq != data["seq"]:
            raise ValueError("its latest commit is not its seq")
        with_rows = data.get("with_rows")
        return cls(
            latest=latest,
            files=files,
            compaction=data["compaction"],
            checkpoint=data["seq"],
            previous=data.get("previous") or 0,
            checkpoint_at=data["written_at"],
            with_rows=CommitRef(*with_rows) if with_rows else None,
            retired_before=dict(data.get("retired") or {}),
        )


def union_schema(schemas: Iterable[pa.Schema | None]) -> pa.Schema | None:
    """The union of the schemas (columns added later are nullable), each distinct schema once."""
    distinct: list[pa.Schema] = []
    for schema in schemas:
        if schema is not None and not any(schema is s or schema.equals(s) for s in distinct):
            distinct.append(schema)
    if not distinct:
        return None
    return distinct[0] if len(distinct) == 1 else pa.unify_schemas(distinct, promote_options="permissive")


# ---------------------------------------------------------------------------------------------- writing


@dataclass
class CommitWriter:
    """Writes one extract's row versions; nothing is visible until :meth:`commit`."""

    log: "DatasetLog"
    seq: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _parts: ParquetParts | None = None

    def _out(self) -> ParquetParts:
        if self._parts is None:
            stem = f"{self.seq:0{layout.SEQ_WIDTH}d}-{self.token}"
            self._parts = ParquetParts(self.log.storage, layout.data_dir(self.log.directory), stem)
        return self._parts

    @property
    def files(self) -> list[PendingFile]:
        return self._parts.files if self._parts else []

    @property
    def schema(self) -> pa.Schema | None:
        return self._parts.schema if self._parts else None

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        out = self._out()
        out.write(batch, roll=bool(out.files) and out.files[-1].rows >= FILE_ROWS)

    def _close_file(self) -> None:
        if self._parts is not None:
            self._parts.close()

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
            "files": self._parts.entries() if self._parts else [],
            "cursor": encode_cursor(cursor),
            "schema": schema_to_b64(self.schema) if self.schema is not None else None,
            "row_count": row_count,
            "counts": counts,
            "run_id": run_id,
        }
        self.log.storage.create_exclusive(
            f"{layout.commits_dir(self.log.directory)}/{layout.seq_name(self.seq)}",
            json.dumps(manifest, indent=1).encode(),
        )
        commit = Commit.from_json(manifest)
        self.log._committed(commit)
        return commit

    def abort(self) -> None:
        """Drop what was written (best effort; unreferenced files are ignored anyway)."""
        if self._parts is not None:
            self._parts.remove()


# ---------------------------------------------------------------------------------------------- the log


class DatasetLog:
    """The committed history of one provider dataset in the lake.

    ``log`` receives what a reader should know but that changes no result (a damaged checkpoint
    skipped, say); by default the ``prequel_dagster.lake`` logger.
    """

    def __init__(self, storage: Store, provider_id: str, dataset_id: str, *, log: Log | None = None):
        self.storage = storage
        self.provider_id = provider_id
        self.dataset_id = dataset_id
        self.directory = layout.dataset_dir(provider_id, dataset_id)
        self.warn: Log = log or _LOGGER.warning
        self._state: LogState | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ reading the log

    def state(self) -> LogState:
        """The live state: the newest checkpoint plus the manifests after it (read once, then kept)."""
        with self._lock:
            if self._state is None:
                self._state = self._read_state()
            return self._state

    def refresh(self) -> LogState:
        """The state read again (after other writers committed)."""
        with self._lock:
            self._state = None
            return self.state()

    def _read_state(self) -> LogState:
        data = checkpoints.latest_checkpoint(self.storage, self.directory, self.warn)
        if data is not None:
            try:
                return self._extend(LogState.from_checkpoint(data))
            except (KeyError, TypeError, ValueError, IndexError, pa.ArrowException) as exc:
                self.warn(
                    f"checkpoint {layout.seq_name(data.get('seq', 0))} of {self.storage.uri(self.directory)} cannot "
                    f"be used ({exc!r}); reading every manifest instead"
                )
            except InconsistentLog as exc:
                self.warn(
                    f"checkpoint {layout.seq_name(data['seq'])} of {self.storage.uri(self.directory)} does not fit "
                    f"the manifests after it ({exc}); reading every manifest instead"
                )
        try:
            return self._extend(LogState())
        except InconsistentLog as exc:
            raise PrequelError(
                f"dataset log {self.storage.uri(self.directory)}: a compaction manifest does not fit the commits "
                f"({exc}). If commit manifests were moved aside, move every compaction in "
                f"{layout.compactions_dir(self.directory)} made after them aside too."
            ) from None

    def _extend(self, state: LogState) -> LogState:
        # Compactions first, commits second: every compaction listed then replaced only files of
        # commits that the (later) commit listing includes.
        compactions = self.compactions_after(state.compaction)
        for commit in self.commits_after(state.seq):
            state.add_commit(commit)
        for compaction in compactions:
            state.apply(compaction)
        return state

    def commits_after(self, seq: int) -> list[Commit]:
        """The commits after ``seq``, from the manifests listed after it."""
        folder = layout.commits_dir(self.directory)
        names = self.storage.list_names_after(folder, layout.seq_name(seq)) if seq else self.storage.list_names(folder)
        seqs = sorted(s for s in (layout.parse_seq(n) for n in names) if s is not None and s > seq)
        return [self._read_manifest(f"{folder}/{layout.seq_name(s)}") for s in seqs]

    def compactions_after(self, number: int) -> list[Compaction]:
        folder = layout.compactions_dir(self.directory)
        names = self.storage.list_names_after(folder, layout.seq_name(number))
        numbers = sorted(s for s in (layout.parse_manifest_seq(n) for n in names) if s is not None and s > number)
        return [self._read_compaction(f"{folder}/{layout.seq_name(n)}") for n in numbers]

    def commits(self) -> list[Commit]:
        """Every commit of the dataset's history, from every manifest (an audit's view: O(history);
        readers of data use :meth:`state`, :meth:`scan` and :meth:`scan_between`)."""
        return self.commits_after(0)

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

    def _read_compaction(self, path: str) -> Compaction:
        fix = (
            "Restore it from a backup, or move it (and every later compaction) aside, together with the files "
            "in compacted/ it names: the files it replaced are then read again."
        )
        data = read_json_object(
            self.storage,
            path,
            what="compaction manifest",
            fix=fix,
            keys={"number": int, "token": str, "committed_at": str, "base_seq": int, "replaces": list, "files": list},
        )
        try:
            return Compaction.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(self.storage, path, "compaction manifest", f"an entry is malformed ({exc!r})", fix) from None

    def latest(self) -> Commit | None:
        return self.state().latest

    def latest_with_rows(self) -> CommitRef | None:
        """The latest commit that brought rows (a dataset's data version)."""
        return self.state().with_rows

    # ------------------------------------------------------------------ writing

    def begin(self) -> CommitWriter:
        return CommitWriter(self, self.state().seq + 1)

    def _committed(self, commit: Commit) -> None:
        """A commit of this process: added to the kept state, and a checkpoint made when one is due."""
        with self._lock:
            state = self._state
            if state is None or state.seq != commit.seq - 1:
                self._state = None  # others committed meanwhile: read again when asked
                return
            state.add_commit(commit)
            if commit.seq - state.checkpoint >= checkpoints.CHECKPOINT_EVERY:
                self.write_checkpoint()

    def write_checkpoint(self) -> bool:
        """Checkpoint the kept state at its latest commit (False: nothing to checkpoint, or it exists)."""
        with self._lock:
            state = self.state()
            if state.latest is None or state.checkpoint == state.seq:
                return False
            try:
                payload = state.to_checkpoint()
                written = checkpoints.write_checkpoint(self.storage, self.directory, state.seq, payload)
            except Exception as exc:  # a cache: the commit stands, readers read the manifests
                self.warn(f"checkpoint {state.seq} of {self.storage.uri(self.directory)} not written: {exc!r}")
                return False
            state.previous, state.checkpoint, state.checkpoint_at = state.checkpoint, state.seq, payload["written_at"]
            state.retired_before, state.retired_since = state.retired_since, {}
            return written

    # ------------------------------------------------------------------ schemas and ranges

    def schema(self, commits: list[Commit] | None = None) -> pa.Schema | None:
        """The union of the schemas of the given commits (all live data by default); columns added
        later are nullable."""
        if commits is None:
            return self.state().schema
        return union_schema(c.schema for c in commits)

    def schema_between(self, after: int, through: int) -> pa.Schema | None:
        """The union of the schemas of commits ``(after, through]``."""
        return union_schema(f.schema for f in self.state().overlapping(after, through))

    def column_range(self, column: str) -> tuple[Any, Any] | None:
        """Smallest and largest non-null value of integer ``column`` over every live file, from the ranges
        the manifests recorded from the Parquet footers (or the footers themselves, for files from before
        that); None when some file has no statistics for it."""
        low = high = None
        for f in self.state().files:
            if f.schema is not None and column not in f.schema.names:
                continue  # a file written before the column existed holds only nulls for it
            if f.ranges is not None:
                if column not in f.ranges:
                    return None
                span = f.ranges[column]
                if span is None:
                    continue
                a, b = span[0], span[1]
            else:
                found = self._footer_range(f.path, column)
                if found is None:
                    return None
                if found == ():
                    continue
                a, b = found
            low = a if low is None else min(low, a)
            high = b if high is None else max(high, b)
        return None if low is None else (low, high)

    def _footer_range(self, path: str, column: str) -> tuple[Any, ...] | None:
        with self.storage.fs.open_input_file(self.storage.full_path(path)) as handle:
            meta = pq.ParquetFile(handle).metadata
        names = [meta.schema.column(i).path for i in range(meta.num_columns)]
        if column not in names:
            return ()
        index = names.index(column)
        low = high = None
        for g in range(meta.num_row_groups):
            chunk = meta.row_group(g).column(index)
            stats = chunk.statistics
            if stats is None or not stats.has_min_max:
                if stats is not None and stats.has_null_count and stats.null_count == chunk.num_values:
                    continue  # nulls only
                return None
            low = stats.min if low is None else min(low, stats.min)
            high = stats.max if high is None else max(high, stats.max)
        return () if low is None else (low, high)

    # ------------------------------------------------------------------ scans

    def scan_columns(
        self, columns: list[str], *, through: int | None = None, batch_size: int = 65_536
    ) -> Iterator[pa.RecordBatch]:
        """A few columns of every row version (of commits up to ``through``), file by file with no
        read-ahead: the leanest full pass (used for key snapshots, whose memory must not grow with
        readers' buffers)."""
        state = self.state()
        schema = state.schema
        if schema is None:
            return
        target = pa.schema([schema.field(c) for c in columns])
        for f in state.files:
            if through is not None and f.first_seq > through:
                break
            cut = f.compacted and through is not None and f.last_seq > through
            with self.storage.fs.open_input_file(self.storage.full_path(f.path)) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(
                    columns=[*columns, SEQ_COLUMN] if cut else columns, batch_size=batch_size, use_threads=False
                ):
                    if cut:
                        keep = pc.less_equal(batch.column(len(columns)), through)
                        batch = batch.filter(keep).select(list(range(len(columns))))
                    yield batch if batch.schema == target else batch.cast(target)

    def _scan_files(
        self,
        files: list[DataFile],
        schema: pa.Schema | None,
        *,
        seqs: pads.Expression | None,
        columns: list[str] | None,
        filter: pads.Expression | None,
        prune: Collection[str] | None,
        batch_size: int,
        use_threads: bool,
    ) -> Iterator[pa.RecordBatch]:
        files = [f for f in files if f.rows]
        if schema is None or not files:
            return
        full = schema.append(pa.field(SEQ_COLUMN, pa.int64())) if SEQ_COLUMN not in schema.names else schema
        # column ranges only help a filter: on the columns it names (all, unless told)
        ranged: Collection[str] = () if filter is None else schema.names if prune is None else prune
        fmt = pads.ParquetFileFormat()
        fragments = [
            fmt.make_fragment(
                self.storage.full_path(f.path),
                filesystem=self.storage.fs,
                partition_expression=f.guarantee(full, ranged),
                file_size=f.bytes,
            )
            for f in files
        ]
        dataset = pads.FileSystemDataset(fragments, full, fmt, self.storage.fs)
        condition = seqs if filter is None else filter if seqs is None else seqs & filter
        wanted = columns if columns is not None else [n for n in schema.names if n != SEQ_COLUMN]
        yield from dataset.to_batches(columns=wanted, filter=condition, batch_size=batch_size, use_threads=use_threads)

    def scan(
        self,
        commits: list[Commit] | None = None,
        *,
        columns: list[str] | None = None,
        filter: pads.Expression | None = None,
        prune: Collection[str] | None = None,
        batch_size: int = 65_536,
        use_threads: bool = True,
    ) -> Iterator[pa.RecordBatch]:
        """Row versions of the given commits (all by default), in commit order, in bounded memory.

        Files that cannot match ``filter`` by their recorded ranges (of the columns in ``prune``, all by
        default) are not opened. ``use_threads=False``
        decodes on the calling thread: cheaper in total CPU when the caller already keeps the cores
        busy (a load's prepare threads).
        """
        state = self.state()
        if commits is None:
            yield from self._scan_files(
                state.files,
                state.schema,
                seqs=None,
                columns=columns,
                filter=filter,
                prune=prune,
                batch_size=batch_size,
                use_threads=use_threads,
            )
            return
        wanted = sorted({c.seq for c in commits})
        if not wanted:
            return
        files = [
            f
            for f in state.overlapping(wanted[0] - 1, wanted[-1])
            if any(f.first_seq <= s <= f.last_seq for s in wanted)
        ]
        seqs = pads.field(SEQ_COLUMN).isin(pa.array(wanted, pa.int64()))
        yield from self._scan_files(
            files,
            union_schema(c.schema for c in commits),
            seqs=seqs,
            columns=columns,
            filter=filter,
            prune=prune,
            batch_size=batch_size,
            use_threads=use_threads,
        )

    def scan_between(
        self,
        after: int,
        through: int,
        *,
        columns: list[str] | None = None,
        filter: pads.Expression | None = None,
        prune: Collection[str] | None = None,
        batch_size: int = 65_536,
        use_threads: bool = True,
    ) -> Iterator[pa.RecordBatch]:
        """Row versions of commits ``(after, through]``, in commit order: what a load of that range sends,
        the same rows in the same order whether or not a compaction merged their files since."""
        files = self.state().overlapping(after, through)
        seq = pads.field(SEQ_COLUMN)
        yield from self._scan_files(
            files,
            union_schema(f.schema for f in files),
            seqs=(seq > pa.scalar(after, pa.int64())) & (seq <= pa.scalar(through, pa.int64())),
            columns=columns,
            filter=filter,
            prune=prune,
            batch_size=batch_size,
            use_threads=use_threads,
        )
