"""Extract: read new and changed rows of one provider dataset into the datalake, atomically."""

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ..config.errors import SourceError
from ..config.models import DatasetChain, PrequelConfig
from ..lake.changes import (
    Classified,
    ExtractCounts,
    KeySnapshot,
    classify,
    classify_newer,
    dedupe_last,
    latest_versions,
)
from ..lake.commits import OP_COLUMN, Commit, CommitWriter, DatasetLog
from ..sources import Reader, check_columns, lookback_seconds, open_reader, read_ahead
from ..stores import Store, open_datalake
from .windows import Window, filter_to_window, live_records

Log = Callable[[str], None]
PROGRESS_EVERY_SECONDS = 5.0


@dataclass
class ExtractResult:
    dataset_id: str
    provider_id: str
    counts: ExtractCounts
    commit: Commit | None  # None when nothing changed and the cursor did not move
    cursor: Any
    previous_cursor: Any
    schema: pa.Schema | None
    row_count: int
    rows_written: int
    seconds: float
    data_uri: str
    schema_changes: list[str] = field(default_factory=list)
    window: Window | None = None  # the time window read (a partition's, or a range's)
    resync: bool = False  # read in full and compared with the lake


def lower_bound(cursor: Any, lookback: int) -> Any:
    """Re-read from ``cursor - lookback`` so late or equal timestamps are not missed."""
    if cursor is None or not lookback:
        return cursor
    if isinstance(cursor, dt.datetime):
        return cursor - dt.timedelta(seconds=lookback)
    return cursor


def _max_value(values: pa.ChunkedArray | pa.Array) -> Any:
    if values.null_count == len(values):
        return None
    return pc.max(values).as_py()


def describe_schema_changes(before: pa.Schema | None, after: pa.Schema | None) -> list[str]:
    if before is None or after is None:
        return []
    changes = []
    old = {f.name: f.type for f in before if f.name != OP_COLUMN}
    new = {f.name: f.type for f in after if f.name != OP_COLUMN}
    changes += [f"column added: {n} ({t})" for n, t in new.items() if n not in old]
    changes += [f"column dropped: {n} (kept in the lake; new rows have it null)" for n in old if n not in new]
    changes += [f"column type changed: {n} {old[n]} -> {t}" for n, t in new.items() if n in old and old[n] != t]
    return changes


_BACKGROUND = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prequel-extract")


