"""The vectorised Batch path accepts exactly what the per-record path accepts, and builds the same table.

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
from prequel_dagster.push.columnar import plain_columns, plain_fields, timestamps
from prequel_dagster.push.wire import Batch, WireError, parse_batch, parse_datetime

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
    properties = {f"f{n}_{kind}": prop for n, (kind, prop) in enumerate(chosen)}
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
    for sequence in range(rng.randint(1, 30)):
        data: dict[str, Any] = {}
        for name in names:
            kind = name.split("_", 1)[1]
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
        records.append({"action": "upsert", "sequence": rng.choice([sequence, 5, 2**63 - 1]), "data": data})
    if rng.random() < breakage:
        records.append({"action": "activate_version", "sequence": 99})
    doc: dict[str, Any] = {"table_name": "t", "schema": schema, "messages": records}
    if key_names or rng.random() < 0.5:
        doc["key_names"] = key_names
    return doc


def parsed(body: bytes, vectorised: bool) -> Batch | WireError:
    try:
        return parse_batch(body, JSON, vectorised=vectorised)
    except WireError as exc:
        return exc


@pytest.mark.parametrize("seed", range(40))
def test_both_paths_agree_on_random_batches(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    proven = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        found = plain_columns(*args, **kwargs)
        proven.append(found is not None)
        return found

    monkeypatch.setattr(wire, "plain_columns", counted)
    rng = random.Random(seed)
    agreed_valid = 0
    for _ in range(25):
        body = json.dumps(random_batch(rng)).encode()
        slow, fast = parsed(body, vectorised=False), parsed(body, vectorised=True)
        if isinstance(slow, WireError):
            assert isinstance(fast, WireError), f"the vectorised path accepted what Stitch refuses: {slow.message}"
            assert (fast.status, fast.message) == (slow.status, slow.message)
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
