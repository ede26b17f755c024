"""Stitch Import API bodies: Stitch's status codes and texts for bad requests, Arrow types for good ones."""

import datetime as dt
import random
import time
from typing import Any

import orjson
import pyarrow as pa
import pytest

from prequel_dagster.push.wire import (
    MAX_BODY_BYTES,
    MAX_RECORDS,
    MAX_SEQUENCE,
    Batch,
    WireError,
    parse_batch,
    parse_datetime,
    parse_push,
    sequence_winners,
)

JSON = "application/json"
SCHEMA = {
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "age": {"type": ["null", "integer"]},
        "price": {"type": "number"},
        "has_magic": {"type": "boolean"},
        "at": {"type": "string", "format": "date-time"},
        "tags": {"type": "array"},
        "meta": {"type": "object"},
    },
}
REQUIRED_NAME = {**SCHEMA, "required": ["name"]}


def batch_doc(**overrides: Any) -> dict:
    doc: dict[str, Any] = {
        "table_name": "customers",
        "schema": SCHEMA,
        "messages": [{"action": "upsert", "sequence": 1, "data": {"id": 1, "name": "Finn"}}],
        "key_names": ["id"],
    }
    doc.update(overrides)
    return doc


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def batch_error(doc: Any, content_type: str | None = JSON) -> WireError:
    with pytest.raises(WireError) as caught:
        parse_batch(doc if isinstance(doc, bytes) else body(doc), content_type)
    return caught.value


def messages(*datas: dict, start: int = 1) -> list[dict]:
    return [{"action": "upsert", "sequence": start + n, "data": d} for n, d in enumerate(datas)]


def push_record(**overrides: Any) -> dict:
    record: dict[str, Any] = {
        "client_id": 7,
        "table_name": "orders",
        "sequence": 1,
        "action": "upsert",
        "key_names": ["id"],
        "data": {"id": 1},
    }
    record.update(overrides)
    return record


def push_error(doc: Any, content_type: str | None = JSON, client_id: int = 7) -> WireError:
    with pytest.raises(WireError) as caught:
        parse_push(doc if isinstance(doc, bytes) else body(doc), content_type, client_id)
    return caught.value


# ------------------------------------------------------------------------------------------------
# Batch: transport
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "", "text/plain", "application/x-www-form-urlencoded", "application/transit+json"]
)
def test_batch_wrong_content_type_is_415_with_stitchs_plain_text(content_type: str | None) -> None:
    error = batch_error(batch_doc(), content_type)
    assert error.status == 415
    assert error.message == "Content-Type must be application/json"
    assert error.plain
    assert error.body == {"status": "ERROR", "message": "Content-Type must be application/json"}


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"]
)
def test_batch_json_content_type_with_parameters_is_accepted(content_type: str) -> None:
    assert parse_batch(body(batch_doc()), content_type).count == 1


def test_body_over_20_mb_is_413_before_anything_else() -> None:
    big = b" " * (21 * 1024 * 1024)
    for error in (batch_error(big, "text/plain"), push_error(big, None)):
        assert error.status == 413
        assert error.body == {
            "status": "ERROR",
            "message": f"Request rejected: request size ({len(big)} bytes) exceeds the maximum",
        }
    assert MAX_BODY_BYTES == 20 * 1024 * 1024


def test_malformed_json_is_400_naming_the_problem() -> None:
    error = batch_error(b'{"table_name": "t",')
    assert error.status == 400
    assert error.message.startswith("Malformed json in the body!")
    assert error.body["error"] and error.body["error"] in error.message