class _Classifier:
    """Picks the cheapest faithful comparison for each batch of extracted rows.

    Empty lake: every row is new. Rows whose cursor is past the previous extract's: changed, only
    new-vs-existing is looked up (key snapshot). Rows at or before it (the lookback window) and
    reads without a cursor: compared with their latest versions in the lake, column by column.
    """

    def __init__(
        self, lake: DatasetLog | None, dataset: Any, previous_cursor: Any, bound: Any, *, compare_all: bool = False
    ):
        self.lake: Any = lake  # None only when the lake is empty (then every row is new)
        self.dataset, self.previous_cursor, self.bound = dataset, previous_cursor, bound
        self.compare_all = compare_all  # a window or a resync: fact rows compared column by column too
        self.key = dataset.primary_key
        self._snapshot: Future[KeySnapshot] | None = None
        if lake is not None and previous_cursor is not None:  # built while the source starts answering
            self._snapshot = _BACKGROUND.submit(KeySnapshot, lake, self.key)

    def _options(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "deleted_column": self.dataset.is_deleted_column,
            "append_only": self.dataset.type == "fact" and not self.compare_all,
        }

    def classify(self, table: pa.Table, *, keys_unique: bool) -> Classified:
        if self.lake is None:
            return classify(table, None, keys_unique=keys_unique, **self._options())
        if not keys_unique:
            table = dedupe_last(table, self.key)
        cursor_col = self.dataset.cursor_column
        if self.previous_cursor is None or not cursor_col or cursor_col not in table.column_names:
            return self._compare(table, also=None)
        newer = pc.fill_null(pc.greater(table.column(cursor_col), self.previous_cursor), False)
        parts = [self._classify_changed(table.filter(newer))]
        if parts[0].counts.records_processed < table.num_rows:
            parts.append(self._compare_window(table.filter(pc.invert(newer))))
        return Classified.combine(parts)

    def _classify_changed(self, table: pa.Table) -> Classified:
        if not table.num_rows:
            return Classified(table.append_column(OP_COLUMN, pa.array([], pa.string())))
        if self._snapshot is None:
            self._snapshot = _BACKGROUND.submit(KeySnapshot, self.lake, self.key)
        return classify_newer(table, self._snapshot.result(), **self._options())

    def _compare_window(self, table: pa.Table) -> Classified:
        """Rows re-read by the lookback: unchanged ones have their latest version inside the window
        (found by a scan that row-group statistics keep short); the others changed since."""
        window = pads.field(self.dataset.cursor_column) >= self.bound if self.bound is not None else None
        keys = table.column(self.key).combine_chunks()
        previous = latest_versions(self.lake, keys, self.key, also=window)
        in_window = (
            pc.is_in(keys, value_set=previous.column(self.key)) if previous is not None else pa.repeat(False, len(keys))
        )
        return Classified.combine(
            [
                classify(table.filter(in_window), previous, keys_unique=True, **self._options()),
                self._classify_changed(table.filter(pc.invert(in_window))),
            ]
        )

    def _compare(self, table: pa.Table, also: Any) -> Classified:
        previous = latest_versions(self.lake, table.column(self.key).combine_chunks(), self.key, also=also)
        return classify(table, previous, keys_unique=True, **self._options())


def _hard_deletes(lake: DatasetLog, key: str, source_keys: list[pa.Array], dataset_id: str) -> pa.Table | None:
    """The latest versions of the lake's live keys the source no longer has, as ``delete`` versions."""
    snapshot = KeySnapshot(lake, key)
    lake_keys = snapshot.all_keys()
    live = lake_keys.filter(pc.invert(pc.is_in(lake_keys, value_set=snapshot.deleted)))
    if not len(live):
        return None
    present = pa.chunked_array(source_keys, lake_keys.type) if source_keys else pa.chunked_array([], lake_keys.type)
    if len(present) == 0:
        raise SourceError(
            f"dataset '{dataset_id}': the source returned no rows, so hard-delete detection would delete all "
            f"{len(live):,} records; refusing. Check the table and the user's grants, or turn off "
            "dimension.detect_hard_deletes to empty it on purpose"
        )
    return _deletes(lake, key, live.filter(pc.invert(pc.is_in(live, value_set=present.combine_chunks()))))


def _deletes(lake: DatasetLog, key: str, gone: pa.Array) -> pa.Table | None:
    """The latest versions of the lake's keys ``gone``, as ``delete`` versions (None for no keys)."""
    if not len(gone):
        return None
    versions = latest_versions(lake, gone, key)
    assert versions is not None  # the keys are the lake's own
    ops = pa.repeat("delete", versions.num_rows)
    return versions.set_column(versions.schema.get_field_index(OP_COLUMN), OP_COLUMN, ops.cast(pa.string()))


def _reader(source: Any, dataset: Any, config: PrequelConfig) -> Reader:
    if dataset.method == "push":
        from ..push.reader import PushReader

        return PushReader(source, dataset, config)
    return open_reader(source, dataset, config)


