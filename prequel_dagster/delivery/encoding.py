"""Arrow -> JSON records, vectorised: one JSON object per row, built with Arrow string kernels.

Each output value is ``{...},`` (a trailing comma), so the records of a batch are one contiguous
slice of the array's data buffer: batch bodies are assembled without a Python object per record.
Optional fields without a value are left out of their record; types are in ``record_schema``
shape already (see ``transform.schema``). Nested values (lists, structs) fall back to orjson.
"""

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..transform.expressions import to_string

_ESCAPES = [("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f")]
_OTHER_CONTROL = [chr(c) for c in range(0x20) if chr(c) not in "\n\r\t\b\f"]
_CONTROL_RE = "[" + "".join(f"\\x{ord(c):02x}" for c in _OTHER_CONTROL) + "]"
_NEEDS_ESCAPE = r'[\\"\x00-\x1f]'


def _quote(strings: pa.Array, *, clean: bool = False) -> pa.Array:
    """JSON string literals. ``clean`` skips escaping for text known to need none (formatted timestamps)."""
    if not clean and pc.any(pc.match_substring_regex(strings, _NEEDS_ESCAPE)).as_py():
        for old, new in _ESCAPES:
            strings = pc.replace_substring(strings, old, new)
        if pc.any(pc.match_substring_regex(strings, _CONTROL_RE)).as_py():
            for c in _OTHER_CONTROL:
                strings = pc.replace_substring(strings, c, f"\\u{ord(c):04x}")
    return pc.binary_join_element_wise('"', strings, '"', "")


def _python_json(col: pa.Array) -> pa.Array:
    return pa.array([None if v is None else orjson.dumps(v).decode() for v in col.to_pylist()], pa.string())


def json_values(col: pa.Array, *, raw_json: bool = False) -> pa.Array:
    """Each value as JSON text (null stays null)."""
    t = col.type
    if pa.types.is_null(t):
        return pa.nulls(len(col), pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return col.cast(pa.string()) if raw_json else _quote(col.cast(pa.string()))
    if pa.types.is_boolean(t):
        return pc.if_else(col, "true", "false")
    if pa.types.is_integer(t):
        return pc.cast(col, pa.string())
    if pa.types.is_floating(t):
        finite = pc.is_finite(col)
        return pc.if_else(finite, pc.cast(col, pa.string()), pa.scalar(None, pa.string()))
    if pa.types.is_decimal(t):
        return pc.cast(col, pa.string())  # exact, and a valid JSON number
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _quote(to_string(col), clean=True)
    return _python_json(col)


def encode_records(table: pa.Table, *, required: set[str], raw_json_fields: set[str] = frozenset()) -> pa.Array:
    """One ``{...},`` string per row of ``table``."""
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.string())
    fragments = []
    for name in table.column_names:
        values = json_values(table.column(name).combine_chunks(), raw_json=name in raw_json_fields)
        key = "," + orjson.dumps(name).decode() + ":"
        fragment = pc.binary_join_element_wise(key, values, "")
        fill = key + "null" if name in required else ""
        fragments.append(pc.fill_null(fragment, fill))
    body = fragments[0] if len(fragments) == 1 else pc.binary_join_element_wise(*fragments, "")
    body = pc.utf8_slice_codeunits(body, start=1, stop=2**31 - 1)  # drop the leading comma
    return pc.binary_join_element_wise("{", body, "},", "")


def joined_bytes(records: pa.Array) -> bytes:
    """The records of an ``encode_records`` array (or a slice of it) joined with commas, zero-copy until here."""
    if len(records) == 0:
        return b""
    offsets = memoryview(records.buffers()[1]).cast("i")
    start, end = offsets[records.offset], offsets[records.offset + len(records)]
    return records.buffers()[2][start : end - 1].to_pybytes()  # without the last trailing comma