# ------------------------------------------------------------------------------------------------
# Batch: the request's shape
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([batch_doc()], "Request failed validation:#: expected type: JSONObject, found: JSONArray"),
        (
            {k: v for k, v in batch_doc().items() if k != "table_name"},
            "Request failed validation:#: required key [table_name] not found",
        ),
        (
            {k: v for k, v in batch_doc().items() if k != "messages"},
            "Request failed validation:#: required key [messages] not found",
        ),
        (batch_doc(version_tag=2), "Request failed validation:#: extraneous key [version_tag] is not permitted"),
        (batch_doc(table_name=5), "Request failed validation:#/table_name: expected type: String, found: Integer"),
        (batch_doc(table_name=""), "Request failed validation:#/table_name: expected minLength: 1, actual: 0"),
        (batch_doc(schema=[SCHEMA]), "Request failed validation:#/schema: expected type: JSONObject, found: JSONArray"),
        (
            batch_doc(schema={"type": "object"}),
            "Request failed validation:#/schema: required key [properties] not found",
        ),
        (batch_doc(messages={}), "Request failed validation:#/messages: expected type: JSONArray, found: JSONObject"),
        (batch_doc(messages=[]), "Request failed validation:#/messages: expected minimum item count: 1, found: 0"),
        (batch_doc(key_names="id"), "Request failed validation:#/key_names: expected type: JSONArray, found: String"),
        (batch_doc(key_names=[1]), "Request failed validation:#/key_names/0: expected type: String, found: Integer"),
        (batch_doc(key_names=["id", "id"]), "Request failed validation:#/key_names: array items are not unique"),
        (
            batch_doc(messages=[{"action": "upsert", "sequence": 1}]),
            "Request failed validation:#/messages/0: required key [data] not found",
        ),
        (
            batch_doc(messages=[{"action": "upsert", "sequence": 1, "data": {}, "table_name": "x"}]),
            "Request failed validation:#/messages/0: extraneous key [table_name] is not permitted",
        ),
        (
            batch_doc(messages=[{"action": "delete", "sequence": 1, "data": {"id": 1}}]),
            "Request failed validation:#/messages/0/action: delete is not a valid enum value",
        ),
        (
            batch_doc(messages=[{"action": "upsert", "sequence": 1, "data": []}]),
            "Request failed validation:#/messages/0/data: expected type: JSONObject, found: JSONArray",
        ),
    ],
)
def test_batch_shape_errors_are_400_with_stitchs_validator_texts(doc: Any, message: str) -> None:
    error = batch_error(doc)
    assert (error.status, error.message) == (400, message)
    assert error.body == {"status": "ERROR", "message": message}


def test_sequence_above_2_63_minus_1_is_400() -> None:
    error = batch_error(batch_doc(messages=[{"action": "upsert", "sequence": 2**63, "data": {"id": 1}}]))
    assert (error.status, error.message) == (
        400,
        "Request failed validation:#: sequence can not be above 9223372036854775807",
    )
    ok = parse_batch(
        body(batch_doc(messages=[{"action": "upsert", "sequence": MAX_SEQUENCE, "data": {"id": 1}}])), JSON
    )
    assert ok.records.column("_sdc_sequence").to_pylist() == [MAX_SEQUENCE]


@pytest.mark.parametrize(
    ("sequence", "found"),
    [(True, "Boolean"), (False, "Boolean"), (1.5, "Double"), (1.0, "Double"), ("1", "String"), (None, "Null")],
)
def test_sequence_must_be_an_integer(sequence: Any, found: str) -> None:
    error = batch_error(batch_doc(messages=[{"action": "upsert", "sequence": sequence, "data": {"id": 1}}]))
    assert (error.status, error.message) == (
        400,
        f"Request failed validation:#/messages/0/sequence: expected type: Integer, found: {found}",
    )


def test_negative_sequence_is_400() -> None:
    error = batch_error(batch_doc(messages=[{"action": "upsert", "sequence": -1, "data": {"id": 1}}]))
    assert error.status == 400 and "sequence" in error.message


def test_more_than_20000_messages_is_400_and_20000_is_accepted() -> None:
    doc = batch_doc(schema={"properties": {"id": {"type": "integer"}}})
    error = batch_error({**doc, "messages": messages(*({"id": n} for n in range(MAX_RECORDS + 1)))})
    assert (error.status, error.message) == (
        400,
        "Request failed validation:#/messages: expected maximum item count: 20000, found: 20001",
    )
    accepted = parse_batch(body({**doc, "messages": messages(*({"id": n} for n in range(MAX_RECORDS)))}), JSON)
    assert accepted.count == accepted.records.num_rows == MAX_RECORDS


def test_data_with_more_than_10000_fields_is_400() -> None:
    data = {f"f{n}": n for n in range(10_001)}
    error = batch_error(batch_doc(key_names=[], messages=messages(data)))
    assert (error.status, error.message) == (
        400,
        "Request failed validation:#/messages/0/data: maximum size: [10000], found: [10001]",
    )
    assert parse_batch(body(batch_doc(key_names=[], messages=messages(dict(list(data.items())[:10_000])))), JSON)


