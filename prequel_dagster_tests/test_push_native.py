"""The native proof of Batch messages (``native/push_proof``) proves only what the per-record path
accepts, with the same count; and it really proves the usual batches."""

import json
import os
import random
import shutil
from pathlib import Path

import msgspec
import pytest

from prequel_dagster.push import native, typed, wire
from prequel_dagster.push.wire import Batch, BatchHead, WireError, parse_batch

from .test_push_columnar import STAMPS, UNUSUAL, random_batch

JSON = "application/json"


def _toolchain() -> bool:
    return bool(shutil.which("cargo")) or (Path.home() / ".cargo" / "bin" / "cargo").exists()


pytestmark = pytest.mark.skipif(
    not native.available() and not (os.environ.get("CI") and _toolchain()),
    reason="the native proof is not built here (no Rust toolchain): scripts/build_native.sh",
)


class _Unproven:
    def decode(self, _: object) -> None:
        raise msgspec.ValidationError("msgspec is kept out: only the native proof may prove")


@pytest.fixture(autouse=True)
def _native_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request path's check with msgspec's decoding kept out: whatever it proves, the native proof did."""
    monkeypatch.setattr(typed, "_decoder", lambda *args: _Unproven())


def _native_count(body: bytes) -> int | None:
    """How many messages the request path's check proves through the native proof (None: not proven)."""
    head = wire._typed_batch(body, only_check=True)
    return head.count if isinstance(head, BatchHead) else None


def _records(body: bytes) -> Batch | WireError:
    try:
        return parse_batch(body, JSON, path="records")
    except WireError as exc:
        return exc


def test_the_native_proof_is_built_where_rust_is() -> None:
    assert native.available(), "cargo is here but scripts/build_native.sh did not build the proof"


@pytest.mark.parametrize("seed", range(40))
def test_the_native_proof_proves_only_what_stitch_accepts(seed: int) -> None:
    rng = random.Random(1000 + seed)
    proven = 0
    for _ in range(25):
        body = json.dumps(random_batch(rng)).encode()
        count = _native_count(body)
        if count is None:
            continue
        slow = _records(body)
        assert isinstance(slow, Batch), f"proved what Stitch refuses ({slow.message}): {body[:300]!r}"
        assert count == slow.count
        proven += 1
    PROVEN.append(proven)


PROVEN: list[int] = []


def test_the_native_proof_proved_many_of_those_batches() -> None:
    """(Runs after the seeds above.) Random batches are full of what it leaves to the slower paths
    (escaped names, rarer date-time shapes, broken records); it still proves a fair share."""
    if len(PROVEN) < 40:
        pytest.skip("run with the seeds above")
    assert sum(PROVEN) >= 100, PROVEN


@pytest.mark.parametrize("data, why", UNUSUAL, ids=[why for _, why in UNUSUAL])
def test_the_native_proof_and_unusual_json(data: str, why: str) -> None:
    schema = {
        "properties": {"id": {"type": "integer"}, "name": {"type": ["null", "string"]}, "amount": {"type": "number"}}
    }
    body = json.dumps({"table_name": "t", "key_names": ["id"], "schema": schema, "messages": []}).encode()
    body = body.replace(
        b'"messages": []', b'"messages": [{"action": "upsert", "sequence": 1, "data": %s}]' % data.encode()
    )
    if _native_count(body) is not None:
        assert isinstance(_records(body), Batch), why


STAMP_SHAPES = [
    *STAMPS,
    "2026-12-01T10:00:00+14:00",
    "2026-12-01T10:00:00-12:45",
    "2026-12-01T10:00:00+05:45",
    "2026-12-01T10:00:00+14:15",
    "2026-12-01T10:00:00.1Z",
    "2026-12-01T10:00:00.123456Z",
    "2026-12-01T10:00:00.1234567Z",
    "2026-12-01T10:00:00.Z",
    "1000-01-01T00:00:00Z",
    "0999-12-31T23:59:59Z",
    "2026-12-01T10:00:00+0500",
    "2026-12-01T10:00:00z",
    "2026-13-01T10:00:00Z",
    "2026-00-10T10:00:00Z",
    "2026-12-00T10:00:00Z",
    "2026-12-01T10:00:00 Z",
    "2026-12-01T1:00:00Z",
    "\u0662026-12-01T10:00:00Z",  # a digit that is not ASCII
]


