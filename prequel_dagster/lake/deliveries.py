"""Per-stream delivery state in the lake: what was delivered, the open load, the dead letters.

A load first records its plan (the commit range it covers, its load id), then each batch the
endpoint acknowledged, and finally a ``_deliveries/<seq>.json`` marker that moves the stream past
the range. After a crash the plan is found again and resumed: same load id, same batch ids, and
only the batches that were not acknowledged are sent.

The newest marker is found from ``_position.json``, a hint overwritten after each marker with its seq,
and the markers listed after it (``StartAfter`` on S3): a load reads O(1) objects however many loads
came before. The hint is only a cache: missing, damaged or behind, the listing finds the newest marker.
"""

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from ..stores import CommitConflict, Store
from . import layout
from .lake_files import corrupt, read_json_object

BATCH_KEY = re.compile(r"^\d+(\.[01])*$")
"""A batch key: its position in the load, then ``.0``/``.1`` per halving after a 413."""

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("record", pa.string()),
        ("is_deleted", pa.bool_()),
        ("reason", pa.string()),
        ("load_id", pa.string()),
        ("batch_id", pa.string()),
    ]
)


@dataclass
class LoadPlan:
    load_id: str
    from_commit: int
    to_commit: int
    acked: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    def done(self, batch_key: str) -> bool:
        """Acknowledged or dead-lettered, itself or (after a 413) both of its halves."""
        return all(leaf in self.acked or leaf in self.rejected for leaf in self.leaves(batch_key))

    def fully_acked(self, batch_key: str) -> bool:
        return all(leaf in self.acked for leaf in self.leaves(batch_key))

    def leaves(self, batch_key: str) -> list[str]:
        """The batch itself or, when it was split, the halves that were sent in its place."""
        if batch_key in self.acked or batch_key in self.rejected:
            return [batch_key]
        if self._split_parents is None:  # splits on record when the load (re)started; later ones are in flight
            self._split_parents = set()
            for key in (*self.acked, *self.rejected):
                while "." in key:
                    key = key.rsplit(".", 1)[0]
                    self._split_parents.add(key)
        if batch_key not in self._split_parents:
            return [batch_key]
        return self.leaves(f"{batch_key}.0") + self.leaves(f"{batch_key}.1")

    def highest_batch(self) -> int:
        """The largest top-level batch number on record (-1 if none)."""
        return max((int(k.split(".", 1)[0]) for k in (*self.acked, *self.rejected)), default=-1)

    _prefix: int = 0  # batches "0".."_prefix-1" are all acknowledged: stored as one number
    _split_parents: set[str] | None = None

    def to_json(self) -> bytes:
        """Compact: acknowledged batches as a count of the contiguous ones plus the rest, so saving
        after every batch stays cheap on long loads."""
        while str(self._prefix) in self.acked:
            self._prefix += 1
        rest = [k for k in self.acked if not (k.isdigit() and int(k) < self._prefix)]
        return json.dumps(
            {
                "load_id": self.load_id,
                "from_commit": self.from_commit,
                "to_commit": self.to_commit,
                "acked_first": self._prefix,
                "acked": rest,
                "rejected": sorted(self.rejected),
                "started_at": self.started_at,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LoadPlan":
        acked = {str(i) for i in range(data.get("acked_first", 0))} | set(data["acked"])
        return cls(
            data["load_id"], data["from_commit"], data["to_commit"], acked, set(data["rejected"]), data["started_at"]
        )


class StreamState:
    def __init__(self, storage: Store, provider_id: str, stream_id: str):
        self.storage = storage
        self.directory = layout.stream_dir(provider_id, stream_id)
        self._newest: int | None = None  # the newest marker this object found or made

    @property
    def plan_path(self) -> str:
        return f"{self.directory}/_pending/load.json"

    @property
    def position_path(self) -> str:
        return f"{self.directory}/_position.json"

    def _markers(self, after: int = 0) -> list[int]:
        folder = f"{self.directory}/_deliveries"
        names = (
            self.storage.list_names_after(folder, layout.seq_name(after)) if after else self.storage.list_names(folder)
        )
        return sorted(s for s in (layout.parse_manifest_seq(n) for n in names) if s is not None and s > after)

    def _hint(self) -> int:
        try:
            data = json.loads(self.storage.read_bytes(self.position_path))
        except (OSError, ValueError, UnicodeDecodeError):
            return 0  # no load finished yet, or damaged: list every marker instead
        seq = data.get("marker") if isinstance(data, dict) else None
        return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else 0

    def _newest_marker(self) -> int:
        """The newest marker's seq (0: none): from the hint and the markers listed after it."""
        hint = self._hint()
        newer = self._markers(hint) if hint else self._markers()
        self._newest = newer[-1] if newer else hint
        return self._newest

    def delivered_through(self) -> int:
        """The last dataset commit whose records were all delivered (or dead-lettered)."""
        newest = self._newest_marker()
        if not newest:
            return 0
        try:
            return self._through(newest)
        except FileNotFoundError:  # the hint names a marker that is gone: list them all
            markers = self._markers()
            self._newest = markers[-1] if markers else 0
            return self._through(markers[-1]) if markers else 0

    def _through(self, marker: int) -> int:
        data = read_json_object(
            self.storage,
            f"{self.directory}/_deliveries/{layout.seq_name(marker)}",
            what="delivery marker",
            keys={"through_commit": int},
            fix="Restore it, or move it aside: the stream then delivers again from the marker before it.",
        )
        return data["through_commit"]

    def ack_log_path(self, load_id: str) -> str:
        return f"{self.directory}/_pending/acks-{load_id}.log"

    def open_plan(self) -> LoadPlan | None:
        """The unfinished load, with every batch its ack log recorded as acknowledged."""
        if not self.storage.exists(self.plan_path):
            return None
        fix = "Delete it to start the load again (batches it acknowledged are then sent again)."
        data = read_json_object(
            self.storage,
            self.plan_path,
            what="pending load plan",
            fix=fix,
            keys={
                "load_id": str,
                "from_commit": int,
                "to_commit": int,
                "acked": list,
                "rejected": list,
                "started_at": str,
            },
        )
        plan = LoadPlan.from_json(data)
        log = self.ack_log_path(plan.load_id)
        if self.storage.exists(log):
            plan.acked.update(self._read_ack_log(log))
        return plan

    def _read_ack_log(self, path: str) -> list[str]:
        """The acknowledged batch keys; the last line may be torn by a crash (not yet acknowledged on
        record, so ignored), any other line that is not a batch key is damage and an error."""
        lines = self.storage.read_bytes(path).decode("utf-8", errors="replace").split("\n")
        for number, line in enumerate(lines[:-1], 1):
            if not BATCH_KEY.match(line):
                raise corrupt(
                    self.storage,
                    path,
                    "ack log",
                    f"line {number} ({line[:40]!r}) is not a batch key",
                    "Remove that line (its batch is then sent again, with the same id).",
                )
        return lines[:-1]

    def open_ack_log(self, plan: LoadPlan) -> BinaryIO | None:
        """Where each acknowledged batch key is appended the moment it is acknowledged (None if the
        storage cannot append; the plan is then saved every few moments instead)."""
        return self.storage.open_append(self.ack_log_path(plan.load_id))

    def save_plan(self, plan: LoadPlan) -> None:
        self.storage.write_bytes(self.plan_path, plan.to_json())

    def finish(self, plan: LoadPlan, counts: dict[str, int]) -> None:
        seq = (self._newest if self._newest is not None else self._newest_marker()) + 1
        marker = {
            "through_commit": plan.to_commit,
            "from_commit": plan.from_commit,
            "load_id": plan.load_id,
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
            "counts": counts,
        }
        try:
            self.storage.create_exclusive(
                f"{self.directory}/_deliveries/{layout.seq_name(seq)}", json.dumps(marker).encode()
            )
        except CommitConflict:  # a marker made since this load looked: after the newest one, then
            seq = self._newest_marker() + 1
            self.storage.create_exclusive(
                f"{self.directory}/_deliveries/{layout.seq_name(seq)}", json.dumps(marker).encode()
            )
        self._newest = seq
        try:  # the hint: a failure here only makes the next load list more
            self.storage.write_bytes(self.position_path, json.dumps({"marker": seq}).encode())
        except Exception:
            pass
        self.storage.delete(self.plan_path)
        self.storage.delete(self.ack_log_path(plan.load_id))

    def write_dead_letter(self, name: str, rows: list[dict[str, Any]]) -> str:
        path = f"{self.directory}/dead_letter/{name}.parquet"
        table = pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self.storage.write_bytes(path, sink.getvalue().to_pybytes())  # whole and durable, or an error
        return path

    def dead_letter_files(self) -> list[str]:
        return [f"{self.directory}/dead_letter/{n}" for n in self.storage.list_names(f"{self.directory}/dead_letter")]

    def read_dead_letters(self, paths: list[str] | None = None) -> pa.Table:
        paths = self.dead_letter_files() if paths is None else paths
        tables = [pq.read_table(self.storage.full_path(p), filesystem=self.storage.fs) for p in paths]
        return pa.concat_tables(tables) if tables else DEAD_LETTER_SCHEMA.empty_table()

    def remove_dead_letters(self, paths: list[str]) -> None:
        for path in paths:
            self.storage.delete(path)