# ------------------------------------------------------------------------------------------------
# Batch: the JSON Schema
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"properties": {"id": {"type": "strin"}}},
        {"properties": {"id": {"type": ["null", "strin"]}}},
        {"properties": {"id": {"type": "object", "properties": {"x": {"type": "strin"}}}}},
        {"properties": {"id": {"type": "array", "items": {"type": "strin"}}}},
        {"properties": {"id": {"anyOf": [{"type": "integer"}, {"type": "strin"}]}}},
    ],
)
def test_unknown_json_schema_type_is_400(schema: dict) -> None:
    error = batch_error(batch_doc(schema=schema))
    assert (error.status, error.message) == (400, "Invalid JSON schema: unknown type: [strin]")


def test_invalid_json_schema_is_400() -> None:
    error = batch_error(batch_doc(schema={"properties": {"id": {"type": "integer"}}, "required": []}))
    assert error.status == 400 and error.message.startswith("Invalid JSON schema: ")
    error = batch_error(batch_doc(schema={"properties": {"id": {"type": "integer", "minimum": "zero"}}}))
    assert error.status == 400 and error.message.startswith("Invalid JSON schema: ")


def test_references_never_leave_the_schema() -> None:
    remote = {"properties": {"id": {"$ref": "http://169.254.169.254/latest/meta-data"}}}
    error = batch_error(batch_doc(schema=remote))
    assert error.status == 400 and error.message.startswith("Invalid JSON schema: only local references")
    dangling = {"properties": {"id": {"$ref": "#/definitions/missing"}}}
    error = batch_error(batch_doc(schema=dangling))
    assert error.status == 400 and error.message.startswith("Invalid JSON schema: unresolvable reference")
    local = {"definitions": {"ident": {"type": "integer"}}, "properties": {"id": {"$ref": "#/definitions/ident"}}}
    assert parse_batch(body(batch_doc(schema=local)), JSON).count == 1
    error = batch_error(batch_doc(schema=local, messages=messages({"id": "x"})))
    assert error.message == "Record 0 did not conform to schema: #/id: 'x' is not of type 'integer'"


def test_first_failing_record_is_reported_by_its_0_based_index() -> None:
    error = batch_error(
        batch_doc(
            schema=REQUIRED_NAME,
            messages=messages({"id": 1, "name": "a"}, {"id": 2, "name": "b", "age": "x"}, {"id": 3}),
        )
    )
    assert error.status == 400
    assert error.message == "Record 1 did not conform to schema: #/age: 'x' is not of type 'null', 'integer'"
    assert error.body == {"status": "ERROR", "message": error.message}
    error = batch_error(batch_doc(schema=REQUIRED_NAME, messages=messages({"id": 1, "name": "a"}, {"id": 2})))
    assert error.message == "Record 1 did not conform to schema: #: 'name' is a required property"


def test_schema_is_draft_4() -> None:
    # draft 4: 1.0 is not an integer (draft 6 would accept it)
    error = batch_error(batch_doc(messages=messages({"id": 1.0, "name": "a"})))
    assert error.message == "Record 0 did not conform to schema: #/id: 1.0 is not of type 'integer'"
    # draft 4: exclusiveMaximum is a boolean modifier
    schema = {"properties": {"id": {"type": "integer", "maximum": 5, "exclusiveMaximum": True}}}
    error = batch_error(batch_doc(schema=schema, messages=messages({"id": 5})))
    assert error.message.startswith("Record 0 did not conform to schema: #/id: 5 is greater than or equal to")


