"""The vectorised Batch paths (msgspec's typed decoding, and field by field over orjson's objects)
accept exactly what the per-record path accepts, and build the same table.

Random batches over plainly typed schemas, full of the values that separate the two (nulls, absent
fields, bools among integers, floats among integers, integers beyond 64 bits, odd timestamps,
undeclared and reserved fields, long keys, an ``activate_version``), each parsed both ways.
"""

import json
import random
from typing import Any

import pyarrow as pa
import pytest

from prequel_dagster.push import wire
from prequel_dagster.push.columnar import plain_fields, timestamps
from prequel_dagster.push.wire import Batch, BatchHead, WireError, check_batch, parse_batch, parse_datetime

JSON = "application/json"
STAMPS = [
    "2026-12-01T10:00:00Z",
    "2026-12-01T10:00:00.123456+05:30",
    "2026-12-01t10:00:00z",
    "2026-12-01 10:00:00",
    "2026-12-01T10:00:00.1234567891-01:00",
    "2026-12-01T10:00:00+00:60",
    "2026-12-01T10:00:00+23:59",
    "2026-02-29T10:00:00Z",
    "2024-02-29T10:00:00Z",
    "2100-02-29T10:00:00Z",
    "2026-04-31T10:00:00Z",
    "2026-12-01T24:00:00Z",
    "2026-12-01T23:59:60Z",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00",
    "2026-12-01",
    "2026-12-01T10:00Z",
    "not a time",
    "",
]
TYPES = [
    ("integer", {"type": "integer"}),
    ("integer?", {"type": ["null", "integer"]}),
    ("number", {"type": "number"}),
    ("number?", {"type": ["number", "null"], "description": "inert keywords do not matter"}),
    ("int_or_number", {"type": ["integer", "number"]}),
    ("boolean", {"type": "boolean"}),
    ("string", {"type": "string", "title": "t"}),
    ("string?", {"type": ["null", "string"]}),
    ("stamp", {"type": "string", "format": "date-time"}),
    ("stamp?", {"type": ["null", "string"], "format": "date-time"}),
]


def value(rng: random.Random, kind: str, breakage: float) -> Any:
    """Mostly a value of the kind, sometimes (``breakage``) one that breaks it."""
    if rng.random() >= breakage:
        base = kind.rstrip("?")
        if base == "integer":
            return rng.choice([0, -1, 7, 2**63 - 1, -(2**63), rng.randrange(-(10**6), 10**6)])
        if base in ("number", "int_or_number"):
            return rng.choice([0.5, -2.25, 3, 1e300, rng.random()])
        if base == "boolean":
            return rng.choice([True, False])
        if base == "stamp":
            return rng.choice([*STAMPS[:4], STAMPS[6], STAMPS[8]]) if rng.random() >= breakage else rng.choice(STAMPS)
        return rng.choice(["a", "", "ü" * 3, '{"not": "json"}'])
    return rng.choice([None, True, 1, 1.0, 2**64, 2**53 + 1, "s", "x" * 300, [1], {"a": 1}, "2026-12-01T10:00:00Z"])


