"""Lake housekeeping: the datalake's ``retention_window_days``, and the leftovers of crashed runs.

What one run removes (rules in order of the layout; see the README's "Datalake layout"):

* **Orphan data files** — ``lakehouse/<provider>/<dataset>/data/<seq>-<token>-<part>.parquet`` that no
  commit manifest names, whose ``seq`` is already committed by another writer (its manifest exists,
  and manifests are created exclusively, so this file can never be committed), and older than the
  grace period (a writer that lost the race may still be writing it). A file whose ``seq`` has no
  manifest may belong to a writer still running: it is never touched. The manifests are read
  themselves (they never change once created), and a damaged one keeps every file of its dataset.
  Removed with or without a retention window.
* **Delivery markers** — ``artifacts/<provider>/streams/<stream>/_deliveries/<seq>.json`` older than
  the window, except each stream's newest marker (it is the stream's position).
* **Dead letters** — ``.../dead_letter/*.parquet`` older than the window (records are data: the window
  bounds how long the lake keeps them; a dropped dead letter can no longer be redelivered with
  ``--dead-letters``, its records still can by ``--record-id``).
* **Stale ack logs** — ``.../_pending/acks-<load_id>.log`` of a load whose plan is gone (the load
  finished and the run died before removing the log), older than the grace period. Removed with or
  without a window: they hold nothing the delivery marker does not.
* **Temp files** — ``.<name>.<32 hex>.tmp`` that the local store's atomic writes leave when the
  process dies mid-write, older than the grace period (a staging write of the Import API killed
  mid-way among them).
* **Committed push batches** — ``artifacts/<provider>/push/<source>/<table>/staged/<name>`` (``.json``, ``.parquet``)
  at or before its push dataset's commit cursor: committed, and left behind when the extract died
  between its commit and removing them. No extract reads them again.

Never removed: committed data files, commit manifests, the newest marker of a stream, an open load's
plan and its ack log, the lake identity file, and anything whose name this package does not write.
Without ``retention_window_days`` markers and dead letters are kept forever.

Ages are file modification times from the store's listing (no file is read for its age): a lake
copied or restored with new times is only kept longer. Every removal goes through the store
interface, so the same rules hold on disk, S3, GCS and Azure.
"""

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from ..config.errors import PrequelError
from ..config.models import PrequelConfig
from ..config.secrets import redact
from ..stores import Store, open_datalake
from . import layout
from .commits import DatasetLog
from .lake_files import corrupt, read_json_object

Log = Callable[[str], None]

KINDS = (
    "orphan_data_files",
    "delivery_markers",
    "dead_letters",
    "stale_ack_logs",
    "temp_files",
    "committed_push_batches",
)
"""What housekeeping removes, in the order of :class:`HousekeepingResult.removed`."""

DEFAULT_ORPHAN_GRACE = dt.timedelta(hours=1)

_DATA_FILE = re.compile(rf"^(\d{{{layout.SEQ_WIDTH}}})-[^/]+\.parquet$")
_SEQ_JSON = re.compile(rf"^(\d{{{layout.SEQ_WIDTH}}})\.json$")  # a manifest or a delivery marker, exactly
_TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # LocalStore: f".{name}.{uuid4().hex}.tmp"
_ACK_LOG = re.compile(r"^acks-(.+)\.log$")


@dataclass
class Removed:
    """Files of one kind removed (or, in a dry run, that would be)."""

    files: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list)