def test_additional_properties_false_and_nested_paths() -> None:
    schema = {
        "properties": {"id": {"type": "integer"}, "meta": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "additionalProperties": False,
    }
    error = batch_error(batch_doc(schema=schema, messages=messages({"id": 1, "meta": {"n": "x"}})))
    assert error.message == "Record 0 did not conform to schema: #/meta/n: 'x' is not of type 'integer'"
    error = batch_error(batch_doc(schema=schema, messages=messages({"id": 1, "extra": 2})))
    assert error.message.startswith("Record 0 did not conform to schema: #: Additional properties are not allowed")


def test_patterns_run_in_linear_time_and_backreferences_are_refused() -> None:
    schema = {"properties": {"id": {"type": "string", "pattern": "^(a+)+$"}}}
    started = time.monotonic()
    error = batch_error(batch_doc(schema=schema, messages=messages({"id": "a" * 40 + "b"})))
    assert time.monotonic() - started < 2
    assert error.message.startswith("Record 0 did not conform to schema: #/id: ")
    error = batch_error(batch_doc(schema={"properties": {"id": {"type": "string", "pattern": r"(a)\1"}}}))
    assert error.status == 400 and error.message.startswith("Invalid JSON schema: pattern")


def test_date_time_values_must_parse() -> None:
    error = batch_error(batch_doc(messages=messages({"id": 1, "name": "a"}, {"id": 2, "name": "b", "at": "yesterday"})))
    assert error.message == "Record 1 did not conform to schema: #/at: 'yesterday' is not a 'date-time'"
    error = batch_error(batch_doc(messages=messages({"id": 1, "name": "a", "at": "2023-02-30T00:00:00Z"})))
    assert error.message == "Record 0 did not conform to schema: #/at: '2023-02-30T00:00:00Z' is not a 'date-time'"


def test_integers_beyond_64_bits_fail_their_record() -> None:
    error = batch_error(batch_doc(messages=messages({"id": 1, "name": "a"}, {"id": 2**63, "name": "b"})))
    assert error.message == f"Record 1 did not conform to schema: #/id: {2**63} does not fit in a 64-bit integer"


def test_rfc3339_parsing() -> None:
    utc = dt.UTC
    assert parse_datetime("2023-11-07T05:31:56Z") == dt.datetime(2023, 11, 7, 5, 31, 56, tzinfo=utc)
    assert parse_datetime("2023-11-07t05:31:56.123456789z") == dt.datetime(2023, 11, 7, 5, 31, 56, 123456, tzinfo=utc)
    assert parse_datetime("2023-11-07 07:31:56+02:00") == dt.datetime(2023, 11, 7, 5, 31, 56, tzinfo=utc)
    assert parse_datetime("2023-11-07T05:31:56") == dt.datetime(2023, 11, 7, 5, 31, 56, tzinfo=utc)
    for bad in ("2023-11-07", "2023-11-07T05:31Z", "20231107T053156Z", "2023-13-01T00:00:00Z", "٢٠٢٣-11-07T05:31:56Z"):
        assert parse_datetime(bad) is None, bad


# ------------------------------------------------------------------------------------------------
# Batch: keys
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [{"name": "a"}, {"id": None, "name": "a"}])
def test_missing_or_null_key_is_400(data: dict) -> None:
    schema = {"properties": {"id": {"type": ["null", "integer"]}, "name": {"type": "string"}}}
    error = batch_error(batch_doc(schema=schema, messages=messages({"id": 1, "name": "a"}, data)))
    assert (error.status, error.message) == (400, "Record is missing key property id")


def test_string_keys_must_be_shorter_than_256_characters() -> None:
    schema = {"properties": {"id": {"type": "string"}}}
    assert parse_batch(body(batch_doc(schema=schema, messages=messages({"id": "k" * 255}))), JSON).count == 1
    error = batch_error(batch_doc(schema=schema, messages=messages({"id": "k" * 256})))
    assert error.status == 400 and "256" in error.message


def test_key_names_must_be_top_level_schema_properties() -> None:
    error = batch_error(batch_doc(key_names=["nested"]))
    assert error.status == 400 and "[nested]" in error.message
    error = batch_error(batch_doc(key_names=["_sdc_id"], schema={"properties": {"_sdc_id": {"type": "integer"}}}))
    assert error.status == 400 and "reserved" in error.message


def test_key_names_absent_or_empty() -> None:
    doc = batch_doc()
    del doc["key_names"]
    assert parse_batch(body(doc), JSON).key_names is None
    assert parse_batch(body(batch_doc(key_names=[])), JSON).key_names == []


# ------------------------------------------------------------------------------------------------
# Batch: Arrow
# ------------------------------------------------------------------------------------------------


