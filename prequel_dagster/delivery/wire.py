"""The Batch API wire format (README "Batch API"): envelope bytes, deterministic ids, batching.

Records arrive as encoded Arrow arrays (see ``encoding``); a :class:`Batch` keeps slices of them
and assembles its body from contiguous buffer slices, so the same records always give the same
bytes and no Python object is made per record.
"""

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..transform.encoding import joined_buffer, joined_bytes

LOAD_ID_LENGTH, BATCH_ID_LENGTH = 24, 32


def envelope_overhead(provider_id: str, stream_id: str, metadata: Mapping[str, Any] | None = None) -> int:
    """Bytes of a batch body around its records (ids and metadata included), so batches fit ``max_bytes_per_batch``."""
    empty = Batch("").body(
        provider_id=provider_id,
        stream_id=stream_id,
        load_id="0" * LOAD_ID_LENGTH,
        batch_id="0" * BATCH_ID_LENGTH,
        metadata=metadata,
    )
    return len(empty)


def batch_id_for(load_id: str, batch_key: str) -> str:
    """Deterministic: the same load and batch position (hence the same records) give the same id."""
    return hashlib.sha256(f"{load_id}:{batch_key}".encode()).hexdigest()[:BATCH_ID_LENGTH]


def load_id_for(lake_id: str, provider_id: str, stream_id: str, *parts: object) -> str:
    """Deterministic per lake, provider, stream and pending range (or redelivered id set): a resumed
    load keeps its ids, and no other lake or range can produce them."""
    fields = [lake_id, provider_id, stream_id, *map(str, parts)]
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()[:LOAD_ID_LENGTH]


@dataclass
class Part:
    """A run of encoded records with their delete flags and primary keys."""

    encoded: pa.Array  # string, each "{...},"
    deleted: pa.Array  # bool
    keys: pa.Array  # the primary key, in its own type (made text only when needed)

    def __len__(self) -> int:
        return len(self.encoded)

    @property
    def deleted_count(self) -> int:
        return self.deleted.true_count

    @property
    def record_ids(self) -> pa.Array:
        return self.keys.cast(pa.string())

    def slice(self, start: int, length: int) -> "Part":
        return Part(
            self.encoded.slice(start, length), self.deleted.slice(start, length), self.keys.slice(start, length)
        )


@dataclass
class Batch:
    key: str
    parts: list[Part] = field(default_factory=list)
    size: int = 0

    @property
    def count(self) -> int:
        return sum(len(p) for p in self.parts)

    def _chunks(self, deleted: bool) -> list[pa.Buffer]:
        """The (not) deleted records, as buffer slices to be joined with commas."""
        chunks = []
        for p in self.parts:
            n_deleted = p.deleted_count
            if n_deleted == (len(p) if deleted else 0):  # all (or none) of this part: no filtering
                chunk = joined_buffer(p.encoded)
            elif n_deleted == (0 if deleted else len(p)):
                continue
            else:
                chunk = joined_buffer(p.encoded.filter(p.deleted if deleted else pc.invert(p.deleted)))
            if chunk.size:
                chunks.append(chunk)
        return chunks

    def joined(self, deleted: bool) -> bytes:
        return b",".join(self._chunks(deleted))

    @property
    def deleted_count(self) -> int:
        return sum(p.deleted_count for p in self.parts)

    def body(
        self,
        *,
        provider_id: str,
        stream_id: str,
        load_id: str,
        batch_id: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> bytes:
        """The envelope; ``metadata`` (an object, such as ``{"resend": true}`` on a re-send) only when given,
        so every other body is as it always was."""
        fields: dict[str, Any] = {
            "provider_id": provider_id,
            "stream_id": stream_id,
            "load_id": load_id,
            "batch_id": batch_id,
            "format": "json",
        }
        if metadata:
            fields["metadata"] = dict(metadata)
        head = orjson.dumps(fields)
        pieces: list = [head[:-1], b',"records":[']
        pieces += _comma_separated(self._chunks(deleted=False))
        pieces.append(b'],"deleted_records":[')
        pieces += _comma_separated(self._chunks(deleted=True))
        pieces.append(b"]}")
        return b"".join(pieces)  # the one copy of the records

    def record_texts(self) -> list[tuple[str, str, bool]]:
        """(record_id, record JSON text, is_deleted) per record, without parsing (dead letters)."""
        out = []
        for p in self.parts:
            texts = p.encoded.to_pylist()
            out += [
                (rid, text[:-1], is_del)
                for rid, text, is_del in zip(p.record_ids.to_pylist(), texts, p.deleted.to_pylist())
            ]
        return out

    def records(self) -> list[tuple[str, dict, bool]]:
        """(record_id, record, is_deleted) per record, for templates and dead letters (slow path)."""
        out = []
        for p in self.parts:
            ids = p.record_ids.to_pylist()
            for i in range(len(p)):
                rec = orjson.loads(joined_bytes(p.encoded.slice(i, 1)))
                out.append((ids[i], rec, p.deleted[i].as_py()))
        return out

    def split(self) -> tuple["Batch", "Batch"]:
        """Halves (after a 413); their keys extend this batch's key, so ids stay deterministic."""
        whole = Part(
            pa.concat_arrays([p.encoded for p in self.parts]),
            pa.concat_arrays([p.deleted for p in self.parts]),
            pa.concat_arrays([p.keys for p in self.parts]),
        )
        half = len(whole) // 2
        return (
            Batch(f"{self.key}.0", [whole.slice(0, half)]),
            Batch(f"{self.key}.1", [whole.slice(half, len(whole) - half)]),
        )


def _comma_separated(chunks: list[pa.Buffer]) -> list:
    out: list = []
    for chunk in chunks:
        out += [b",", chunk] if out else [chunk]
    return out


class Batcher:
    """Cuts encoded records into batches bounded by a record count and a byte size."""

    def __init__(self, max_records: int, max_bytes: int, overhead: int = 0):
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.overhead = overhead  # the envelope's bytes (see envelope_overhead)
        self.next_no = 0
        self.current = self._new()

    def _new(self) -> Batch:
        batch = Batch(str(self.next_no))
        self.next_no += 1
        return batch

    def add(self, part: Part) -> Iterator[Batch]:
        sizes = pc.binary_length(part.encoded)
        cumulative = pc.cumulative_sum(sizes.cast(pa.int64()))
        start, n = 0, len(part)

        def bytes_between(a: int, b: int) -> int:  # rows [a, b)
            return cumulative[b - 1].as_py() - (cumulative[a - 1].as_py() if a else 0)

        while start < n:
            room_records = self.max_records - self.current.count
            room_bytes = self.max_bytes - self.overhead - self.current.size
            take = min(room_records, n - start)
            if take > 0 and bytes_between(start, start + take) > room_bytes:
                lo, hi = 0, take  # largest k with bytes(start, start+k) <= room_bytes
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if bytes_between(start, start + mid) <= room_bytes:
                        lo = mid
                    else:
                        hi = mid - 1
                take = lo
            if take == 0:
                if self.current.count:
                    yield self.current
                    self.current = self._new()
                    continue
                take = 1  # one record larger than max_bytes goes alone
            self.current.parts.append(part.slice(start, take))
            self.current.size += bytes_between(start, start + take)
            start += take
            if self.current.count >= self.max_records:
                yield self.current
                self.current = self._new()

    def flush(self) -> Iterator[Batch]:
        if self.current.count:
            yield self.current
            self.current = self._new()
