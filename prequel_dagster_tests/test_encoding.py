"""The vectorised JSON encoder and timestamp formatting against plain Python references."""

import datetime as dt
import decimal
import itertools
import json

import pyarrow as pa
import pytest

from prequel_dagster.language.expressions import to_string
from prequel_dagster.transform.encoding import encode_records, joined_bytes

VALUES = {
    "s": ["plain", None, 'quote " and \\ back', "tab\tnew\nline\x01ctl", "ünïcödé ✓"],
    "i": [1, None, -5, 2**62, 0],
    "f": [1.5, None, float("nan"), -0.25, 1e20],
    "b": [True, None, False, True, False],
    "d": [decimal.Decimal("12.30"), None, decimal.Decimal("-0.01"), decimal.Decimal("0.00"), decimal.Decimal("5.00")],
}
TYPES = {"s": pa.string(), "i": pa.int64(), "f": pa.float64(), "b": pa.bool_(), "d": pa.decimal128(12, 2)}


def expected(row: dict, required: set[str]) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, float) and v != v:
            v = None
        if v is None and k not in required:
            continue
        out[k] = float(v) if isinstance(v, decimal.Decimal) else v
    return out


@pytest.mark.parametrize("names", [list(p) for p in itertools.permutations("sifbd", 3)] + [list("sifbd")])
@pytest.mark.parametrize("required", [set(), {"s"}, {"i", "b"}])
def test_records_match_python_json_for_every_field_order_and_null_pattern(names, required):
    table = pa.table({n: pa.array(VALUES[n], TYPES[n]) for n in names})
    encoded = encode_records(table, required=required)
    assert all(text.endswith("},") for text in encoded.to_pylist())
    parsed = json.loads("[" + joined_bytes(encoded).decode() + "]")
    want = [expected({n: VALUES[n][i] for n in names}, required) for i in range(table.num_rows)]
    assert parsed == want
    for text, row in zip(encoded.to_pylist(), want):
        assert list(json.loads(text[:-1])) == list(row)  # field order kept


def test_all_optional_fields_null_gives_an_empty_object():
    table = pa.table({"a": pa.array([None, "x"], pa.string()), "b": pa.array([None, None], pa.int64())})
    assert encode_records(table, required=set()).to_pylist() == ["{},", '{"a":"x"},']


def test_decimals_are_written_exactly():
    table = pa.table({"d": pa.array([decimal.Decimal("12345678901.23")], pa.decimal128(13, 2))})
    assert encode_records(table, required=set()).to_pylist() == ['{"d":12345678901.23},']


def test_raw_json_fields_are_embedded():
    table = pa.table({"p": pa.array(['{"a": [1, 2]}', None])})
    out = encode_records(table, required=set(), raw_json_fields={"p"}).to_pylist()
    assert out == ['{"p":{"a": [1, 2]}},', "{},"]


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
@pytest.mark.parametrize("with_pre_1970", [False, True])  # the fast path needs non-negative times
def test_timestamps_format_like_strftime_for_every_range(unit, with_pre_1970):
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000}[unit]
    raw = [
        0,
        None,
        1_767_225_600 * per_second,
        1_767_225_600 * per_second + per_second // 3 * 2,
        253_402_300_799 * per_second,
        951_782_400 * per_second,
    ]  # 2026, 9999-12-31, a leap day
    if with_pre_1970:
        raw.append(-86_400 * per_second - 1)
    ts = pa.array(raw, pa.timestamp(unit, "UTC"))
    want = [None if v is None else v.strftime("%Y-%m-%dT%H:%M:%S.%fZ") for v in ts.to_pylist()]
    assert to_string(ts).to_pylist() == want
    assert to_string(pa.chunked_array([ts, ts])).to_pylist() == want * 2


def test_timestamps_in_other_zones_are_written_in_utc():
    ts = pa.array([dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)], pa.timestamp("us", "UTC"))
    berlin = ts.cast(pa.timestamp("us", "Europe/Berlin"))
    assert to_string(berlin).to_pylist() == ["2026-03-01T12:00:00.000000Z"]