def test_valid_batch_is_typed_from_its_schema() -> None:
    doc = batch_doc(
        schema=REQUIRED_NAME,
        messages=messages(
            {
                "id": 1,
                "name": "Finn",
                "age": 15,
                "price": 2,
                "has_magic": False,
                "at": "2023-11-07T07:31:56.5+02:00",
                "tags": ["b", {"z": 1, "a": 2}],
                "meta": {"z": 1, "a": [1, 2]},
            },
            {"id": 2, "name": "Jake", "age": None, "price": 1.5},
            start=100,
        ),
    )
    batch = parse_batch(body(doc), JSON)
    assert isinstance(batch, Batch)
    assert (batch.table_name, batch.key_names, batch.count, batch.schema) == ("customers", ["id"], 2, REQUIRED_NAME)
    schema = batch.records.schema
    assert schema.names == ["id", "name", "age", "price", "has_magic", "at", "tags", "meta", "_sdc_sequence"]
    assert [schema.field(n).type for n in schema.names] == [
        pa.int64(),
        pa.string(),
        pa.int64(),
        pa.float64(),
        pa.bool_(),
        pa.timestamp("us", "UTC"),
        pa.string(),
        pa.string(),
        pa.int64(),
    ]
    # keys and required non-null properties are guaranteed; the rest may be absent
    assert {n: schema.field(n).nullable for n in schema.names} == {
        "id": False,
        "name": False,
        "age": True,
        "price": True,
        "has_magic": True,
        "at": True,
        "tags": True,
        "meta": True,
        "_sdc_sequence": False,
    }
    assert batch.records.to_pylist() == [
        {
            "id": 1,
            "name": "Finn",
            "age": 15,
            "price": 2.0,
            "has_magic": False,
            "at": dt.datetime(2023, 11, 7, 5, 31, 56, 500000, tzinfo=dt.UTC),
            "tags": '["b",{"a":2,"z":1}]',
            "meta": '{"a":[1,2],"z":1}',
            "_sdc_sequence": 100,
        },
        {
            "id": 2,
            "name": "Jake",
            "age": None,
            "price": 1.5,
            "has_magic": None,
            "at": None,
            "tags": None,
            "meta": None,
            "_sdc_sequence": 101,
        },
    ]


def test_type_lists_untyped_and_undeclared_fields() -> None:
    schema = {
        "properties": {
            "id": {"type": "integer"},
            "when": {"type": ["null", "string"], "format": "date-time"},
            "amount": {"type": ["integer", "number"]},
            "either": {"type": ["integer", "string"]},
            "anything": {},
        },
        "required": ["when"],
    }
    doc = batch_doc(
        schema=schema,
        messages=messages(
            {"id": 1, "when": None, "amount": 3, "either": "x", "anything": "s", "later": {"b": 1, "a": 2}},
            {"id": 2, "when": "2024-01-01T00:00:00Z", "amount": 2.5, "either": 4, "anything": [1], "other": True},
        ),
    )
    records = parse_batch(body(doc), JSON).records
    assert records.schema.names == ["id", "when", "amount", "either", "anything", "later", "other", "_sdc_sequence"]
    fields = {f.name: (f.type, f.nullable) for f in records.schema}
    assert fields["when"] == (pa.timestamp("us", "UTC"), True)  # required but may be null
    assert fields["amount"] == (pa.float64(), True)
    assert fields["either"] == fields["anything"] == fields["later"] == fields["other"] == (pa.string(), True)
    assert records.column("either").to_pylist() == ['"x"', "4"]
    assert records.column("anything").to_pylist() == ['"s"', "[1]"]
    assert records.column("later").to_pylist() == ['{"a":2,"b":1}', None]
    assert records.column("other").to_pylist() == [None, "true"]
    assert records.column("amount").to_pylist() == [3.0, 2.5]


def test_reserved_fields_are_dropped() -> None:
    schema = {
        "properties": {"id": {"type": "integer"}, "_sdc_batched_at": {"type": "string"}, "_rjm_x": {"type": "integer"}}
    }
    data = {
        "id": 1,
        "_sdc_batched_at": "x",
        "_rjm_x": 1,
        "_sdc_sequence": 99,
        "_sdc_received_at": "y",
        "_rjmz": 3,
        "ok": 1,
    }
    records = parse_batch(body(batch_doc(schema=schema, messages=messages(data, start=5))), JSON).records
    assert records.schema.names == ["id", "ok", "_sdc_sequence"]
    assert records.to_pylist() == [{"id": 1, "ok": "1", "_sdc_sequence": 5}]


def test_reserved_fields_are_still_validated_as_sent() -> None:
    schema = {"properties": {"id": {"type": "integer"}, "_sdc_x": {"type": "integer"}}}
    error = batch_error(batch_doc(schema=schema, messages=messages({"id": 1, "_sdc_x": "no"})))
    assert error.message == "Record 0 did not conform to schema: #/_sdc_x: 'no' is not of type 'integer'"


# ------------------------------------------------------------------------------------------------
# Sequencing
# ------------------------------------------------------------------------------------------------


