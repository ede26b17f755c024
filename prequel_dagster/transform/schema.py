"""``record_schema`` checks, vectorised: JSON types, required fields, and conversion to JSON-ready Arrow types.

Mapped columns are converted to the JSON representation the schema asks for (timestamps to
RFC 3339 strings, decimals to exact numbers or strings); a value that cannot be represented, or a
required field that is null, makes that record invalid with a message that says why. Optional
fields without a value are left out of the delivered record (see ``delivery.wire``).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..language.expressions import to_string
from ..language.linear_regex import linear_validator_class
from .json_text import invalid_json

_JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")


@dataclass
class Validated:
    """The valid records (JSON-ready types), the validity mask, and each row's violations (null if valid)."""

    valid: pa.Table
    valid_mask: pa.Array
    violations: pa.Array  # one string (or null) per input row


def _allowed_types(prop: dict[str, Any]) -> tuple[set[str], bool]:
    declared = prop.get("type")
    if declared is None:
        return set(), True
    types = {declared} if isinstance(declared, str) else set(declared)
    return types - {"null"}, "null" in types


def _convert(col: pa.Array, types: set[str], field: str) -> tuple[pa.Array, str | None]:
    """Convert a column to the JSON type the schema wants, or say why it can't be."""
    t = col.type
    if pa.types.is_null(t):
        return col, None
    if not types:
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return to_string(col), None
        return col, None
    if "string" in types:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return col, None
        if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_decimal(t):
            return to_string(col), None
        if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            return col, None  # written as base64 text
    if "integer" in types:
        if pa.types.is_integer(t):
            return col, None
        if pa.types.is_decimal(t) and t.scale == 0:
            return pc.cast(col, pa.int64()), None
    if "number" in types:
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return col, None  # decimals stay exact: their text is a JSON number
    if "boolean" in types and pa.types.is_boolean(t):
        return col, None
    if "array" in types and (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return col, None
    if "object" in types and pa.types.is_struct(t):
        return col, None
    if ("object" in types or "array" in types) and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return col, None  # JSON text columns (jsonb, json) are parsed at serialisation
    return col, f"'{field}' should be {' or '.join(sorted(types))} but the mapping produces {t}"


VECTORISED_KEYWORDS = {
    "type",
    "enum",
    "const",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "description",
    "title",
    "default",
    "examples",
    "$comment",
}
TOP_LEVEL_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "$schema",
    "$id",
    "title",
    "description",
    "$comment",
    "definitions",
}
FORMATS = {
    "date-time": r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "time": r"^\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$",
    "email": r"^[^@\s]+@[^@\s]+$",
    "uuid": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
}
_NULL = pa.scalar(None, pa.string())


