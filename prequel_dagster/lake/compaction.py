"""Compaction: a dataset's many small data files rewritten as a few large ones, every row version kept.

Each extract adds at least one Parquet file, so a dataset extracted every few minutes soon has
thousands; every scan opens them. A compaction merges runs of consecutive small live files (files of
consecutive commits, with the same schema) into one file each, row for row and in order: every row
version, with its ``_prequel_op``, and its commit in the column ``_prequel_seq``. Nothing is dropped,
not even versions superseded long ago: a stream created tomorrow still delivers the full history,
and a stream behind by a thousand commits still gets each of them.

**Loads keep their exact ranges.** A load reads the commits ``(from, to]`` of its plan; in a compacted
file those are the rows whose ``_prequel_seq`` is in the range (found by the row groups' statistics).
The rows come back in the same order as from the original files, so a pending load that resumes after
a compaction builds the same batches, with the same ids, and sends only those not acknowledged: a
compaction may run at any time, whatever the streams' positions (nothing to coordinate with them).

**Atomic, and never in a writer's way.** The new files are written to ``compacted/`` first; then the
compaction manifest ``_compactions/<n>.json`` (the files it replaces, the files it wrote, the latest
commit it saw) is created with the store's create-if-absent. Readers apply it after the commits
(``commits.LogState.apply``); before it exists they read the old files. Compactions are numbered, so
two racing for number ``n`` cannot both win (the loser removes its files and reports a conflict);
they never take a commit seq, so an extract never loses its commit to one.

**Old files are removed later.** After its commit, a compaction removes the files that earlier ones
(or itself) retired once ``remove_retired_after`` has passed since they were retired, long enough
for a reader that listed the log before to finish with them (a load that still fails on a removed
file resumes with the same batch ids). See :func:`removable_files` for the exact rule, which lake
housekeeping may use too. A crash between the writes and the commit leaves files that no manifest
names: readers never see them, and a later compaction removes them.
"""

import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..stores import CommitConflict, Store
from . import layout
from .commits import FILE_ROWS, Compaction, DatasetLog, LogState, schema_to_b64
from .data_files import SEQ_COLUMN, DataFile, ParquetParts

Log = Callable[[str], None]
Clock = Callable[[], dt.datetime]

ROW_GROUP_ROWS = 131_072
"""Row groups of compacted files: small enough that a commit range skips most of a large file."""

_NAMED = re.compile(rf"^(\d{{{layout.SEQ_WIDTH}}})-[^/]+\.parquet$")


@dataclass
class CompactionResult:
    provider_id: str
    dataset_id: str
    number: int | None = None
    """The compaction committed (None: nothing to compact, or another compaction won the race)."""
    files_replaced: int = 0
    files_written: int = 0
    rows: int = 0
    live_files_before: int = 0
    live_files_after: int = 0
    removed: list[str] = field(default_factory=list)
    """Retired files removed (by this compaction or earlier ones), relative to the lake root."""
    conflict: bool = False
    seconds: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        """Flat counters (for Dagster metadata or a CLI summary)."""
        return {
            "compaction": self.number or 0,
            "files_replaced": self.files_replaced,
            "files_written": self.files_written,
            "rows_rewritten": self.rows,
            "live_files_before": self.live_files_before,
            "live_files_after": self.live_files_after,
            "retired_files_removed": len(self.removed),
            "conflict": self.conflict,
        }


def plan_compaction(state: LogState, *, target_rows: int, small_rows: int) -> list[list[DataFile]]:
    """Groups of consecutive live files to merge, each into one file of at most ``target_rows``.

    Only files under ``small_rows`` are merged; a group never spans a larger file or a schema change
    (so a commit range's schema stays what its commits wrote). Groups of one file are left alone.
    """
    groups: list[list[DataFile]] = []
    current: list[DataFile] = []
    rows = 0

    def close() -> None:
        if len(current) > 1:
            groups.append(list(current))
        current.clear()

    for f in state.files:
        small = f.schema is not None and f.rows < small_rows
        fits = small and bool(current) and rows + f.rows <= target_rows and f.schema.equals(current[0].schema)  # type: ignore[union-attr]
        if not fits:
            close()
            rows = 0
        if small:
            current.append(f)
            rows += f.rows
    close()
    return groups