def random_batch(rng: random.Random) -> dict:
    chosen = rng.sample(TYPES, rng.randint(1, len(TYPES)))
    odd = rng.choice(["", "", " ü", ".class", '"q"'])  # names are the tenant's: any string
    properties = {f"f{n}_{kind}{odd}": prop for n, (kind, prop) in enumerate(chosen)}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    names = list(properties)
    if rng.random() < 0.3:
        schema["required"] = rng.sample(names, rng.randint(1, len(names)))
    if rng.random() < 0.3:
        schema["additionalProperties"] = rng.choice([True, False])
    key_candidates = [n for n in names if "integer" in n or "string" in n]
    key_names = rng.sample(key_candidates, 1) if key_candidates and rng.random() < 0.6 else []
    breakage = rng.choice([0.0, 0.0, 0.01, 0.05])
    required = set(schema.get("required", []))
    records = []
    extracted = rng.random() < 0.2
    for sequence in range(rng.randint(1, 30)):
        data: dict[str, Any] = {}
        for name in names:
            kind = name.split("_", 1)[1].split(" ")[0].split(".")[0].split('"')[0]
            optional = name not in required and name not in key_names
            roll = rng.random()
            if roll < (0.1 if optional else breakage):
                continue  # absent
            if roll < (0.2 if optional and kind.endswith("?") else breakage * 2):
                data[name] = None
            else:
                data[name] = value(rng, kind, breakage)
        if rng.random() < 0.05:
            data["undeclared"] = rng.choice([1, "x", {"b": [1, 2]}, None])
        if rng.random() < breakage:
            data["_sdc_extra"] = 1
        message = {"action": "upsert", "sequence": rng.choice([sequence, 5, 2**63 - 1]), "data": data}
        if extracted:
            message["time_extracted"] = rng.choice([None, 5]) if rng.random() < breakage else "2026-12-01T10:00:00Z"
        if rng.random() < breakage:
            message["sequence"] = rng.choice([-1, 2**63, True, "5", 1.0])
        records.append(message)
    if rng.random() < breakage:
        records.append({"action": "activate_version", "sequence": 99})
    doc: dict[str, Any] = {"table_name": "t", "schema": schema, "messages": records}
    if key_names or rng.random() < 0.5:
        doc["key_names"] = key_names
    if rng.random() < 0.1:
        doc["table_version"] = rng.choice([-1, 2**63, True, "3", None]) if rng.random() < breakage * 5 else 3
    if rng.random() < 0.1:
        doc["bookmark_names"] = rng.choice(["a", None]) if rng.random() < breakage * 5 else ["a"]
    if rng.random() < breakage:
        doc[rng.choice(["key_names", "table_name", "extra"])] = rng.choice([None, "", ["id", "id"], 1])
    return doc


def parsed(body: bytes, path: str) -> Batch | BatchHead | WireError:
    """``path`` ``check``: the request path (:func:`check_batch`), which builds no table when it proves."""
    try:
        return check_batch(body, JSON) if path == "check" else parse_batch(body, JSON, path=path)
    except WireError as exc:
        return exc


