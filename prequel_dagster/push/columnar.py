"""The vectorised path of ``parse_batch``: a batch whose schema only types its top-level fields is
proven valid field by field (C loops over each field's values), not record by record through
``jsonschema`` (which costs ~100 µs a record).

It only ever *proves*: anything it cannot prove (a null where the schema may forbid one, a value of
another type, a keyword beyond ``type``/``format``, a reserved or JSON-valued field, an
``activate_version`` ...) returns None and the per-record path decides, with Stitch's exact
message. So both paths accept the same batches and build the same table (tested by comparing them).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# Draft-4 keywords that constrain a value; any other key of a property (title, description,
# default, inclusion...) is ignored by the validator, so it does not stop the vectorised path.
_CONSTRAINTS = frozenset(
    {
        "$ref",
        "additionalItems",
        "additionalProperties",
        "allOf",
        "anyOf",
        "dependencies",
        "enum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "items",
        "maxItems",
        "maxLength",
        "maxProperties",
        "maximum",
        "minItems",
        "minLength",
        "minProperties",
        "minimum",
        "multipleOf",
        "not",
        "oneOf",
        "pattern",
        "patternProperties",
        "properties",
        "required",
        "type",
        "format",
    }
)
_ROOT_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties"})
_PY_TYPES: dict[str, frozenset[type]] = {
    "integer": frozenset({int}),  # type() is exact: True is a bool, not an int
    "number": frozenset({int, float}),
    "boolean": frozenset({bool}),
    "string": frozenset({str}),
    "datetime": frozenset({str}),
}
PLAIN_ARROW_TYPES = {  # a plain field's values as first read (date-times: their text)
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "datetime": pa.string(),
}
_MESSAGE_KEYS = frozenset({"action", "sequence", "data", "time_extracted"})
_YEAR = "([0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # 0000 is no year to Python
_RFC3339 = "^" + _YEAR + r"-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?$"
_NONE = type(None)


@dataclass(frozen=True)
class PlainField:
    """A declared top-level field: its column kind, and whether its declared type admits null."""

    name: str
    kind: str
    type_admits_null: bool


def plain_messages(messages: list[Any], max_sequence: int, max_fields: int) -> tuple[list[dict], list[int]] | None:
    """``(datas, sequences)`` when every message is a well-formed upsert, else None."""
    if set(map(type, messages)) != {dict}:
        return None
    keys = set(chain.from_iterable(messages))
    if not keys <= _MESSAGE_KEYS:
        return None
    actions = list(map(dict.get, messages, repeat("action")))
    if actions.count("upsert") != len(actions):  # (not a set: an action may be any JSON value)
        return None
    sequences: list[Any] = list(map(dict.get, messages, repeat("sequence")))
    datas: list[Any] = list(map(dict.get, messages, repeat("data")))
    if set(map(type, sequences)) != {int} or set(map(type, datas)) != {dict}:
        return None
    if min(sequences) < 0 or max(sequences) > max_sequence or max(map(len, datas)) > max_fields:
        return None
    if "time_extracted" in keys:
        if {type(m["time_extracted"]) for m in messages if "time_extracted" in m} != {str}:
            return None
    return datas, sequences


def plain_fields(schema: dict, fields: Sequence[PlainField], properties: dict, required: set[str]) -> bool:
    """Whether the schema constrains nothing but each top-level field's type (and which are required)."""
    if not set(schema) & _CONSTRAINTS <= _ROOT_KEYWORDS or not required <= {field.name for field in fields}:
        return False
    if schema.get("type", "object") != "object" or not isinstance(schema.get("additionalProperties", True), bool):
        return False
    if len(fields) != len(properties):  # a reserved property: validated as sent by the per-record path
        return False
    for field in fields:
        prop = properties[field.name]
        if field.kind == "json" or not set(prop) & _CONSTRAINTS <= {"type", "format"}:
            return False
    return True


def plain_columns(
    datas: list[dict],
    fields: Sequence[PlainField],
    *,
    required: set[str],
    key_names: Sequence[str],
    closed: bool,
    max_key_chars: int,
    is_reserved: Any,
) -> tuple[list[pa.Array], list[str]] | None:
    """The declared fields' columns and the undeclared field names (first-seen order), or None.

    The caller has checked :func:`plain_fields`; undeclared fields become JSON text columns there.
    """
    names = [field.name for field in fields]
    columns, complete = _columns(datas, names)
    if complete and set(map(len, datas)) == {len(names)}:
        extras: list[str] = []  # every record has exactly the declared fields
    else:
        seen = dict.fromkeys(chain.from_iterable(datas))
        if any(is_reserved(name) for name in seen):
            return None
        declared = set(names)
        extras = [name for name in seen if name not in declared]
        if extras and closed:
            return None
    keys = set(key_names)
    arrays: list[pa.Array] = []
    for field, values in zip(fields, columns, strict=True):
        types = set(map(type, values))
        if _NONE in types:  # absent or null: only provably valid when both would be
            if not field.type_admits_null or field.name in required or field.name in keys:
                return None
            types.discard(_NONE)
        if not types <= _PY_TYPES[field.kind]:
            return None
        if field.name in keys and field.kind == "string" and max(map(len, values)) > max_key_chars:
            return None
        try:
            array = pa.array(values, PLAIN_ARROW_TYPES[field.kind])
        except (pa.ArrowException, OverflowError, TypeError, ValueError):  # e.g. beyond 64 bits
            return None
        if field.kind == "datetime":
            stamps = timestamps(array)
            if stamps is None:
                return None
            array = stamps
        arrays.append(array)
    return arrays, extras


def _columns(datas: list[dict], names: list[str]) -> tuple[list[Sequence[Any]], bool]:
    """Each name's values (None where absent), and whether every record has every name (then the
    transposition ran in C)."""
    if not names:
        return [], True
    try:
        rows = list(map(itemgetter(*names), datas))
    except KeyError:
        return [list(map(dict.get, datas, repeat(name))) for name in names], False
    return (list(zip(*rows, strict=True)) if len(names) > 1 else [rows]), True


def timestamps(strings: pa.Array) -> pa.Array | None:
    """RFC 3339 strings as ``timestamp[us, UTC]`` exactly as ``wire.parse_datetime`` reads them, or
    None when one is not provably the same (Python refuses year 0; Arrow more than 6 fraction digits)."""
    if pc.any(pc.invert(pc.match_substring_regex(strings, _RFC3339))).as_py():
        return None
    try:  # the usual shape (``T``, an offset or ``Z``) casts as it is
        return strings.cast(pa.timestamp("us", "UTC"))
    except (pa.ArrowException, ValueError):
        pass
    normal = pc.replace_substring_regex(strings, "^(.{10})[t ]", r"\1T")
    normal = pc.replace_substring_regex(normal, "[Zz]$", "+00:00")
    normal = pc.replace_substring_regex(normal, r"^(.{19}(\.[0-9]+)?)$", r"\1+00:00")  # no offset: UTC
    normal = pc.replace_substring_regex(normal, r"^(.{19}\.[0-9]{6})[0-9]+", r"\1")  # truncated, as Python's
    try:
        return normal.cast(pa.timestamp("us", "UTC"))
    except (pa.ArrowException, ValueError):
        return None
