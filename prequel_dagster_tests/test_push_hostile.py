"""What a hostile review of the Batch request's fast paths found: each was once proven valid (the
client told "accepted" for a batch the commit could not read) or answered 500; now every path gives
Stitch's 400. Through ``check_batch``, the request path, with or without the native proof."""

import json

import pytest

from prequel_dagster.push import wire
from prequel_dagster.push.wire import Batch, BatchHead, WireError, parse_batch

JSON = "application/json"


def _records(body: bytes) -> Batch | WireError:
    try:
        return parse_batch(body, JSON, path="records")
    except WireError as exc:
        return exc


def _body(schema: dict, data: str, *, messages: int = 1, schema_first: bool = True) -> bytes:
    listed = ", ".join([f'{{"action": "upsert", "sequence": 1, "data": {data}}}'] * messages)
    parts = [f'"schema": {json.dumps(schema)}', f'"messages": [{listed}]']
    return ('{"table_name": "t", ' + ", ".join(parts if schema_first else parts[::-1]) + "}").encode()


@pytest.mark.parametrize("length", [255, 256, 300])
@pytest.mark.parametrize("schema_first", [True, False])
def test_string_keys_over_255_characters_are_refused_by_every_path(length: int, schema_first: bool) -> None:
    schema = {"properties": {"k": {"type": "string"}}}
    key = "é" * length
    body = _body(schema, json.dumps({"k": key}), schema_first=schema_first).replace(
        b'"table_name"', b'"key_names": ["k"], "table_name"'
    )
    if length <= 255:
        assert wire.check_batch(body, JSON).count == 1
    else:
        with pytest.raises(WireError, match="key property k"):
            wire.check_batch(body, JSON)


@pytest.mark.parametrize("digits", [300, 308, 309, 400])
@pytest.mark.parametrize("schema_first", [True, False])
def test_integer_literals_beyond_a_double_are_refused_as_orjson_refuses_them(digits: int, schema_first: bool) -> None:
    schema = {"properties": {"n": {"type": "number"}}}
    body = _body(schema, '{"n": 1' + "0" * digits + "}", schema_first=schema_first)
    slow = _records(body)
    try:
        fast: object = wire.check_batch(body, JSON)
    except WireError as exc:
        fast = exc
    if isinstance(slow, WireError):
        assert isinstance(fast, WireError) and fast.message == slow.message
    else:
        assert fast == BatchHead("t", None, 1)
    assert isinstance(slow, WireError) == (digits >= 309)


def test_an_action_of_any_json_type_gets_stitchs_400_not_a_500() -> None:
    for action in ("{}", "[]", "[1]", "null", "1"):
        body = b'{"table_name": "t", "schema": {"properties": {}}, "messages": [{"action": %s, "sequence": 0, "data": {}}]}'
        with pytest.raises(WireError, match="is not a valid enum value"):
            wire.check_batch(body % action.encode(), JSON)


def test_deep_nesting_gets_stitchs_400_not_a_500() -> None:
    for depth in (500, 1000, 5000):
        body = b'{"table_name": "t", "schema": {"properties": {}}, "messages": [], "bookmark_names": %s}'
        with pytest.raises(WireError) as caught:
            wire.check_batch(body % (b"[" * depth + b"]" * depth), JSON)
        assert caught.value.status == 400
    deep = {"properties": {"a": {}}}
    node = deep["properties"]["a"]
    for _ in range(900):
        node["items"] = {}
        node = node["items"]
    with pytest.raises(WireError, match="Invalid JSON schema"):
        wire.check_batch(_body(deep, "{}"), JSON)


def test_a_wide_schema_over_many_records_is_refused_before_it_costs_gigabytes() -> None:
    """10,000 declared properties x 20,000 tiny records would be 200 million cells: a 400 naming the fix."""
    schema = {"properties": {f"f{i}": {"type": ["null", "string"]} for i in range(2_000)}}
    body = _body(schema, '{"f1": "x"}', messages=20_000)
    with pytest.raises(WireError, match="over 20,000,000 cells; send fewer records per batch"):
        wire.check_batch(body, JSON)
    assert wire.check_batch(_body(schema, '{"f1": "x"}', messages=10_000), JSON).count == 10_000  # 20M: at the bound


def test_a_schema_of_too_many_subschemas_is_refused() -> None:
    schema = {"properties": {f"f{i}": {"type": "string"} for i in range(20_000)}}
    with pytest.raises(WireError, match="more than 20,000 subschemas"):
        wire.check_batch(_body(schema, "{}"), JSON)