@dataclass
class HousekeepingResult:
    datalake_id: str
    retention_window_days: int | None
    dry_run: bool
    removed: dict[str, Removed] = field(default_factory=lambda: {kind: Removed() for kind in KINDS})
    kept_possibly_running: int = 0
    """Unnamed data files whose seq is not committed yet: their writer may still commit them."""
    kept_within_grace: int = 0
    """Leftovers (orphan data files, stale ack logs, temp files) younger than the grace period."""
    problems: list[str] = field(default_factory=list)
    """Parts skipped (a damaged manifest or plan) and removals that failed; the rest was done."""
    seconds: float = 0.0

    @property
    def files(self) -> int:
        return sum(r.files for r in self.removed.values())

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removed.values())

    def as_metadata(self) -> dict[str, Any]:
        """Flat counters (for Dagster metadata or a CLI summary)."""
        out: dict[str, Any] = {
            "retention_window_days": self.retention_window_days or 0,
            "dry_run": self.dry_run,
            "files_removed": self.files,
            "bytes_removed": self.bytes,
        }
        for kind, removed in self.removed.items():
            out[f"{kind}_removed"] = removed.files
            out[f"{kind}_bytes"] = removed.bytes
        out.update(
            kept_possibly_running=self.kept_possibly_running,
            kept_within_grace=self.kept_within_grace,
            problems=len(self.problems),
        )
        return out