def raw_json_kind(prop: dict[str, Any], column_type: pa.DataType) -> str | None:
    """``object`` or ``array`` when the field's text is JSON to be written into bodies as it is."""
    declared = prop.get("type")
    if declared in ("object", "array") and (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        return declared
    return None


def needs_json_schema_library(record_schema: dict[str, Any]) -> bool:
    """Whether the schema uses keywords beyond the vectorised ones (checked per record with ``jsonschema``)."""
    if set(record_schema) - TOP_LEVEL_KEYWORDS:
        return True
    return any(set(p) - VECTORISED_KEYWORDS for p in record_schema.get("properties", {}).values())


Check = tuple[pa.Array, str]
"""A per-row "bad" mask and the message for the rows it flags."""


def _keyword_checks(name: str, col: pa.Array, prop: dict[str, Any], *, formatted_by_us: bool) -> list[Check]:
    """Violations of the value keywords, as (bad-row mask, message)."""
    out: list[Check] = []
    t = col.type
    is_text = pa.types.is_string(t) or pa.types.is_large_string(t)
    is_number = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if "const" in prop:
        out.append(
            (pc.not_equal(col, pa.scalar(prop["const"]).cast(t, safe=False)), f"'{name}' must be {prop['const']!r}")
        )
    if is_text:
        fmt = prop.get("format")
        if fmt in FORMATS and not formatted_by_us:  # timestamps we formatted are RFC 3339 by construction
            out.append((pc.invert(pc.match_substring_regex(col, FORMATS[fmt])), f"'{name}' is not a valid {fmt}"))
        if "pattern" in prop:
            out.append(
                (
                    pc.invert(pc.match_substring_regex(col, prop["pattern"])),
                    f"'{name}' does not match {prop['pattern']!r}",
                )
            )
        if "minLength" in prop or "maxLength" in prop:
            length = pc.utf8_length(col)
            if "minLength" in prop:
                out.append((pc.less(length, prop["minLength"]), f"'{name}' is shorter than {prop['minLength']}"))
            if "maxLength" in prop:
                out.append((pc.greater(length, prop["maxLength"]), f"'{name}' is longer than {prop['maxLength']}"))
    if is_number:
        for keyword, fn, words in (
            ("minimum", pc.less, "less than"),
            ("maximum", pc.greater, "greater than"),
            ("exclusiveMinimum", pc.less_equal, "at most"),
            ("exclusiveMaximum", pc.greater_equal, "at least"),
        ):
            if keyword in prop and not isinstance(prop[keyword], bool):
                out.append((fn(col, prop[keyword]), f"'{name}' is {words} {prop[keyword]}"))
    return out


def validate_records(table: pa.Table, record_schema: dict[str, Any], extra_checks: Sequence[Check] = ()) -> Validated:
    """Check every record against ``record_schema`` (and ``extra_checks``); return the valid ones in
    JSON-ready types.

    The checks produce boolean masks; message strings are built only when some record is invalid.
    """
    n = table.num_rows
    props: dict[str, Any] = record_schema.get("properties", {})
    required = set(record_schema.get("required", []))
    checks: list[Check] = list(extra_checks)
    columns, names = [], []
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        prop = props.get(name, {})
        types, nullable = _allowed_types(prop)
        converted, problem = _convert(col, types, name)
        if problem:
            checks.append((pa.repeat(True, n), problem))
        if name in required and not nullable:
            checks.append((pc.is_null(converted), f"required field '{name}' is null"))
        enum = prop.get("enum")
        if enum is not None and not problem:
            ok = pc.is_in(converted, value_set=pa.array(enum).cast(converted.type, safe=False))
            checks.append((pc.invert(ok), f"'{name}' is not one of {enum}"))
        if not problem:
            formatted = pa.types.is_timestamp(col.type) or pa.types.is_date(col.type)
            checks.extend(_keyword_checks(name, converted, prop, formatted_by_us=formatted))
            kind = raw_json_kind(prop, converted.type)
            if kind is not None:
                checks.append((invalid_json(converted, kind), f"'{name}' is not a valid JSON {kind}"))
        columns.append(converted)
        names.append(name)
    for name in required - set(table.column_names):
        checks.append((pa.repeat(True, n), f"required field '{name}' is not mapped"))
    converted_all = pa.Table.from_arrays(columns, names=names) if columns else table

    bad = None
    for mask, _ in checks:
        mask = pc.fill_null(mask, False)
        bad = mask if bad is None else pc.or_(bad, mask)
    library = (
        _library_messages(converted_all, record_schema) if n and needs_json_schema_library(record_schema) else None
    )
    if library is not None:
        bad = pc.is_valid(library) if bad is None else pc.or_(bad, pc.is_valid(library))
    if bad is None or not pc.any(bad).as_py():
        return Validated(valid=converted_all, valid_mask=pa.repeat(True, n), violations=pa.nulls(n, pa.string()))

    messages = [pc.if_else(pc.fill_null(mask, False), text, _NULL) for mask, text in checks]
    if library is not None:
        messages.append(library)
    violations = pa.nulls(n, pa.string())
    for message in messages:  # join the non-null messages of each row with "; "
        joined = pc.binary_join_element_wise(violations, message, "; ")
        violations = pc.coalesce(joined, violations, message)
    valid_mask = pc.is_null(violations)
    return Validated(valid=converted_all.filter(valid_mask), valid_mask=valid_mask, violations=violations)


def _library_messages(table: pa.Table, record_schema: dict[str, Any]) -> pa.Array:
    """Keywords the vectorised checks do not cover, per record with the ``jsonschema`` library."""
    import jsonschema
    import orjson

    from .encoding import encode_records

    validator = linear_validator_class()(record_schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    out = []
    for text in encode_records(table, required=set(record_schema.get("required", []))).to_pylist():
        errors = sorted(
            (
                e
                for e in validator.iter_errors(orjson.loads(text[:-1]))
                if len(e.path) != 1 or e.validator not in VECTORISED_KEYWORDS
            ),  # those are reported above
            key=lambda e: list(map(str, e.path)),
        )
        out.append("; ".join(f"{'/'.join(map(str, e.path)) or 'record'}: {e.message}" for e in errors) or None)
    return pa.array(out, pa.string())


def converted_table(table: pa.Table, record_schema: dict[str, Any]) -> pa.Table:
    """All records (valid or not) in JSON-ready types, for dead letters and test-transform."""
    props = record_schema.get("properties", {})
    cols = []
    for name in table.column_names:
        converted, problem = _convert(table.column(name).combine_chunks(), _allowed_types(props.get(name, {}))[0], name)
        cols.append(table.column(name).combine_chunks() if problem else converted)
    return pa.Table.from_arrays(cols, names=table.column_names)
