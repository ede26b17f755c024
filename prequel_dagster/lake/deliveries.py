"""Per-stream delivery state in the lake: what was delivered, the open load, the dead letters.

A load first records its plan (the commit range it covers, its load id), then each batch the
endpoint acknowledged, and finally a ``_deliveries/<seq>.json`` marker that moves the stream past
the range. After a crash the plan is found again and resumed: same load id, same batch ids, and
only the batches that were not acknowledged are sent.
"""

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from . import layout
from .storage import LakeStorage

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
    started_at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())

    def done(self, batch_key: str) -> bool:
        return batch_key in self.acked or batch_key in self.rejected

    _prefix: int = 0  # batches "0".."_prefix-1" are all acknowledged: stored as one number

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
    def __init__(self, storage: LakeStorage, provider_id: str, stream_id: str):
        self.storage = storage
        self.directory = layout.stream_dir(provider_id, stream_id)

    @property
    def plan_path(self) -> str:
        return f"{self.directory}/_pending/load.json"

    def _markers(self) -> list[int]:
        names = self.storage.list_names(f"{self.directory}/_deliveries")
        return sorted(s for s in (layout.parse_seq(n) for n in names) if s is not None)

    def delivered_through(self) -> int:
        """The last dataset commit whose records were all delivered (or dead-lettered)."""
        markers = self._markers()
        if not markers:
            return 0
        data = json.loads(self.storage.read_bytes(f"{self.directory}/_deliveries/{layout.seq_name(markers[-1])}"))
        return data["through_commit"]

    def ack_log_path(self, load_id: str) -> str:
        return f"{self.directory}/_pending/acks-{load_id}.log"

    def open_plan(self) -> LoadPlan | None:
        """The unfinished load, with every batch its ack log recorded as acknowledged."""
        if not self.storage.exists(self.plan_path):
            return None
        plan = LoadPlan.from_json(json.loads(self.storage.read_bytes(self.plan_path)))
        log = self.ack_log_path(plan.load_id)
        if self.storage.exists(log):
            lines = self.storage.read_bytes(log).decode().split("\n")
            plan.acked.update(k for k in lines[:-1] if k)  # the last piece is empty or a torn write
        return plan

    def open_ack_log(self, plan: LoadPlan) -> BinaryIO | None:
        """Where each acknowledged batch key is appended the moment it is acknowledged (None if the
        storage cannot append; the plan is then saved every few moments instead)."""
        return self.storage.open_append(self.ack_log_path(plan.load_id))

    def save_plan(self, plan: LoadPlan) -> None:
        self.storage.write_bytes(self.plan_path, plan.to_json())

    def finish(self, plan: LoadPlan, counts: dict[str, int]) -> None:
        markers = self._markers()
        seq = (markers[-1] if markers else 0) + 1
        marker = {
            "through_commit": plan.to_commit,
            "from_commit": plan.from_commit,
            "load_id": plan.load_id,
            "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "counts": counts,
        }
        self.storage.create_exclusive(f"{self.directory}/_deliveries/{layout.seq_name(seq)}", json.dumps(marker).encode())
        self.storage.delete(self.plan_path)
        self.storage.delete(self.ack_log_path(plan.load_id))

    def write_dead_letter(self, name: str, rows: list[dict[str, Any]]) -> str:
        path = f"{self.directory}/dead_letter/{name}.parquet"
        table = pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)
        with self.storage.open_output(path) as f:
            pq.write_table(table, f, compression="zstd")
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