@pytest.mark.parametrize("stamp", STAMP_SHAPES)
def test_the_native_proof_reads_date_times_as_python_does_or_not_at_all(stamp: str) -> None:
    schema = {"properties": {"id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}}}
    messages = [{"action": "upsert", "sequence": 1, "data": {"id": 1, "at": stamp}}]
    body = json.dumps({"table_name": "t", "key_names": ["id"], "schema": schema, "messages": messages}).encode()
    if _native_count(body) is not None:
        slow = _records(body)
        assert isinstance(slow, Batch), (stamp, slow)
        assert parse_batch(body, JSON, path="typed").records.equals(slow.records)


def test_the_native_proof_takes_the_usual_batch_and_refuses_each_break() -> None:
    schema = {
        "properties": {
            "id": {"type": "integer"},
            "email": {"type": "string"},
            "amount": {"type": "number"},
            "active": {"type": "boolean"},
            "at": {"type": "string", "format": "date-time"},
            "note": {"type": ["null", "string"]},
        }
    }
    data = {"id": 7, "email": "a@x", "amount": 1.5, "active": True, "at": "2026-12-01T10:00:00Z", "note": None}

    def body(**changes: object) -> bytes:
        record = {**data, **changes}
        record = {k: v for k, v in record.items() if v != "<absent>"}
        doc = {"table_name": "t", "key_names": ["id"], "schema": schema}
        doc["messages"] = [{"action": "upsert", "sequence": 3, "data": record}] * 3
        return json.dumps(doc).encode()

    assert _native_count(body()) == 3
    assert _native_count(body(note="<absent>", email="<absent>")) == 3  # optional fields may be absent
    for breaking in (
        {"id": "7"},
        {"id": 2**63},
        {"id": None},
        {"id": "<absent>"},
        {"email": None},
        {"email": 5},
        {"amount": "1"},
        {"active": 1},
        {"at": "yesterday"},
        {"extra": 1},
        {"_sdc_x": 1},
    ):
        assert _native_count(body(**breaking)) is None, breaking
        assert isinstance(_records(body(**breaking)), WireError) or "extra" in breaking or "_sdc_x" in breaking


@pytest.mark.parametrize("seed", range(4))
def test_mutated_bodies_never_crash_it_nor_get_proven_wrongly(seed: int) -> None:
    """Hostile bytes: valid bodies with bytes flipped, dropped, doubled or replaced by JSON's own
    punctuation. The proof must not fail, and whatever it proves the per-record path accepts."""
    rng = random.Random(seed)
    schema = {
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": ["null", "string"]},
            "amount": {"type": "number"},
            "ok": {"type": "boolean"},
            "at": {"type": ["null", "string"], "format": "date-time"},
        }
    }
    messages = [
        {
            "action": "upsert",
            "sequence": n,
            "data": {"id": n, "name": 'é\\"x' if n % 2 else None, "amount": n / 3, "ok": True, "at": STAMPS[0]},
        }
        for n in range(4)
    ]
    body = json.dumps({"table_name": "t", "key_names": ["id"], "schema": schema, "messages": messages}).encode()
    start = body.index(b'"messages"') + 12
    alphabet = b'{}[]",:\\ 0123456789.eE+-tfnulrsa\x00\x1f\x7f\xc3\xa9\xed\xa0\x80\xff'
    proven = 0
    for _ in range(1500):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(start, len(mutated) - 1)
            action = rng.random()
            if action < 0.4:
                mutated[at] = rng.choice(alphabet)
            elif action < 0.6:
                del mutated[at]
            elif action < 0.8:
                mutated.insert(at, rng.choice(alphabet))
            else:
                mutated[at : at + 1] = mutated[at : at + 2]
        count = _native_count(bytes(mutated))
        if count is not None:
            slow = _records(bytes(mutated))
            assert isinstance(slow, Batch), (bytes(mutated), slow)
            assert slow.count == count
            proven += 1
    assert proven  # some mutations stay valid (a digit for a digit): those are proven


def _envelope_cases() -> list[tuple[str, str]]:
    schema = '{"properties": {"id": {"type": "integer"}}}'
    messages = '[{"action": "upsert", "sequence": 1, "data": {"id": 1}}]'
    return [
        (f'{{"table_name": "t", "schema": {schema}, "key_names": ["id"], "messages": {messages}}}', "the usual order"),
        (f'{{"messages": {messages}, "table_name": "t", "schema": {schema}}}', "messages first"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}, "key_names": ["id"]}}', "keys after"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}, "table_version": 3}}', "a version"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}, "table_version": true}}', "a bool version"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}, "table_version": -1}}', "version -1"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}, "table_version": 1e400}}', "version 1e400"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}, "bookmark_names": ["a"]}}', "bookmarks"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}, "bookmark_names": "a"}}', "bad bookmarks"),
        (f'{{"table_name": "t", "schema": {schema}, "key_names": null, "messages": {messages}}}', "null keys"),
        (f'{{"table_name": "t", "schema": {schema}, "key_names": ["id", "id"], "messages": {messages}}}', "twice"),
        (f'{{"table_name": "", "schema": {schema}, "messages": {messages}}}', "an empty table name"),
        (f'{{"table_name": 5, "schema": {schema}, "messages": {messages}}}', "a number for a table name"),
        (f'{{"schema": {schema}, "messages": {messages}}}', "no table name"),
        (f'{{"table_name": "t", "table_name": "u", "schema": {schema}, "messages": {messages}}}', "a repeated key"),
        (f'{{"t\\u0061ble_name": "t", "schema": {schema}, "messages": {messages}}}', "an escaped key"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}, "extra": 1}}', "an unknown key"),
        (f'{{"table_name": "t", "schema": [], "messages": {messages}}}', "a schema that is no object"),
        (f'{{"table_name": "t", "schema": {{"properties": 1}}, "messages": {messages}}}', "properties not an object"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages}}} x', "trailing bytes"),
        (f'{{"table_name": "t", "schema": {schema}, "messages": {messages},}}', "a trailing comma"),
        (f'  {{"table_name":"t","schema":{schema},"messages":{messages}}}\n', "spacing"),
    ]