def run_extract(
    config: PrequelConfig,
    dataset_id: str,
    *,
    storage: Store | None = None,
    run_id: str | None = None,
    log: Log = lambda message: None,
    window: Window | tuple[dt.datetime, dt.datetime] | None = None,
    resync: bool = False,
) -> ExtractResult:
    """One Extract of a dataset: read changed rows, classify them against the lake, commit.

    ``window`` (a partition's ``[start, end)``, timezone-aware) reads only the rows whose
    ``created_at_column`` is in it, compares each with the lake (column by column), and turns the
    lake's live records of the window that the source no longer returns into deletes: extracting a
    window again commits only what changed since (nothing when nothing did). A push dataset cannot
    be re-read, so its window extract commits what was pushed, as always. ``resync`` reads a table
    or query in full (a glob dataset's every file) and compares every row with the lake, whatever
    the cursor says. The cursor only ever moves forward.
    """
    chain = config.chain(dataset_id)
    extract = _Extract(
        config,
        chain,
        storage or open_datalake(chain.datalake, config),
        log,
        window=Window.of(window) if window is not None else None,
        resync=resync,
    )
    try:
        return extract.run(run_id)
    finally:
        extract.reader.close()


class _Extract:
    """One extract, in steps: plan the read, read and classify, find hard deletes, commit."""

    def __init__(
        self,
        config: PrequelConfig,
        chain: DatasetChain,
        storage: Store,
        log: Log,
        *,
        window: Window | None = None,
        resync: bool = False,
    ):
        self.started = time.monotonic()
        self.dataset, self.source, self.provider = chain.dataset, chain.source, chain.provider
        self.storage, self.log = storage, log
        self.lake = DatasetLog(storage, self.provider.id, self.dataset.id, log=log)
        self.latest = self.lake.latest()
        self.previous_cursor = self.latest.cursor if self.latest else None
        # glob and push datasets take new files (fingerprints; staged batches) and compare by key
        self.glob = self.dataset.method in ("glob", "push")
        self.push = self.dataset.method == "push"
        self.requested_window = window
        if window is not None and (self.dataset.type != "fact" or self.dataset.method == "glob"):
            raise SourceError(
                f"dataset '{self.dataset.id}': a time window needs a table, sql or push fact dataset (its "
                "created_at_column places each row in one window); extract it without a window"
            )
        self.window = window if not self.push else None  # what was pushed is committed as it comes
        self.resync = resync and not self.push and self.window is None
        self.window_keys: list[pa.Array] = []  # the keys the source returned for the window
        self.bound = self._lower_bound()
        self.reader: Reader = _reader(self.source, self.dataset, config)
        self.counts = ExtractCounts()
        self.cursor = self.previous_cursor
        self.source_schema: pa.Schema | None = None
        self.full_read = self.bound is None and not self.glob and self.window is None
        self.hard_deletes = bool(self.dataset.dimension and self.dataset.dimension.detect_hard_deletes and self.latest)
        self.seen_keys: list[pa.Array] = []  # a full read's keys, for hard-delete detection
        # every extract reads in full without a cursor column, or with one still NULL in every row read
        cursor_column = self.dataset.cursor_column
        self.stuck = bool(cursor_column) and self.latest is not None and self.previous_cursor is None and not self.glob
        full_every_time = not self.glob and (not cursor_column or self.stuck)
        dimension = self.dataset.dimension
        self.guard = dimension.max_full_read_rows if dimension and full_every_time else None

    def _lower_bound(self) -> Any:
        if self.window is not None or self.resync:  # the window bounds the read; a resync reads everything
            return None
        if self.glob:  # the cursor is the fingerprints of the files already read
            return self.previous_cursor if isinstance(self.previous_cursor, dict) else None
        if not self.dataset.cursor_column:
            return None
        return lower_bound(self.previous_cursor, lookback_seconds(self.source, self.dataset))

    def _classifier(self) -> "_Classifier":
        if not self.latest:
            return _Classifier(None, self.dataset, None, None)
        if self.glob or self.window is not None or self.resync:  # every row compared with the lake by key
            compare_all = self.window is not None or self.resync
            return _Classifier(self.lake, self.dataset, None, None, compare_all=compare_all)
        return _Classifier(self.lake, self.dataset, self.previous_cursor, self.bound)

    def run(self, run_id: str | None) -> ExtractResult:
        d = self.dataset
        what = (
            f"(rows with {d.cursor_column} in {self.window.describe()}, compared with the lake's records of it)"
            if self.window is not None
            else "(resync: every file, compared with the lake)"
            if self.resync and self.glob
            else "(resync: full read, compared with the lake)"
            if self.resync
            else "(new or changed files)"
            if self.glob
            else f"(rows with {d.cursor_column} >= {self.bound})"
            if self.bound is not None
            else "(full read)"
        )
        self.log(f"extracting dataset '{d.id}' of provider '{self.provider.id}' from source '{self.source.id}' {what}")
        if self.push and self.requested_window is not None:
            self.log(
                "  a push dataset is not re-read by window: the batches pushed since the last extract are committed"
            )
        writer = self.lake.begin()
        try:
            self._read_and_classify(writer)
            if self.glob:
                self.cursor = self.reader.cursor_after_read()
            if self.window is not None:
                self._write_window_deletes(writer)
            if self.hard_deletes:
                self._write_hard_deletes(writer)
            self._write_superseded(writer)
            commit = self._commit(writer, run_id)
        except BaseException:
            writer.abort()
            raise
        after_commit = getattr(self.reader, "after_commit", None)
        if after_commit is not None and (commit is not None or self.cursor != self.previous_cursor):
            after_commit()  # (push: the staged batches the commit took)
        return self._result(commit, writer)

    def _read_and_classify(self, writer: CommitWriter) -> None:
        classifier = self._classifier()
        key, cursor_column = self.dataset.primary_key, self.dataset.cursor_column
        megabytes, last_report = 0.0, time.monotonic()
        checked_names: list[str] | None = None
        if self.window is not None:  # (table and sql readers take a window)
            batches = cast(Any, self.reader).read(self.bound, window=self.window)
        else:
            batches = self.reader.read(self.bound)
        where = f"dataset '{self.dataset.id}': created_at_column '{cursor_column}'"
        for batch in read_ahead(batches, depth=2):
            table = pa.Table.from_batches([batch])
            megabytes += batch.nbytes / 1e6
            self.source_schema = self.source_schema or table.schema
            if table.schema.names != checked_names:  # each file of a glob dataset has its own columns
                check_columns(self.source, self.dataset, table.schema.names)
                checked_names = table.schema.names
            if self.window is not None and cursor_column:  # exactly the window, whatever the source compared
                table = filter_to_window(table, cursor_column, self.window, where)
                self.window_keys.append(table.column(key).combine_chunks())
                if not table.num_rows:
                    continue
            self._check_guard(table.num_rows)
            if self.hard_deletes and self.full_read:
                self.seen_keys.append(table.column(key).combine_chunks())
            result = classifier.classify(table, keys_unique=self.reader.keys_unique)
            writer.write(result.changed)
            self.counts.add(result.counts)
            if not self.glob and cursor_column and cursor_column in table.column_names:
                high = _max_value(table.column(cursor_column))
                if high is not None and (self.cursor is None or high > self.cursor):
                    self.cursor = high
            if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = time.monotonic()
                rate = self.counts.records_processed / max(1e-9, last_report - self.started)
                self.log(
                    f"  {self.counts.records_processed:,} rows read ({megabytes:,.0f} MB), {writer.rows:,} "
                    f"changed, {rate:,.0f} rows/s"
                )

    def _check_guard(self, more_rows: int) -> None:
        """Refuse a full read larger than ``max_full_read_rows`` on every extract (no cursor to narrow it)."""
        if self.guard is None or self.counts.records_processed + more_rows <= self.guard:
            return
        fix = (
            f"fill {self.dataset.cursor_column} (dimension.last_modified_column, NULL in every row so far)"
            if self.stuck
            else "set dimension.last_modified_column"
        )
        raise SourceError(
            f"dataset '{self.dataset.id}': more than {self.guard:,} rows to read in full and compare row by row on "
            f"every extract; {fix} so extracts read only changes, or raise dimension.max_full_read_rows; "
            "nothing was committed"
        )

    def _write_hard_deletes(self, writer: CommitWriter) -> None:
        source_keys = self.seen_keys if self.full_read else list(self.reader.read_keys())
        gone = _hard_deletes(self.lake, self.dataset.primary_key, source_keys, self.dataset.id)
        if gone is not None and gone.num_rows:
            writer.write(gone)
            self.counts.records_existing_deleted += gone.num_rows
            self.log(f"  {gone.num_rows:,} records no longer at the source: delivered as deletes")

    def _write_window_deletes(self, writer: CommitWriter) -> None:
        """The lake's live records of the window that the source no longer returns: delivered as deletes."""
        assert self.window is not None
        key, column = self.dataset.primary_key, self.dataset.cursor_column
        held = [
            t.column(key).combine_chunks() for t in live_records(self.lake, key, column, self.window, columns=[key])
        ]
        if not held:
            return
        lake_keys = pa.chunked_array(held).combine_chunks()
        returned = [k for k in self.window_keys if len(k)]
        if not returned:
            raise SourceError(
                f"dataset '{self.dataset.id}': the source returned no rows with {column} in {self.window.describe()}, "
                f"so the window's {len(lake_keys):,} records in the lake would all become deletes; refusing, and "
                "nothing was committed. Check the table, the user's grants and the column's time zone"
            )
        try:
            seen = pa.chunked_array([k.cast(lake_keys.type) for k in returned]).combine_chunks()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            seen = pa.chunked_array([k.cast(pa.string()) for k in returned]).combine_chunks()
            lake_keys = lake_keys.cast(pa.string())
        gone = lake_keys.filter(pc.invert(pc.is_in(lake_keys, value_set=seen)))
        if not len(gone):
            return
        deletes = _deletes(self.lake, key, gone.cast(self.lake.schema().field(key).type))  # type: ignore[union-attr]
        if deletes is not None and deletes.num_rows:
            writer.write(deletes)
            self.counts.records_existing_deleted += deletes.num_rows
            self.log(f"  {deletes.num_rows:,} records of the window no longer at the source: delivered as deletes")

    def _write_superseded(self, writer: CommitWriter) -> None:
        """Records the reader retired (a push table's ``activate_version``): delivered as deletes."""
        superseded = getattr(self.reader, "superseded_keys", None)
        keys = superseded() if superseded is not None else None
        gone = _deletes(self.lake, self.dataset.primary_key, keys) if keys is not None else None
        if gone is not None and gone.num_rows:
            writer.write(gone)
            self.counts.records_existing_deleted += gone.num_rows
            self.log(f"  {gone.num_rows:,} records of older table versions retired: delivered as deletes")

    def _commit(self, writer: CommitWriter, run_id: str | None) -> Commit | None:
        if writer.rows == 0 and self.cursor == self.previous_cursor:
            writer.abort()
            return None
        row_count = (self.latest.row_count if self.latest else 0) + self.counts.records_new_inserted
        return writer.commit(cursor=self.cursor, counts=self.counts.as_dict(), row_count=row_count, run_id=run_id)

    def _result(self, commit: Commit | None, writer: CommitWriter) -> ExtractResult:
        current = commit or self.latest
        return ExtractResult(
            dataset_id=self.dataset.id,
            provider_id=self.provider.id,
            counts=self.counts,
            commit=commit,
            cursor=self.cursor,
            previous_cursor=self.previous_cursor,
            schema=self.lake.schema(),
            row_count=current.row_count if current else 0,
            rows_written=writer.rows if commit else 0,
            seconds=time.monotonic() - self.started,
            data_uri=self.storage.uri(self.lake.directory),
            schema_changes=describe_schema_changes(self.latest.schema if self.latest else None, self.source_schema),
            window=self.requested_window,
            resync=self.resync,
        )