def compact_dataset(
    storage: Store,
    provider_id: str,
    dataset_id: str,
    *,
    min_files: int = 10,
    target_rows: int = FILE_ROWS,
    small_rows: int | None = None,
    remove_retired_after: dt.timedelta | None = dt.timedelta(hours=1),
    clock: Clock = lambda: dt.datetime.now(dt.UTC),
    log: Log = lambda message: None,
) -> CompactionResult:
    """Compact one dataset's small live files when at least ``min_files`` of them can be merged.

    Files under ``small_rows`` (default: half of ``target_rows``) are merged into files of at most
    ``target_rows``. Then files retired at least ``remove_retired_after`` ago are removed (None: leave
    them to lake housekeeping). Safe to run while extracts and loads run; see the module docstring.
    """
    started = time.monotonic()
    result = CompactionResult(provider_id, dataset_id)
    dataset_log = DatasetLog(storage, provider_id, dataset_id, log=log)
    state = dataset_log.state()
    result.live_files_before = result.live_files_after = len(state.files)
    groups = plan_compaction(state, target_rows=target_rows, small_rows=small_rows or max(target_rows // 2, 1))
    inputs = sum(len(g) for g in groups)
    if inputs < max(min_files, 2):
        log(
            f"compaction of {provider_id}/{dataset_id}: {len(state.files)} live files, {inputs} to merge "
            f"(fewer than {max(min_files, 2)}): nothing to do"
        )
    else:
        compaction = _write_and_commit(storage, dataset_log, state, groups, clock, log, result)
        if compaction is not None:
            state.apply(compaction)
            result.live_files_after = len(state.files)
    if remove_retired_after is not None and not result.conflict:
        result.removed = remove_retired(storage, dataset_log, state, now=clock(), grace=remove_retired_after, log=log)
    result.seconds = time.monotonic() - started
    return result


def _write_and_commit(
    storage: Store,
    dataset_log: DatasetLog,
    state: LogState,
    groups: list[list[DataFile]],
    clock: Clock,
    log: Log,
    result: CompactionResult,
) -> Compaction | None:
    number, token = state.compaction + 1, uuid.uuid4().hex[:12]
    out = ParquetParts(
        storage,
        layout.compacted_dir(dataset_log.directory),
        f"{layout.seq_name(number, '')}-{token}",
        row_group_rows=ROW_GROUP_ROWS,
    )
    entries: list[dict[str, Any]] = []
    try:
        for group in groups:
            schema = group[0].schema
            assert schema is not None
            target = schema.append(pa.field(SEQ_COLUMN, pa.int64()))
            out.start(target)
            for f in group:
                for batch in _versions(storage, f, target):
                    out.write(batch)
            out.close()
            written = out.files[-1]
            if written.rows != sum(f.rows for f in group):  # never commit a file that lost or gained rows
                raise RuntimeError(
                    f"compacted file {written.path} has {written.rows} rows, its inputs {sum(f.rows for f in group)}"
                )
            entry = out.entries()[-1]
            if entry.get("ranges"):
                entry["ranges"] = {k: v for k, v in entry["ranges"].items() if k != SEQ_COLUMN}
            entries.append(
                {**entry, "first": group[0].first_seq, "last": group[-1].last_seq, "schema": schema_to_b64(schema)}
            )
        replaces = [f.path for group in groups for f in group]
        manifest: dict[str, Any] = {
            "kind": "compaction",
            "number": number,
            "token": token,
            "committed_at": clock().isoformat(),
            "base_seq": state.seq,
            "replaces": replaces,
            "files": entries,
        }
        storage.create_exclusive(
            f"{layout.compactions_dir(dataset_log.directory)}/{layout.seq_name(number)}",
            json.dumps(manifest, indent=1).encode(),
        )
    except CommitConflict:
        out.remove()
        result.conflict = True
        log(f"compaction {number} of {dataset_log.provider_id}/{dataset_log.dataset_id} was made by another run first")
        return None
    except BaseException:
        out.remove()
        raise
    compaction = Compaction.from_json(manifest)
    result.number = number
    result.files_replaced = len(compaction.replaces)
    result.files_written = len(entries)
    result.rows = sum(e["rows"] for e in entries)
    log(
        f"compaction {number} of {dataset_log.provider_id}/{dataset_log.dataset_id}: {result.files_replaced} files "
        f"({result.rows:,} row versions) merged into {result.files_written}"
    )
    return compaction


def _versions(storage: Store, f: DataFile, target: pa.Schema) -> Any:
    """The row versions of one live file with their commit seq, in file order, cast to ``target``."""
    with storage.fs.open_input_file(storage.full_path(f.path)) as handle:
        for batch in pq.ParquetFile(handle).iter_batches(batch_size=65_536, use_threads=False):
            if SEQ_COLUMN not in batch.schema.names:
                batch = batch.append_column(SEQ_COLUMN, pa.repeat(pa.scalar(f.first_seq, pa.int64()), batch.num_rows))
            yield batch if batch.schema == target else batch.select(target.names).cast(target)


# ---------------------------------------------------------------------------------------------- retired files


def _mtime(info: pafs.FileInfo) -> dt.datetime | None:
    if info.mtime is None:
        return None
    return info.mtime if info.mtime.tzinfo is not None else info.mtime.replace(tzinfo=dt.UTC)


def removable_files(
    storage: Store,
    provider_id: str,
    dataset_id: str,
    *,
    now: dt.datetime,
    grace: dt.timedelta,
    state: LogState | None = None,
) -> list[str]:
    """Data files that compactions made obsolete and no reader can still be reading (paths relative to
    the lake root). ``state`` is the dataset log's state (read from the lake when not given).

    A file qualifies when it is not live in ``state`` and
      * in ``data/``: its commit seq lies inside a live compacted file's range (its rows, if it was ever
        committed, are there), or
      * in ``compacted/``: its compaction number is at most ``state.compaction`` (it was retired by a
        later compaction, or its own compaction lost a race or crashed);
    and both its modification time and the time it was retired (as the state records it; for a file
    retired before the state's checkpoint, the checkpoint's time) are more than ``grace`` before
    ``now``. Everything else is left alone: the live files, files of writers that may still commit,
    and orphans of crashed extracts (lake housekeeping's own rule).
    """
    directory = layout.dataset_dir(provider_id, dataset_id)
    if state is None:
        state = DatasetLog(storage, provider_id, dataset_id).state()
    cutoff = now - grace
    live = {f.path for f in state.files}
    covered = [(f.first_seq, f.last_seq) for f in state.files if f.compacted]
    retired = state.retired()
    out = []
    for folder, compacted in ((layout.data_dir(directory), False), (layout.compacted_dir(directory), True)):
        selector = pafs.FileSelector(storage.full_path(folder), allow_not_found=True, recursive=False)
        for info in storage.fs.get_file_info(selector):
            name = info.base_name
            match = _NAMED.match(name or "")
            path = f"{folder}/{name}"
            if info.type != pafs.FileType.File or match is None or path in live:
                continue
            number = int(match.group(1))
            if compacted and number > state.compaction:
                continue  # a compaction that may still commit
            if not compacted and not any(low <= number <= high for low, high in covered):
                continue
            mtime = _mtime(info)
            if mtime is None or mtime > cutoff:
                continue
            when = retired.get(path) or state.checkpoint_at
            if when is not None and dt.datetime.fromisoformat(when) > cutoff:
                continue
            out.append(path)
    return sorted(out)


def remove_retired(
    storage: Store, dataset_log: DatasetLog, state: LogState, *, now: dt.datetime, grace: dt.timedelta, log: Log
) -> list[str]:
    removed = []
    found = removable_files(storage, dataset_log.provider_id, dataset_log.dataset_id, now=now, grace=grace, state=state)
    for path in found:
        try:
            storage.delete(path)
        except Exception as exc:  # OSError locally, the SDKs' own errors on object stores; tried again next time
            log(f"  could not remove retired file {storage.uri(path)}: {type(exc).__name__}: {exc}")
            continue
        removed.append(path)
    if removed:
        log(f"  removed {len(removed)} retired data files of {dataset_log.provider_id}/{dataset_log.dataset_id}")
    return removed