@pytest.mark.parametrize("path", ["columnar", "typed", "check"])
@pytest.mark.parametrize("seed", range(40))
def test_the_paths_agree_on_random_batches(seed: int, path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    proven = []
    prover = {"columnar": "plain_columns", "typed": "typed_columns", "check": "typed_columns"}[path]
    proves = getattr(wire, prover)

    def counted(*args: Any, **kwargs: Any) -> Any:
        found = proves(*args, **kwargs)
        proven.append(found is not None)
        return found

    monkeypatch.setattr(wire, prover, counted)
    rng = random.Random(seed)
    agreed_valid = 0
    for _ in range(25):
        body = json.dumps(random_batch(rng)).encode()
        slow, fast = parsed(body, "records"), parsed(body, path)
        if isinstance(slow, WireError):
            assert isinstance(fast, WireError), f"the vectorised path accepted what Stitch refuses: {slow.message}"
            assert (fast.status, fast.message) == (slow.status, slow.message)
            continue
        if path == "check":
            assert fast == BatchHead(slow.table_name, slow.key_names, slow.count), body[:300]
            agreed_valid += 1
            continue
        assert isinstance(fast, Batch), fast
        assert fast.records.schema == slow.records.schema
        assert fast.records.equals(slow.records), body[:300]
        assert (fast.count, fast.key_names, fast.activated_versions) == (
            slow.count,
            slow.key_names,
            slow.activated_versions,
        )
        agreed_valid += 1
    assert agreed_valid >= 1  # every seed also compares accepted batches, not only refusals
    assert any(proven)  # and the vectorised path really proved some of them


UNUSUAL = [  # JSON text json.dumps never writes, where parsers may disagree
    ('{"id": 100000000000000000000000000}', "integer beyond 64 bits: orjson reads a float"),
    ('{"amount": 100000000000000000000000000}', "number beyond 64 bits"),
    ('{"amount": 18446744073709551615}', "number at 2**64-1"),
    ('{"id": 18446744073709551615}', "integer beyond int64"),
    ('{"id": -9223372036854775809}', "integer below int64"),
    ('{"id": 1, "id": 2}', "a duplicate key: the last one wins"),
    ('{"id": 1, "name": "a", "name": 5}', "a duplicate key of another type"),
    ('{"id": 1, "name": "\\ud800"}', "a lone surrogate"),
    ('{"id": 1, "name": "\\u0000"}', "NUL in a string"),
    ('{"id": 1e2}', "an integer written with an exponent"),
    ('{"id": 1, "amount": -0}', "negative zero"),
    ('{"id": 1, "amount": 1e400}', "a number beyond float64"),
    ('{"id": 1, "amount": 1.0e-400}', "a number below float64"),
    ('{"id": 1, "amount": NaN}', "NaN"),
    ('{"id": 1,}', "a trailing comma"),
    ('{"\\u0069d": 1, "n\\u0061me": "x"}', "escaped keys"),
    ('{"id": 1, "name": "x\\"y"}', "an escaped quote"),
]


@pytest.mark.parametrize("data, why", UNUSUAL, ids=[why for _, why in UNUSUAL])
@pytest.mark.parametrize("path", ["columnar", "typed", "check"])
def test_the_paths_agree_on_unusual_json(data: str, why: str, path: str) -> None:
    schema = {
        "properties": {"id": {"type": "integer"}, "name": {"type": ["null", "string"]}, "amount": {"type": "number"}}
    }
    for envelope in (
        '{"table_name": "t", "key_names": ["id"], "schema": %s, "messages": [{"action": "upsert", "sequence": 1, "data": %s}]}',
        '{"table_name": "t", "schema": %s, "messages": [{"action": "upsert", "sequence": 1, "data": %s}], "bookmark_names": [1e400]}',
        '{"table_name": "t", "schema": %s, "messages": [{"action": "upsert", "sequence": 1, "data": %s}], "table_version": 1, "table_version": 2}',
    ):
        body = (envelope % (json.dumps(schema), data)).encode()
        slow, fast = parsed(body, "records"), parsed(body, path)
        if isinstance(slow, WireError):
            assert isinstance(fast, WireError), (why, slow.message)
            assert (fast.status, fast.message) == (slow.status, slow.message), why
        elif path == "check":
            assert fast == BatchHead(slow.table_name, slow.key_names, slow.count), why
        else:
            assert isinstance(fast, Batch), (why, fast)
            assert fast.records.equals(slow.records), why
            assert fast.table_version == slow.table_version, why


def test_the_typed_path_proves_what_target_stitch_sends() -> None:
    """Singer's target-stitch: nullable types, ``bookmark_names``, ``table_version``, ``time_extracted``."""
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": ["integer"]},
            "name": {"type": ["null", "string"]},
            "at": {"type": ["null", "string"], "format": "date-time"},
        },
    }
    messages = [
        {"action": "upsert", "sequence": 1 + n, "time_extracted": "2026-12-01T10:00:00.000000Z", "data": {"id": n}}
        for n in range(3)
    ]
    doc = {"table_name": "t", "schema": schema, "key_names": ["id"], "messages": messages, "bookmark_names": None}
    doc.update(bookmark_names=["updated_at"], table_version=7)
    body = json.dumps(doc).encode()
    assert wire._typed_batch(body) is not None
    typed = parse_batch(body, JSON)
    assert typed.records.equals(parse_batch(body, JSON, path="records").records)
    assert typed.records.column("_sdc_table_version").to_pylist() == [7, 7, 7]


def test_the_vectorised_path_is_taken_for_plain_schemas() -> None:
    """A proof that the fast path runs at all: plain schemas qualify, constrained ones do not."""
    from prequel_dagster.push.columnar import PlainField

    fields = [PlainField("id", "integer", False), PlainField("at", "datetime", True)]
    plain = {"id": {"type": "integer"}, "at": {"type": ["null", "string"], "format": "date-time"}}
    assert plain_fields({"properties": plain}, fields, plain, {"id"})
    limited = {**plain, "id": {"type": "integer", "minimum": 0}}
    assert not plain_fields({"properties": limited}, fields, limited, set())
    assert not plain_fields({"properties": plain, "minProperties": 1}, fields, plain, set())
    assert not plain_fields({"properties": plain}, fields, plain, {"missing"})


def test_timestamps_read_as_python_reads_them_or_not_at_all() -> None:
    for text in STAMPS:
        stamps = timestamps(pa.array([text], pa.string()))
        expected = parse_datetime(text)
        if stamps is not None:
            assert expected is not None, text
            assert stamps.equals(pa.array([expected], pa.timestamp("us", "UTC"))), text