@dataclass(frozen=True)
class _File:
    path: str  # relative to the lake root
    name: str
    size: int
    mtime: dt.datetime | None


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class _Housekeeper:
    def __init__(
        self,
        storage: Store,
        result: HousekeepingResult,
        *,
        now: dt.datetime,
        window: dt.timedelta | None,
        grace: dt.timedelta,
        log: Log,
    ):
        self.storage, self.result, self.log = storage, result, log
        self.expired_before = now - window if window is not None else None
        self.grace_before = now - grace

    # ------------------------------------------------------------------ listing
    def _entries(self, directory: str) -> list[pafs.FileInfo]:
        base = self.storage.full_path(directory) if directory else self.storage.root
        return self.storage.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=False))

    def files(self, directory: str) -> list[_File]:
        """The files directly in ``directory`` with size and modification time, in one listing."""
        out = []
        for info in self._entries(directory):
            name = info.base_name
            if info.type != pafs.FileType.File or not name or name.endswith("/"):
                continue
            mtime = _utc(info.mtime) if info.mtime is not None else None
            out.append(_File(f"{directory}/{name}" if directory else name, name, info.size or 0, mtime))
        return sorted(out, key=lambda f: f.name)

    def subdirectories(self, directory: str) -> list[str]:
        return sorted(
            i.base_name for i in self._entries(directory) if i.type == pafs.FileType.Directory and i.base_name
        )

    # ------------------------------------------------------------------ rules
    def older_than_grace(self, f: _File) -> bool:
        """A leftover is left alone while young (or of unknown age): its writer may still be at it."""
        if f.mtime is not None and f.mtime < self.grace_before:
            return True
        self.result.kept_within_grace += 1
        return False

    def expired(self, f: _File) -> bool:
        return self.expired_before is not None and f.mtime is not None and f.mtime < self.expired_before

    def remove(self, kind: str, f: _File) -> None:
        if not self.result.dry_run:
            try:
                self.storage.delete(f.path)
            except FileNotFoundError:  # gone meanwhile (its writer's abort()): nothing to count
                return
            except Exception as exc:  # OSError locally, the SDKs' own errors on object stores
                self.problem(f"cannot remove {self.storage.uri(f.path)}: {type(exc).__name__}: {exc}")
                return
        removed = self.result.removed[kind]
        removed.files += 1
        removed.bytes += f.size
        removed.paths.append(f.path)

    def problem(self, text: str) -> None:
        text = redact(text)
        self.result.problems.append(text)
        self.log(f"  skipped: {text}")

    def temp_files(self, files: list[_File]) -> list[_File]:
        """Removes the temp files among ``files`` (old enough) and returns the others."""
        rest = []
        for f in files:
            if _TEMP_FILE.match(f.name):
                if self.older_than_grace(f):
                    self.remove("temp_files", f)
            else:
                rest.append(f)
        return rest

    # ------------------------------------------------------------------ lakehouse
    def committed(self, manifests: list[_File]) -> tuple[set[str], set[int]]:
        """The names of the data files the manifests name, and the seqs they took. Read from every
        manifest itself (immutable once created), not from any cache of the log's state."""
        named: set[str] = set()
        taken: set[int] = set()
        for f in manifests:
            match = _SEQ_JSON.match(f.name)
            if match is None:
                continue
            data = read_json_object(
                self.storage, f.path, what="commit manifest", keys={"files": list}, fix="Restore it from a backup."
            )
            try:
                named.update(entry["path"].rsplit("/", 1)[-1] for entry in data["files"])
            except (KeyError, TypeError, AttributeError):
                raise corrupt(
                    self.storage,
                    f.path,
                    "commit manifest",
                    "an entry of 'files' has no path",
                    "Restore it from a backup.",
                ) from None
            taken.add(int(match.group(1)))
        return named, taken

    def dataset(self, provider_id: str, dataset_id: str) -> None:
        directory = layout.dataset_dir(provider_id, dataset_id)
        # The data files first, the manifests after: a file of this listing that gets committed
        # meanwhile is named by a manifest read below.
        data = self.files(f"{directory}/data")
        manifests = self.temp_files(self.files(f"{directory}/_commits"))
        try:
            named, taken = self.committed(manifests)
        except PrequelError as exc:  # a damaged manifest: which files it names is unknown, so remove none
            self.problem(f"orphan data files of {provider_id}/{dataset_id} kept: {exc}")
            return
        for f in data:
            match = _DATA_FILE.match(f.name)
            if f.name in named or match is None:
                continue  # committed, or not a file this package writes
            if int(match.group(1)) not in taken:
                self.result.kept_possibly_running += 1  # its seq is free: the writer may still commit it
                continue
            if self.older_than_grace(f):
                self.remove("orphan_data_files", f)

    # ------------------------------------------------------------------ artifacts
    def stream(self, provider_id: str, stream_id: str) -> None:
        directory = layout.stream_dir(provider_id, stream_id)
        markers = [
            (int(m.group(1)), f)
            for f in self.temp_files(self.files(f"{directory}/_deliveries"))
            if (m := _SEQ_JSON.match(f.name))
        ]
        newest = max((seq for seq, _ in markers), default=None)
        for seq, f in markers:
            if seq != newest and self.expired(f):
                self.remove("delivery_markers", f)
        for f in self.temp_files(self.files(f"{directory}/dead_letter")):
            if f.name.endswith(".parquet") and self.expired(f):
                self.remove("dead_letters", f)
        self.ack_logs(directory)

    def ack_logs(self, directory: str) -> None:
        # Listed before the plan is read: an ack log created after the listing is not looked at.
        logs = [
            (m.group(1), f)
            for f in self.temp_files(self.files(f"{directory}/_pending"))
            if (m := _ACK_LOG.match(f.name))
        ]
        if not logs:
            return
        plan_path = f"{directory}/_pending/load.json"
        open_load = None
        if self.storage.exists(plan_path):
            try:
                open_load = read_json_object(
                    self.storage,
                    plan_path,
                    what="pending load plan",
                    keys={"load_id": str},
                    fix="Delete it to start the load again.",
                )["load_id"]
            except FileNotFoundError:  # the load finished meanwhile: its ack log is stale (and young)
                pass
            except PrequelError as exc:
                self.problem(f"ack logs in {self.storage.uri(directory + '/_pending')} kept: {exc}")
                return
        for load_id, f in logs:
            if load_id != open_load and self.older_than_grace(f):
                self.remove("stale_ack_logs", f)

    # ------------------------------------------------------------------ push staging
    def push_table(self, provider_id: str, dataset: Any) -> None:
        folder = layout.push_staged_dir(provider_id, dataset.source_id, dataset.push.table_name)
        files = self.temp_files(self.files(folder))
        try:
            latest = DatasetLog(self.storage, provider_id, dataset.id).latest()
        except PrequelError as exc:  # a damaged log: which batches it committed is unknown, so remove none
            self.problem(f"committed push batches of {provider_id}/{dataset.id} kept: {exc}")
            return
        cursor = latest.cursor if latest is not None else None
        after = cursor.get(layout.PUSH_CURSOR_KEY) if isinstance(cursor, dict) else None
        if not isinstance(after, str):
            return
        for f in files:
            if f.name.endswith(layout.PUSH_STAGED_SUFFIXES) and not f.name.startswith(".") and f.name <= after:
                self.remove("committed_push_batches", f)

    # ------------------------------------------------------------------ the walk
    def run(self, config: PrequelConfig, datalake_id: str) -> None:
        """Every dataset and stream folder the lake lists, and every one the config puts in this lake
        (pyarrow's GCS listing shows no folders that are only key prefixes: there, the config's)."""
        datasets = {(p, d) for p in self.subdirectories("lakehouse") for d in self.subdirectories(f"lakehouse/{p}")}
        streams = {
            (p, s) for p in self.subdirectories("artifacts") for s in self.subdirectories(f"artifacts/{p}/streams")
        }
        for dataset in config.datasets:
            provider = config.provider_of_dataset(dataset)
            if provider.datalake_id == datalake_id:
                datasets.add((provider.id, dataset.id))
                streams.update((provider.id, stream.id) for stream in config.streams_of_dataset(dataset.id))
        self.temp_files(self.files(""))
        for provider_id, dataset_id in sorted(datasets):
            self.dataset(provider_id, dataset_id)
        for provider_id, stream_id in sorted(streams):
            self.stream(provider_id, stream_id)
        for dataset in config.datasets:  # staged folders are named by source and table: the config's
            provider = config.provider_of_dataset(dataset)
            if dataset.push is not None and provider.datalake_id == datalake_id:
                self.push_table(provider.id, dataset)