@pytest.mark.parametrize("body, why", _envelope_cases(), ids=[why for _, why in _envelope_cases()])
def test_the_one_pass_proof_of_a_whole_request(body: str, why: str) -> None:
    """``_native_check`` reads the request's top level natively too: it proves only what Stitch accepts."""
    head = wire._native_check(body.encode())
    slow = _records(body.encode())
    if head is not None:
        assert isinstance(slow, Batch), (why, slow)
        assert (head.table_name, head.key_names, head.count) == (slow.table_name, slow.key_names, slow.count), why
    if why in ("the usual order", "keys after", "a version", "bookmarks", "spacing"):
        assert isinstance(slow, Batch)
    if why in ("the usual order", "a version", "bookmarks", "spacing"):
        assert head is not None, why  # the shapes clients send are proven in one pass


@pytest.mark.parametrize("seed", range(4))
def test_mutated_envelopes_never_crash_it_nor_get_proven_wrongly(seed: int) -> None:
    rng = random.Random(seed)
    schema = {"properties": {"id": {"type": "integer"}, "name": {"type": ["null", "string"]}}}
    messages = [{"action": "upsert", "sequence": n, "data": {"id": n, "name": "x"}} for n in range(2)]
    doc = {"table_name": "t", "schema": schema, "key_names": ["id"], "messages": messages, "table_version": 2}
    body = json.dumps(doc).encode()
    alphabet = b'{}[]",:\\ 0123456789.eE+-tfnulrsa\x00\xc3\xff'
    proven = 0
    for _ in range(1500):
        mutated = bytearray(body)
        at = rng.randrange(len(mutated))
        if rng.random() < 0.5:
            mutated[at] = rng.choice(alphabet)
        else:
            del mutated[at]
        head = wire._native_check(bytes(mutated))
        if head is not None:
            slow = _records(bytes(mutated))
            assert isinstance(slow, Batch), (bytes(mutated), slow)
            assert (head.table_name, head.key_names, head.count) == (slow.table_name, slow.key_names, slow.count)
            proven += 1
    assert proven
