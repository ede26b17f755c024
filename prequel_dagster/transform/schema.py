"""``record_schema`` checks, vectorised: JSON types, required fields, and conversion to JSON-ready Arrow types.

Mapped columns are converted to the JSON representation the schema asks for (timestamps to
RFC 3339 strings, decimals to numbers or strings); a value that cannot be represented, or a
required field that is null, makes that record invalid with a message that says why. Optional
fields without a value are left out of the delivered record (see ``delivery.wire``).
"""

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .expressions import to_string

_JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")


@dataclass
class Validated:
    """Records split by validity; ``invalid`` carries a ``_prequel_violation`` column."""

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
        if pa.types.is_decimal(t):
            return pc.cast(col, pa.float64()), None
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            return to_string(col), None
        return col, None
    if "string" in types:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return col, None
        if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_decimal(t):
            return to_string(col), None
    if "integer" in types:
        if pa.types.is_integer(t):
            return col, None
        if pa.types.is_decimal(t) and t.scale == 0:
            return pc.cast(col, pa.int64()), None
    if "number" in types:
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return col, None
        if pa.types.is_decimal(t):
            return pc.cast(col, pa.float64()), None
    if "boolean" in types and pa.types.is_boolean(t):
        return col, None
    if "array" in types and (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return col, None
    if "object" in types and pa.types.is_struct(t):
        return col, None
    if ("object" in types or "array" in types) and (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return col, None  # JSON text columns (jsonb, json) are parsed at serialisation
    return col, f"'{field}' should be {' or '.join(sorted(types))} but the mapping produces {t}"


def validate_records(table: pa.Table, record_schema: dict[str, Any]) -> Validated:
    """Check every record against ``record_schema``; return the valid ones in JSON-ready types."""
    n = table.num_rows
    props: dict[str, Any] = record_schema.get("properties", {})
    required = set(record_schema.get("required", []))
    messages: list[pa.Array] = []
    columns, names = [], []
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        types, nullable = _allowed_types(props.get(name, {}))
        converted, problem = _convert(col, types, name)
        if problem:
            messages.append(pa.array([problem] * n, pa.string()))
        if name in required and not nullable:
            null_msg = f"required field '{name}' is null"
            messages.append(pc.if_else(pc.is_null(converted), null_msg, pa.scalar(None, pa.string())))
        enum = props.get(name, {}).get("enum")
        if enum is not None and not problem:
            ok = pc.fill_null(pc.is_in(converted, value_set=pa.array(enum).cast(converted.type, safe=False)), True)
            messages.append(pc.if_else(ok, pa.scalar(None, pa.string()), f"'{name}' is not one of {enum}"))
        columns.append(converted)
        names.append(name)
    for name in required - set(table.column_names):
        messages.append(pa.array([f"required field '{name}' is not mapped"] * n, pa.string()))

    violations = pa.nulls(n, pa.string())
    for message in messages:  # join the non-null messages of each row with "; "
        joined = pc.binary_join_element_wise(violations, message, "; ")
        violations = pc.coalesce(joined, violations, message)
    valid_mask = pc.is_null(violations)
    converted_table = pa.Table.from_arrays(columns, names=names) if columns else table
    return Validated(valid=converted_table.filter(valid_mask), valid_mask=valid_mask, violations=violations)


def converted_table(table: pa.Table, record_schema: dict[str, Any]) -> pa.Table:
    """All records (valid or not) in JSON-ready types, for dead letters and test-transform."""
    props = record_schema.get("properties", {})
    cols = []
    for name in table.column_names:
        converted, problem = _convert(table.column(name).combine_chunks(), _allowed_types(props.get(name, {}))[0], name)
        cols.append(table.column(name).combine_chunks() if problem else converted)
    return pa.Table.from_arrays(cols, names=table.column_names)
