"""Arrow -> JSON records, vectorised: one JSON object per row, built with Arrow string kernels.

Each output value is ``{...},`` (a trailing comma), so the records of a batch are one contiguous
slice of the array's data buffer: batch bodies are assembled without a Python object per record.
A whole table is assembled by a single element-wise join of literal keys and value columns.
Optional fields without a value are left out of their record; types are in ``record_schema``
shape already (see ``transform.schema``). Nested values (lists, structs) fall back to orjson.
"""

import base64
from collections.abc import Collection

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..language.expressions import to_string

_ESCAPES = [("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f")]
_OTHER_CONTROL = [chr(c) for c in range(0x20) if chr(c) not in "\n\r\t\b\f"]
_CONTROL_RE = "[" + "".join(f"\\x{ord(c):02x}" for c in _OTHER_CONTROL) + "]"
_ESCAPED_BYTES = bytes(range(0x20)) + b'"\\'


def _may_need_escaping(strings: pa.Array) -> bool:
    """Whether any byte of the values is a quote, backslash or control character (one pass over the data)."""
    offsets, data = strings.buffers()[1], strings.buffers()[2]
    if data is None or len(strings) == 0:
        return False
    bounds = memoryview(offsets).cast("i")
    text = data[bounds[strings.offset] : bounds[strings.offset + len(strings)]].to_pybytes()
    return len(text.translate(None, _ESCAPED_BYTES)) != len(text)


def _escape(strings: pa.Array) -> pa.Array:
    """The content of JSON string literals (without the quotes)."""
    if _may_need_escaping(strings):
        for old, new in _ESCAPES:
            strings = pc.replace_substring(strings, old, new)
        if pc.any(pc.match_substring_regex(strings, _CONTROL_RE)).as_py():
            for c in _OTHER_CONTROL:
                strings = pc.replace_substring(strings, c, f"\\u{ord(c):04x}")
    return strings


def _python_json(col: pa.Array) -> pa.Array:
    return pa.array([None if v is None else orjson.dumps(v).decode() for v in col.to_pylist()], pa.string())


def json_text(col: pa.Array, *, raw_json: bool = False) -> tuple[pa.Array, bool]:
    """Each value as JSON text (null stays null), and whether it still needs surrounding quotes."""
    t = col.type
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.string()), False
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return (col.cast(pa.string()), False) if raw_json else (_escape(col.cast(pa.string())), True)
    if pa.types.is_boolean(t):
        return pc.if_else(col, "true", "false"), False
    if pa.types.is_integer(t) or pa.types.is_decimal(t):  # decimals stay exact, and valid JSON numbers
        return pc.cast(col, pa.string()), False
    if pa.types.is_floating(t):
        return pc.if_else(pc.is_finite(col), pc.cast(col, pa.string()), pa.scalar(None, pa.string())), False
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return to_string(col), True  # RFC 3339 text needs no escaping
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pa.array(
            [None if v is None else base64.b64encode(v).decode() for v in col.to_pylist()], pa.string()
        ), True  # bytes travel as base64 text
    return _python_json(col), False


def encode_records(table: pa.Table, *, required: set[str], raw_json_fields: Collection[str] = frozenset()) -> pa.Array:
    """One ``{...},`` string per row of ``table``.

    Fields always present (no nulls, or required: written as ``null``) are joined straight in; an
    optional field with nulls is a ``key:value`` fragment that is empty where the value is null. A
    comma goes after the fields before the last always-present one and before those after it, so
    no record has a stray comma.
    """
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.string())
    columns = []  # (key, values, quoted, always present)
    for name in table.column_names:
        values, quoted = json_text(table.column(name).combine_chunks(), raw_json=name in raw_json_fields)
        key = orjson.dumps(name).decode() + ":"
        if values.null_count and name in required:
            values = pc.fill_null(pc.binary_join_element_wise('"', values, '"', "") if quoted else values, "null")
            quoted = False
        columns.append((key, values, quoted, values.null_count == 0))
    anchor = max((i for i, c in enumerate(columns) if c[3]), default=None)
    if anchor is None:  # every field optional and sometimes null: comma before each, then drop the first
        fragments = [
            pc.fill_null(pc.binary_join_element_wise("," + key + ('"' if q else ""), v, '"' if q else "", ""), "")
            for key, v, q, _ in columns
        ]
        body = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*fragments, ""), start=1, stop=2**31 - 1)
        return pc.binary_join_element_wise("{", body, "},", "")

    parts: list = []
    literal = "{"
    for i, (key, values, quoted, present) in enumerate(columns):
        before = "," if i > anchor else ""
        after = "," if i < anchor else ""
        quote = '"' if quoted else ""
        if present:
            parts += [literal + before + key + quote, values]
            literal = quote + after
        else:
            fragment = pc.binary_join_element_wise(before + key + quote, values, quote + after, "")
            parts += [literal, pc.fill_null(fragment, "")]
            literal = ""
    parts.append(literal + "},")
    return pc.binary_join_element_wise(*parts, "")


def joined_buffer(records: pa.Array) -> pa.Buffer:
    """The records of an ``encode_records`` array (or a slice of it) joined with commas, without a copy."""
    if len(records) == 0:
        return pa.py_buffer(b"")
    offsets = memoryview(records.buffers()[1]).cast("i")
    start, end = offsets[records.offset], offsets[records.offset + len(records)]
    return records.buffers()[2][start : end - 1]  # without the last trailing comma


def joined_bytes(records: pa.Array) -> bytes:
    """``joined_buffer`` as bytes."""
    return joined_buffer(records).to_pybytes()