def test_highest_sequence_wins_regardless_of_order() -> None:
    # Stitch's example: id 2 sent with ...445000 then ...395000: only ...445000 survives.
    doc = batch_doc(
        schema={"properties": {"id": {"type": "integer"}, "v": {"type": "string"}}},
        messages=[
            {"action": "upsert", "sequence": 1565881320445000, "data": {"id": 2, "v": "new"}},
            {"action": "upsert", "sequence": 1565838645395000, "data": {"id": 2, "v": "old"}},
            {"action": "upsert", "sequence": 1565838645395000, "data": {"id": 1, "v": "one"}},
        ],
    )
    batch = parse_batch(body(doc), JSON)
    winners = sequence_winners(batch.records, ["id"])
    assert winners.to_pylist() == [
        {"id": 2, "v": "new", "_sdc_sequence": 1565881320445000},
        {"id": 1, "v": "one", "_sdc_sequence": 1565838645395000},
    ]
    assert winners.schema == batch.records.schema


def test_without_keys_the_table_is_unchanged() -> None:
    table = pa.table({"id": [1, 1], "_sdc_sequence": [2, 1]})
    assert sequence_winners(table, []) is table
    empty = table.slice(0, 0)
    assert sequence_winners(empty, ["id"]).num_rows == 0


def expected_winners(rows: list[dict], keys: list[str]) -> list[dict]:
    """Per key the row of highest (sequence, position in the request), in request order."""
    best: dict[tuple, int] = {}
    for position, row in enumerate(rows):
        key = tuple(row[k] for k in keys)
        if key not in best or (row["_sdc_sequence"], position) >= (rows[best[key]]["_sdc_sequence"], best[key]):
            best[key] = position
    return [rows[p] for p in sorted(best.values())]


@pytest.mark.parametrize("seed", range(60))
def test_winners_property_over_random_permutations(seed: int) -> None:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = [
        {"a": rng.randrange(4), "b": rng.choice(["x", "y", "z"]), "_sdc_sequence": rng.randrange(6), "n": n}
        for n in range(rng.randrange(1, 80))
    ]
    for _ in range(5):
        rng.shuffle(rows)
        table = pa.Table.from_pylist(rows)
        for keys in (["a"], ["a", "b"], ["b"]):
            got = sequence_winners(table, keys).to_pylist()
            assert got == expected_winners(rows, keys)
            # the winner of every key has that key's highest sequence
            for row in got:
                same = [r["_sdc_sequence"] for r in rows if all(r[k] == row[k] for k in keys)]
                assert row["_sdc_sequence"] == max(same)


def test_equal_sequences_the_later_row_wins() -> None:
    table = pa.table({"id": ["k", "k", "j", "k"], "v": [1, 2, 3, 4], "_sdc_sequence": [5, 5, 5, 4]})
    assert sequence_winners(table, ["id"]).to_pylist() == [
        {"id": "k", "v": 2, "_sdc_sequence": 5},
        {"id": "j", "v": 3, "_sdc_sequence": 5},
    ]


def test_winners_on_timestamp_and_chunked_keys() -> None:
    stamp = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    first = pa.table({"at": pa.array([stamp, stamp], pa.timestamp("us", "UTC")), "_sdc_sequence": [1, 3]})
    second = pa.table({"at": pa.array([stamp], pa.timestamp("us", "UTC")), "_sdc_sequence": [2]})
    table = pa.concat_tables([first, second])
    assert sequence_winners(table, ["at"]).to_pylist() == [{"at": stamp, "_sdc_sequence": 3}]


# ------------------------------------------------------------------------------------------------
# Push
# ------------------------------------------------------------------------------------------------


def test_push_object_root_is_400() -> None:
    error = push_error(push_record())
    assert (error.status, error.body) == (400, {"status": "ERROR", "message": "An array of records is expected"})
    assert push_error([]).status == 400
    assert push_error([1]).message == "An array of records is expected"


def test_push_more_than_20000_records_is_400() -> None:
    error = push_error([push_record(data={"id": n}) for n in range(MAX_RECORDS + 1)])
    assert error.status == 400
    assert (
        len(parse_push(body([push_record(data={"id": n}) for n in range(MAX_RECORDS)]), JSON, 7)[0].records)
        == MAX_RECORDS
    )


def test_push_content_types() -> None:
    error = push_error([push_record()], "text/csv")
    assert (error.status, error.message) == (415, "Content-Type must be application/json")
    assert parse_push(body([push_record()]), "application/json; charset=utf-8", 7)