def run_housekeeping(
    config: PrequelConfig,
    datalake_id: str,
    *,
    storage: Store | None = None,
    now: dt.datetime | None = None,
    orphan_grace: dt.timedelta = DEFAULT_ORPHAN_GRACE,
    dry_run: bool = False,
    log: Log = lambda message: None,
) -> HousekeepingResult:
    """Apply the datalake's ``retention_window_days`` and remove the leftovers of crashed runs.

    Covers every dataset and stream folder the lake lists (configured or not) and every one the config
    puts in this lake (on GCS only those: pyarrow lists no prefix-only folders there). ``now`` is the
    clock (timezone-aware; default: the current UTC time); ``orphan_grace`` is how old a leftover
    (orphan data file, stale ack log, temp file) must be before it is removed; ``dry_run`` reports
    what would be removed and removes nothing. Safe to run while extracts and loads run.
    """
    started = time.monotonic()
    datalake = config.datalake(datalake_id)
    if now is None:
        now = dt.datetime.now(dt.UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware (datetime.now(timezone.utc))")
    if orphan_grace < dt.timedelta(0):
        raise ValueError("orphan_grace must not be negative")
    storage = storage or open_datalake(datalake, config)
    days = datalake.retention_window_days
    result = HousekeepingResult(datalake_id, days, dry_run)
    log(
        f"housekeeping datalake '{datalake_id}' ({storage.uri()}): "
        + (
            f"markers and dead letters older than {days} days"
            if days
            else "no retention_window_days, markers and dead letters kept"
        )
        + f"; leftovers older than {orphan_grace}"
        + (" — dry run, nothing removed" if dry_run else "")
    )
    _Housekeeper(
        storage, result, now=now, window=dt.timedelta(days=days) if days else None, grace=orphan_grace, log=log
    ).run(config, datalake_id)
    result.seconds = time.monotonic() - started
    verb = "would remove" if dry_run else "removed"
    for kind, removed in result.removed.items():
        if removed.files:
            log(f"  {verb} {removed.files} {kind.replace('_', ' ')} ({removed.bytes:,} bytes)")
    log(
        f"  {verb} {result.files} files ({result.bytes:,} bytes); kept {result.kept_possibly_running} data files "
        f"of possibly running writers and {result.kept_within_grace} leftovers within the grace period"
        + (f"; {len(result.problems)} problems" if result.problems else "")
    )
    return result
