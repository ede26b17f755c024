"""Extract: read new and changed rows of one provider dataset into the datalake, atomically."""

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ..config.errors import SourceError
from ..config.models import PrequelConfig
from ..lake.changes import (
    Classified,
    ExtractCounts,
    KeySnapshot,
    classify,
    classify_newer,
    dedupe_last,
    latest_versions,
)
from ..lake.commits import OP_COLUMN, Commit, DatasetLog
from ..sources import check_columns, lookback_seconds, open_reader, read_ahead
from ..stores import Store, open_datalake

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

    def __init__(self, lake: DatasetLog | None, dataset: Any, previous_cursor: Any, bound: Any):
        self.lake, self.dataset, self.previous_cursor, self.bound = lake, dataset, previous_cursor, bound
        self.key = dataset.primary_key
        self._snapshot: Future[KeySnapshot] | None = None
        if lake is not None and previous_cursor is not None:  # built while the source starts answering
            self._snapshot = _BACKGROUND.submit(KeySnapshot, lake, self.key)

    def _options(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "deleted_column": self.dataset.is_deleted_column,
            "append_only": self.dataset.type == "fact",
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
    gone = live.filter(pc.invert(pc.is_in(live, value_set=present.combine_chunks())))
    if not len(gone):
        return None
    versions = latest_versions(lake, gone, key)
    ops = pa.repeat("delete", versions.num_rows)
    return versions.set_column(versions.schema.get_field_index(OP_COLUMN), OP_COLUMN, ops.cast(pa.string()))


def run_extract(
    config: PrequelConfig,
    dataset_id: str,
    *,
    storage: Store | None = None,
    run_id: str | None = None,
    log: Log = lambda message: None,
) -> ExtractResult:
    """One Extract of a dataset: read changed rows, classify them against the lake, commit."""
    started = time.monotonic()
    chain = config.chain(dataset_id)
    dataset, source, provider = chain.dataset, chain.source, chain.provider
    storage = storage or open_datalake(chain.datalake, config)
    lake = DatasetLog(storage, provider.id, dataset.id)
    latest = lake.latest()
    previous_cursor = latest.cursor if latest else None
    key = dataset.primary_key
    reader = open_reader(source, dataset, config)

    glob = dataset.method == "glob"
    if glob:  # the cursor is the fingerprints of the files already read
        bound = previous_cursor if isinstance(previous_cursor, dict) else None
    else:
        bound = lower_bound(previous_cursor, lookback_seconds(source, dataset)) if dataset.cursor_column else None
    log(
        f"extracting dataset '{dataset.id}' of provider '{provider.id}' from source '{source.id}' "
        + (
            "(new or changed files)"
            if glob
            else f"(rows with {dataset.cursor_column} >= {bound})"
            if bound is not None
            else "(full read)"
        )
    )
    counts = ExtractCounts()
    if not latest:
        classifier = _Classifier(None, dataset, None, None)
    elif glob:  # rows of new files are compared with the lake by key
        classifier = _Classifier(lake, dataset, None, None)
    else:
        classifier = _Classifier(lake, dataset, previous_cursor, bound)
    cursor = previous_cursor
    writer = lake.begin()
    source_schema: pa.Schema | None = None
    last_report = time.monotonic()
    full_read = bound is None and not glob
    hard_deletes = bool(dataset.dimension and dataset.dimension.detect_hard_deletes and latest)
    seen_keys: list[pa.Array] = []  # a full read's keys, for hard-delete detection
    # every extract reads in full without a cursor column, or with one still NULL in every row read
    stuck = bool(dataset.cursor_column) and latest is not None and previous_cursor is None and not glob
    full_every_time = not glob and (not dataset.cursor_column or stuck)
    guard = dataset.dimension.max_full_read_rows if dataset.dimension and full_every_time else None
    megabytes = 0.0
    checked_names: list[str] | None = None
    try:
        for batch in read_ahead(reader.read(bound), depth=2):
            table = pa.Table.from_batches([batch])
            megabytes += batch.nbytes / 1e6
            source_schema = source_schema or table.schema
            if table.schema.names != checked_names:  # each file of a glob dataset has its own columns
                check_columns(source, dataset, table.schema.names)
                checked_names = table.schema.names
            if guard is not None and counts.records_processed + table.num_rows > guard:
                fix = (
                    f"fill {dataset.cursor_column} (dimension.last_modified_column, NULL in every row so far)"
                    if stuck
                    else "set dimension.last_modified_column"
                )
                raise SourceError(
                    f"dataset '{dataset.id}': more than {guard:,} rows to read in full and compare row by row on "
                    f"every extract; {fix} so extracts read only changes, or raise dimension.max_full_read_rows; "
                    "nothing was committed"
                )
            if hard_deletes and full_read:
                seen_keys.append(table.column(key).combine_chunks())
            result = classifier.classify(table, keys_unique=getattr(reader, "keys_unique", False))
            writer.write(result.changed)
            counts.add(result.counts)
            if not glob and dataset.cursor_column and dataset.cursor_column in table.column_names:
                high = _max_value(table.column(dataset.cursor_column))
                if high is not None and (cursor is None or high > cursor):
                    cursor = high
            if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = time.monotonic()
                rate = counts.records_processed / max(1e-9, last_report - started)
                log(
                    f"  {counts.records_processed:,} rows read ({megabytes:,.0f} MB), {writer.rows:,} changed, "
                    f"{rate:,.0f} rows/s"
                )
        if glob:
            cursor = reader.cursor
        if hard_deletes:
            source_keys = seen_keys if full_read else list(reader.read_keys())
            gone = _hard_deletes(lake, key, source_keys, dataset.id)
            if gone is not None and gone.num_rows:
                writer.write(gone)
                counts.records_existing_deleted += gone.num_rows
                log(f"  {gone.num_rows:,} records no longer at the source: delivered as deletes")
        if writer.rows == 0 and cursor == previous_cursor:
            writer.abort()
            commit = None
        else:
            row_count = (latest.row_count if latest else 0) + counts.records_new_inserted
            commit = writer.commit(cursor=cursor, counts=counts.as_dict(), row_count=row_count, run_id=run_id)
    except BaseException:
        writer.abort()
        raise

    schema = lake.schema()
    return ExtractResult(
        dataset_id=dataset.id,
        provider_id=provider.id,
        counts=counts,
        commit=commit,
        cursor=cursor,
        previous_cursor=previous_cursor,
        schema=schema,
        row_count=(commit or latest).row_count if (commit or latest) else 0,
        rows_written=writer.rows if commit else 0,
        seconds=time.monotonic() - started,
        data_uri=storage.uri(lake.directory),
        schema_changes=describe_schema_changes(latest.schema if latest else None, source_schema),
    )