def test_push_transit_bodies_read_as_their_json_would() -> None:
    """Transit (stitchclient's format): maps with cached keys, timestamps and decimals."""
    import datetime as dt
    import decimal
    import io

    from transit.writer import Writer

    records = [
        {
            "client_id": 7,
            "table_name": "orders",
            "sequence": n,
            "action": "upsert",
            "key_names": ["id"],
            "data": {"id": n, "when": dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "amount": decimal.Decimal("12.50")},
        }
        for n in range(3)
    ]
    out = io.StringIO()
    Writer(out, "json").write(records)
    (batch,) = parse_push(out.getvalue().encode(), "application/transit+json", 7)
    assert batch.records.column("id").to_pylist() == [0, 1, 2]
    assert batch.records.column("when").to_pylist() == ["2026-01-01T00:00:00Z"] * 3
    assert batch.records.column("amount").to_pylist() == ["12.50"] * 3
    assert parse_push(body([push_record()]), "application/transit+json", 7)  # plain JSON is Transit too
    assert push_error(b'["~#nope', "application/transit+json").status == 400


def test_push_client_id_checks() -> None:
    error = push_error([push_record(client_id=8)])
    assert error.status == 403
    assert error.body == {
        "status": "ERROR",
        "message": "Access token is not associated with this client.",
        "error": "Forbidden",
        "errors": {"error": "Access token is not associated with this client."},
    }
    error = push_error([push_record(), push_record(client_id=8)])
    assert error.status == 422
    reason = "The batch contains data points for multiple clients. Only client_id 7 is allowed"
    assert error.body["errors"] == [{"reason": reason}] and error.message == reason
    error = push_error([{k: v for k, v in push_record().items() if k != "client_id"}])
    assert error.status == 401 and error.body["error"] == "Not Authenticated."
    assert push_error([push_record(client_id="7")]).status == 422
    assert push_error([push_record(client_id=True)], client_id=1).status == 422


@pytest.mark.parametrize("argument", ["table_name", "sequence", "action", "key_names", "data"])
def test_push_missing_argument_cant_be_blank(argument: str) -> None:
    record = push_record()
    del record[argument]
    error = push_error([push_record(), record])
    assert error.status == 422
    assert error.message == f"Record 1: {argument} can't be blank"
    assert error.body["error"] == "Request cannot be processed; see errors."
    assert error.body["errors"] == [{"reason": {argument: ["can't be blank"]}}]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"data": [1]}, "data must be an object"),
        ({"data": "x"}, "data must be an object"),
        ({"data": {"name": "a"}}, "data must include keys"),
        ({"data": {"id": None}}, "keys cannot not be null in data"),
        ({"data": {"id": "k" * 1025}}, "String keys cannot be longer than 1024 characters"),
    ],
)
def test_push_data_errors_are_422_with_stitchs_reasons(overrides: dict, reason: str) -> None:
    error = push_error([push_record(**overrides)])
    assert error.status == 422
    assert error.message == f"Record 0: {reason}"
    assert error.body["errors"] == [{"reason": {"data": [reason]}}]


def test_push_key_of_1024_characters_is_accepted() -> None:
    (batch,) = parse_push(body([push_record(data={"id": "k" * 1024})]), JSON, 7)
    assert batch.records.column("id").to_pylist() == ["k" * 1024]


@pytest.mark.parametrize("sequence", [True, 1.5, "1", 2**63, -1])
def test_push_bad_sequence_is_422(sequence: Any) -> None:
    error = push_error([push_record(sequence=sequence)])
    assert error.status == 422 and "sequence" in error.body["errors"][0]["reason"]


def test_push_other_record_errors() -> None:
    assert push_error([push_record(action="delete")]).status == 422
    assert push_error([push_record(key_names="id")]).status == 422
    assert push_error([push_record(key_names=["_sdc_id"], data={"_sdc_id": 1})]).status == 422
    error = push_error([push_record(), push_record(key_names=[])])
    assert error.status == 422 and "must be the same for every record" in error.message
    error = push_error([push_record(data={"id": 1}), push_record(data={"id": "1"})])
    assert error.status == 422 and "key id must have one type" in error.message
    assert push_error([push_record(data={"id": 1, "big": 2**63})]).status == 422
    assert push_error([push_record(data={"id": 1, **{f"f{n}": n for n in range(10_000)}})]).status == 422


