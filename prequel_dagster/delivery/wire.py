"""The Batch API wire format (README "Batch API"): envelope bytes, batch ids, record encoding.

Bodies are assembled from individually encoded records so a batch's size is known exactly
before it is sent, and so the same records always produce the same bytes.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

OPTS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def batch_id_for(load_id: str, batch_no: int) -> str:
    """Deterministic: the same load and position (hence the same records) give the same id."""
    return hashlib.sha256(f"{load_id}:{batch_no}".encode()).hexdigest()[:32]


def load_id_for(stream_id: str, from_commit: int, to_commit: int) -> str:
    """Deterministic per pending range, so a resumed load keeps its id and its batch ids."""
    return hashlib.sha256(f"{stream_id}:{from_commit}:{to_commit}".encode()).hexdigest()[:24]


def encode_records(table: pa.Table, required: set[str]) -> list[bytes]:
    """One JSON object per row in ``record_schema`` shape; optional fields without a value are left out."""
    rows = table.to_pylist()
    out = []
    for row in rows:
        if any(v is None for v in row.values()):
            row = {k: v for k, v in row.items() if v is not None or k in required}
        out.append(orjson.dumps(row, option=OPTS))
    return out


@dataclass
class Batch:
    """Encoded records waiting to go out together."""

    batch_no: int
    records: list[bytes] = field(default_factory=list)
    deleted: list[bytes] = field(default_factory=list)
    size: int = 0

    @property
    def count(self) -> int:
        return len(self.records) + len(self.deleted)

    def body(self, *, provider_id: str, stream_id: str, load_id: str, batch_id: str) -> bytes:
        head = orjson.dumps(
            {"provider_id": provider_id, "stream_id": stream_id, "load_id": load_id, "batch_id": batch_id, "format": "json"}
        )
        return b"".join(
            [head[:-1], b',"records":[', b",".join(self.records), b'],"deleted_records":[', b",".join(self.deleted), b"]}"]
        )


ENVELOPE_OVERHEAD = 256


class Batcher:
    """Cuts a stream of encoded records into batches bounded by records and by bytes."""

    def __init__(self, max_records: int, max_bytes: int):
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.current = Batch(0)

    def add(self, record: bytes, *, deleted: bool) -> Iterator[Batch]:
        size = len(record) + 1
        if self.current.count and (
            self.current.count >= self.max_records or self.current.size + size + ENVELOPE_OVERHEAD > self.max_bytes
        ):
            yield self.current
            self.current = Batch(self.current.batch_no + 1)
        (self.current.deleted if deleted else self.current.records).append(record)
        self.current.size += size

    def flush(self) -> Iterator[Batch]:
        if self.current.count:
            yield self.current
            self.current = Batch(self.current.batch_no + 1)
