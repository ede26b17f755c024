"""The values of a rule's ``field`` in a record batch: a column, or a dotted path into one
(``col9.foo.bar``) through struct columns or JSON text columns.

A column whose name is the whole path wins (``"a.b"`` may be a column's own name); otherwise the
longest leading part that names a column is the column and the rest are keys inside it. A struct
column is walked with ``struct_field`` (an unknown key is an error: the schema is known). A text
column is parsed as JSON once per batch by Arrow's JSON reader (in C, types inferred per batch,
ISO timestamps read as timestamps); a key missing from a row's object, a row whose text is not a
JSON object, and a null anywhere on the way give null. Only when a path's values mix JSON types
across rows (a number here, a string there), which Arrow's reader refuses, is that column read row
by row with orjson and the path's values kept as text.
"""

import io
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from ..config.data_rules import RulesError

_PARSE = pajson.ParseOptions(unexpected_field_behavior="infer")
_READ = pajson.ReadOptions(use_threads=False, block_size=1 << 30)


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array, dictionary-encoded values decoded."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values


class FieldResolver:
    """Resolves field paths against one batch, parsing each JSON text column at most once."""

    def __init__(self, batch: pa.RecordBatch):
        self.batch = batch
        self._names = set(batch.schema.names)
        self._json: dict[str, pa.Array | None] = {}  # None: the column needs the row-by-row reader
        self._cache: dict[str, pa.Array] = {}

    def values(self, field: str, *, where: str) -> pa.Array:
        """The values of ``field``, one per row; ``where`` names the rule in error messages."""
        if field not in self._cache:
            self._cache[field] = self._resolve(field, where)
        return self._cache[field]

    def has(self, field: str) -> bool:
        """Whether ``field`` starts with a column of the batch (it may still name a missing key)."""
        parts = field.split(".")
        return any(".".join(parts[:i]) in self._names for i in range(len(parts), 0, -1))

    def _resolve(self, field: str, where: str) -> pa.Array:
        if field in self._names:
            return plain(self.batch.column(field))
        parts = field.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            column = ".".join(parts[:cut])
            if column in self._names:
                return self._descend(column, parts[cut:], field, where)
        names = ", ".join(self.batch.schema.names)
        raise RulesError(f"{where}: unknown field '{field}'; the columns are: {names}")

    def _descend(self, column: str, keys: list[str], field: str, where: str) -> pa.Array:
        values = plain(self.batch.column(column))
        for i, key in enumerate(keys):
            t = values.type
            if pa.types.is_struct(t):
                if t.get_field_index(key) < 0:
                    known = ", ".join(t.field(j).name for j in range(t.num_fields))
                    raise RulesError(
                        f"{where}: '{field}': the struct {'.'.join([column, *keys[:i]])} has no field '{key}' "
                        f"(its fields: {known})"
                    )
                values = plain(pc.struct_field(values, key))
            elif is_text(t) and i == 0:
                values = self._json_path(column, keys)
                break
            elif pa.types.is_null(t):
                break
            else:
                raise RulesError(
                    f"{where}: '{field}': {'.'.join([column, *keys[:i]])} is {t}, not an object to take "
                    f"'{key}' from; reference a struct or JSON text column"
                )
        return values

    def _json_path(self, column: str, keys: list[str]) -> pa.Array:
        if column not in self._json:
            self._json[column] = _parse_objects(plain(self.batch.column(column)))
        parsed = self._json[column]
        if parsed is None:
            return _path_row_by_row(self.batch.column(column), keys)
        values = parsed
        for key in keys:
            t = values.type
            if pa.types.is_struct(t) and t.get_field_index(key) >= 0:
                values = plain(pc.struct_field(values, key))
            else:
                return pa.nulls(len(values))  # the key is in no row's object, or a scalar is in the way
        return values


def _parse_objects(texts: pa.Array) -> pa.Array | None:
    """Each row's JSON object as one struct array (null where a row holds no object), or None when
    Arrow's reader refuses the column (a row that is not JSON, a key whose type changes)."""
    texts = texts.cast(pa.string())
    n = len(texts)
    if n == 0:
        return pa.nulls(0)
    objects = pc.if_else(pc.fill_null(pc.match_substring_regex(texts, r"^[ \t\r\n]*\{"), False), texts, None)
    one_line = pc.replace_substring_regex(objects, r"[\r\n]", " ")  # whitespace in JSON: one row per line
    framed = pc.binary_join_element_wise('{"v":', pc.fill_null(one_line, "null"), "}\n", "")
    offsets, data = framed.buffers()[1], framed.buffers()[2]
    bounds = memoryview(offsets).cast("i")
    raw = memoryview(data)[bounds[framed.offset] : bounds[framed.offset + n]]
    try:
        table = pajson.read_json(io.BytesIO(raw), read_options=_READ, parse_options=_PARSE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != n:  # two documents on one line
        return None
    values = plain(table.column("v"))
    return values if pa.types.is_struct(values.type) else pa.nulls(n)


def _path_row_by_row(texts: pa.Array | pa.ChunkedArray, keys: list[str]) -> pa.Array:
    out: list[Any] = []
    for text in plain(texts).to_pylist():
        value: Any = None
        if text is not None:
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                value = None
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        out.append(value)
    kinds = {type(v) for v in out if v is not None}
    if len(kinds) <= 1 and not kinds & {dict, list}:
        return pa.array(out)
    return pa.array([v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in out], pa.string())
