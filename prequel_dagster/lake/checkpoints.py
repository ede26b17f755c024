"""Checkpoints of a dataset log: its state every few commits, so a reader opens O(1) log objects.

As Delta Lake's ``_delta_log`` checkpoints: every :data:`CHECKPOINT_EVERY` commits the writer of a
commit also creates ``_checkpoints/<seq>.json`` holding what readers need from all commits through
``seq`` (the live data files with their commit ranges, schemas and column ranges; the latest commit
with its cursor and counters; the compactions applied; files retired since the checkpoint before),
and overwrites the hint ``_checkpoints/_last_checkpoint.json`` with its seq. A reader reads the hint,
lists the checkpoints after it (finding one the hint missed), reads the newest, and then only the
commit and compaction manifests listed after it (``StartAfter`` on S3).

Checkpoints are created with the store's atomic create-if-absent and never overwritten; each holds a
SHA-256 of its own content. A checkpoint is only a cache: one that is missing, does not parse or does
not match its checksum is reported through the reader's log and skipped (the one before it is used,
else the manifests from the first), so nothing is lost and nothing is guessed.

This module knows files, names and integrity; what a state holds is ``commits.LogState``'s business.
Key snapshots (``changes.KeySnapshot``) are kept here too, next to the checkpoint they extend:
``_checkpoints/<seq>.keys-<hash of the key column>.parquet``.
"""

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..stores import CommitConflict, Store
from . import layout

CHECKPOINT_EVERY = 10
"""Commits between checkpoints: a reader reads at most this many commit manifests (and key snapshots
are brought up to date from at most this many commits)."""

FORMAT = 1

Warn = Callable[[str], None]


def directory(dataset_directory: str) -> str:
    return layout.checkpoints_dir(dataset_directory)


def checkpoint_path(dataset_directory: str, seq: int) -> str:
    return f"{directory(dataset_directory)}/{layout.seq_name(seq)}"


def _checksum(payload: dict[str, Any]) -> str:
    body = {k: v for k, v in payload.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_checkpoint(storage: Store, dataset_directory: str, seq: int, payload: dict[str, Any]) -> bool:
    """Create checkpoint ``seq`` (False if it already exists) and point the hint at it."""
    body = {**payload, "format": FORMAT, "seq": seq}
    body["checksum"] = _checksum(body)
    try:
        storage.create_exclusive(checkpoint_path(dataset_directory, seq), json.dumps(body).encode())
    except CommitConflict:
        return False
    try:
        write_hint(storage, dataset_directory, seq)
    except Exception:  # the hint is a cache too: readers then list the checkpoints
        pass
    return True


def write_hint(storage: Store, dataset_directory: str, seq: int) -> None:
    storage.write_bytes(f"{directory(dataset_directory)}/{layout.LAST_CHECKPOINT}", json.dumps({"seq": seq}).encode())


def _hint(storage: Store, dataset_directory: str) -> int | None:
    try:
        data = json.loads(storage.read_bytes(f"{directory(dataset_directory)}/{layout.LAST_CHECKPOINT}"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # missing (no checkpoint yet) or damaged: list them all instead
    seq = data.get("seq") if isinstance(data, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else None


def _seqs(names: list[str]) -> list[int]:
    return sorted(s for s in (layout.parse_manifest_seq(n) for n in names) if s is not None)


def read_checkpoint(storage: Store, dataset_directory: str, seq: int) -> dict[str, Any]:
    """Checkpoint ``seq``, checked; ValueError (with what is wrong) when it is damaged."""
    path = checkpoint_path(dataset_directory, seq)
    raw = storage.read_bytes(path)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"it is not valid JSON ({exc}; {len(raw)} bytes)") from None
    if not isinstance(data, dict):
        raise ValueError("it is not a JSON object")
    if data.get("format") != FORMAT or data.get("seq") != seq:
        raise ValueError(f"format {data.get('format')!r} and seq {data.get('seq')!r} are not {FORMAT} and {seq}")
    if data.get("checksum") != _checksum(data):
        raise ValueError("its content does not match its checksum")
    return data


def latest_checkpoint(storage: Store, dataset_directory: str, warn: Warn) -> dict[str, Any] | None:
    """The newest sound checkpoint, or None (no checkpoint: read every manifest).

    Reads the hint and lists only the checkpoints after it; without a hint, lists them all. A damaged
    checkpoint is reported with ``warn`` and the one before it is tried.
    """
    folder = directory(dataset_directory)
    hint = _hint(storage, dataset_directory)
    if hint is not None:
        candidates = sorted({hint, *_seqs(storage.list_names_after(folder, layout.seq_name(hint)))}, reverse=True)
    else:
        candidates = _seqs(storage.list_names(folder))[::-1]
    tried: set[int] = set()
    while candidates:
        for seq in candidates:
            tried.add(seq)
            try:
                return read_checkpoint(storage, dataset_directory, seq)
            except FileNotFoundError:
                if seq != hint:  # a hint may name a checkpoint that was removed; anything else is damage
                    warn(
                        f"checkpoint {storage.uri(checkpoint_path(dataset_directory, seq))} vanished; using an older one"
                    )
            except (OSError, ValueError) as exc:
                warn(
                    f"checkpoint {storage.uri(checkpoint_path(dataset_directory, seq))} is damaged ({exc}); "
                    "reading the commit manifests instead (nothing is lost; it is only a cache)"
                )
        # everything the hint led to was unusable: the older checkpoints, from a full listing
        candidates = [s for s in _seqs(storage.list_names(folder))[::-1] if s not in tried]
    return None


# ---------------------------------------------------------------------------------------------- key snapshots


def key_snapshot_path(dataset_directory: str, seq: int, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{directory(dataset_directory)}/{layout.seq_name(seq, f'.keys-{digest}.parquet')}"


def read_key_snapshot(storage: Store, dataset_directory: str, seq: int, key: str, warn: Warn) -> pa.Table | None:
    """The key snapshot through commit ``seq`` (columns ``key``, ``deleted``), or None if there is none
    or it is damaged (reported)."""
    path = key_snapshot_path(dataset_directory, seq, key)
    try:
        raw = storage.read_bytes(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        warn(f"key snapshot {storage.uri(path)} cannot be read ({exc}); rebuilding it from the data files")
        return None
    try:
        table = pq.read_table(pa.BufferReader(raw))
        meta = table.schema.metadata or {}
        if table.column_names != ["key", "deleted"] or meta.get(b"key") != key.encode():
            raise ValueError(f"columns {table.column_names} for key {meta.get(b'key')!r}")
        if meta.get(b"through_seq") != str(seq).encode() or meta.get(b"rows") != str(table.num_rows).encode():
            raise ValueError("its seq or row count does not match")
    except (pa.ArrowException, ValueError, OSError) as exc:
        warn(f"key snapshot {storage.uri(path)} is damaged ({exc}); rebuilding it from the data files")
        return None
    return table


def write_key_snapshot(storage: Store, dataset_directory: str, seq: int, key: str, table: pa.Table) -> None:
    """Keep a key snapshot next to checkpoint ``seq`` (created once; a concurrent writer's equal copy wins)."""
    table = table.replace_schema_metadata({"key": key, "through_seq": str(seq), "rows": str(table.num_rows)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    try:
        storage.create_exclusive(key_snapshot_path(dataset_directory, seq, key), sink.getvalue().to_pybytes())
    except CommitConflict:
        pass
