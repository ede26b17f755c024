"""Which text values are one valid JSON object (or array), checked in C, not per row in Python.

Text columns mapped to ``record_schema`` fields of ``type: object`` or ``array`` (jsonb, json, a
tenant's own text) are written into batch bodies as they are, so each value must be exactly one
JSON value of that kind: anything else could close the record and forge the envelope around it.

The whole column is parsed at once by Arrow's JSON reader (RapidJSON), each value framed as
``{"v":<value>}`` on its own line. That reader is lenient in two ways we guard against: it takes
``NaN``/``Infinity`` and parses several documents on one line. Values that mention ``NaN``/``Inf``
or hold a line break, and every value of a column the fast check rejects, are parsed one by one by
orjson, which is strict (RFC 8259).
"""

import io

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

_PARSE = pajson.ParseOptions(explicit_schema=pa.schema([]), unexpected_field_behavior="ignore")
_READ = pajson.ReadOptions(use_threads=False, block_size=1 << 30)
_NEEDS_STRICT_PARSER = r"NaN|Inf|\n|\r"
_OPENING = {"object": r"^[ \t\n\r]*\{", "array": r"^[ \t\n\r]*\["}


def invalid_json(values: pa.Array, kind: str) -> pa.Array:
    """A boolean mask: True where a non-null value is not exactly one JSON ``kind`` (object or array)."""
    values = values.cast(pa.string())
    if len(values) == 0:
        return pa.array([], pa.bool_())
    wrong_kind = pc.invert(pc.fill_null(pc.match_substring_regex(values, _OPENING[kind]), True))
    strict = pc.fill_null(pc.match_substring_regex(values, _NEEDS_STRICT_PARSER), False)
    fast = pc.and_(pc.is_valid(values), pc.invert(strict))
    fast_values = values.filter(fast)
    if len(fast_values) and not _parses_as_lines(fast_values):
        strict = pc.is_valid(values)  # somewhere a bad value: find it the strict way
    if not pc.any(strict).as_py():
        return wrong_kind
    bad = [False] * len(values)
    for i, text in zip(pc.indices_nonzero(strict).to_pylist(), values.filter(strict).to_pylist()):
        bad[i] = not _is_one_json_value(text)
    return pc.or_(wrong_kind, pa.array(bad, pa.bool_()))


def _parses_as_lines(values: pa.Array) -> bool:
    """Whether every value, framed as ``{"v":value}`` on a line, parses: one row per value, no error."""
    framed = pc.binary_join_element_wise('{"v":', values, "}\n", "")
    offsets, data = framed.buffers()[1], framed.buffers()[2]
    bounds = memoryview(offsets).cast("i")
    raw = data[bounds[framed.offset] : bounds[framed.offset + len(framed)]] if data is not None else b""
    try:
        table = pajson.read_json(io.BytesIO(raw), read_options=_READ, parse_options=_PARSE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return table.num_rows == len(values)


def _is_one_json_value(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