def test_push_groups_records_by_table_and_splits_changing_types() -> None:
    records = [
        push_record(table_name="orders", sequence=1, data={"id": 1, "cost": 1.5, "who": {"b": 1, "a": [2]}}),
        push_record(table_name="people", sequence=2, key_names=[], data={"name": "Finn", "age": 15}),
        push_record(table_name="orders", sequence=3, data={"id": 2, "cost": 2, "flag": True, "_sdc_x": 1}),
        push_record(table_name="orders", sequence=4, data={"id": 3, "cost": "n/a", "flag": None, "gone": None}),
        push_record(table_name="people", sequence=5, key_names=[], data={"name": "Jake", "age": 28.5, "_rjm": 2}),
    ]
    orders, people = parse_push(body(records), JSON, 7)
    assert (orders.table_name, orders.key_names, orders.count) == ("orders", ["id"], 3)
    assert (people.table_name, people.key_names, people.count) == ("people", [], 2)
    assert orders.records.schema == pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("cost", pa.float64()),
            pa.field("cost__it", pa.int64()),
            pa.field("cost__st", pa.string()),
            pa.field("who", pa.string()),
            pa.field("flag", pa.bool_()),
            pa.field("_sdc_sequence", pa.int64(), nullable=False),
        ]
    )
    assert orders.records.to_pylist() == [
        {
            "id": 1,
            "cost": 1.5,
            "cost__it": None,
            "cost__st": None,
            "who": '{"a":[2],"b":1}',
            "flag": None,
            "_sdc_sequence": 1,
        },
        {"id": 2, "cost": None, "cost__it": 2, "cost__st": None, "who": None, "flag": True, "_sdc_sequence": 3},
        {"id": 3, "cost": None, "cost__it": None, "cost__st": "n/a", "who": None, "flag": None, "_sdc_sequence": 4},
    ]
    assert orders.schema == {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "cost": {"type": ["null", "number"]},
            "cost__it": {"type": ["null", "integer"]},
            "cost__st": {"type": ["null", "string"]},
            "who": {"type": ["null", "object", "array"]},
            "flag": {"type": ["null", "boolean"]},
        },
    }
    assert people.records.to_pylist() == [
        {"name": "Finn", "age": 15, "age__fl": None, "_sdc_sequence": 2},
        {"name": "Jake", "age": None, "age__fl": 28.5, "_sdc_sequence": 5},
    ]


def test_push_winners_per_table() -> None:
    records = [push_record(sequence=s, data={"id": i, "v": s}) for s, i in [(5, 1), (9, 1), (7, 1), (1, 2)]]
    (batch,) = parse_push(body(records), JSON, 7)
    assert sequence_winners(batch.records, batch.key_names or []).to_pylist() == [
        {"id": 1, "v": 9, "_sdc_sequence": 9},
        {"id": 2, "v": 1, "_sdc_sequence": 1},
    ]


def test_push_split_column_colliding_with_a_field_is_422() -> None:
    records = [push_record(data={"id": 1, "cost": 1.5, "cost__it": "x"}), push_record(data={"id": 2, "cost": 2})]
    error = push_error(records)
    assert error.status == 422 and "cost__it" in error.message


def test_what_singers_target_stitch_sends_besides_the_documented_keys_is_accepted():
    """target-stitch adds ``table_version``, ``bookmark_names``, ``time_extracted`` and
    ``activate_version`` messages: accepted; the version is kept as ``_sdc_table_version``."""
    doc = {
        "table_name": "users",
        "schema": {"properties": {"id": {"type": "integer"}}},
        "key_names": ["id"],
        "table_version": 1733000000000,
        "bookmark_names": ["id"],
        "messages": [
            {"action": "upsert", "sequence": 1, "data": {"id": 1}, "time_extracted": "2026-12-01T10:00:00.000000Z"},
            {"action": "upsert", "sequence": 2, "data": {"id": 2}},
            {"action": "activate_version", "sequence": 3},
        ],
    }
    batch = parse_batch(orjson.dumps(doc), "application/json")
    assert batch.count == 2 and batch.records.column("id").to_pylist() == [1, 2]
    assert batch.records.column("_sdc_table_version").to_pylist() == [1733000000000] * 2
    assert batch.table_version == 1733000000000 and batch.activated_versions == (1733000000000,)
    bad = {**doc, "messages": [{"action": "activate_version", "sequence": 1, "oops": 1}]}
    with pytest.raises(WireError) as caught:
        parse_batch(orjson.dumps(bad), "application/json")
    assert "extraneous key [oops]" in caught.value.body["message"]
