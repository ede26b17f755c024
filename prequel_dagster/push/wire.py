"""Stitch Import API request bodies (Batch, Push) parsed and validated into Arrow, with Stitch's answers for bad ones."""

import functools
import hashlib
import itertools
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import referencing.exceptions
from jsonschema.exceptions import best_match
from referencing import Registry

from ..language.linear_regex import linear_validator_class, schema_patterns, unsupported
from . import native
from .columnar import PlainField, plain_columns, plain_fields, plain_messages
from .typed import envelope, field_modes, top_values, typed_columns

MAX_BODY_BYTES = 20 * 1024 * 1024
MAX_RECORDS = 20_000
MAX_SEQUENCE = 2**63 - 1
MAX_FIELDS = 10_000
MAX_CELLS = 20_000_000  # declared properties x messages of one Batch request (1,000 x 20,000)
MAX_SCHEMA_NODES = 20_000  # subschemas of one batch's schema (records hold at most 10,000 fields)
MAX_BATCH_KEY_CHARS = 255  # Batch: string key values must be < 256 characters
MAX_PUSH_KEY_CHARS = 1024  # Push: "String keys cannot be longer than 1024 characters"

SDC_SEQUENCE = "_sdc_sequence"
RESERVED_PREFIXES = ("_sdc", "_rjm")
JSON_MEDIA_TYPE = "application/json"
TRANSIT_MEDIA_TYPE = "application/transit+json"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_DRAFT4_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})
_BATCH_REQUIRED = ("table_name", "schema", "messages")
_BATCH_ALLOWED = frozenset({*_BATCH_REQUIRED, "key_names", "table_version", "bookmark_names"})
"""``table_version`` and ``bookmark_names`` are what Singer's target-stitch sends besides the documented keys."""
_MESSAGE_REQUIRED = ("action", "sequence", "data")
_MESSAGE_ALLOWED = frozenset({*_MESSAGE_REQUIRED, "time_extracted"})
_ACTIONS = ("upsert", "activate_version")
SDC_TABLE_VERSION = "_sdc_table_version"
_PUSH_REQUIRED = ("table_name", "sequence", "action", "key_names", "data")
_UNPROCESSABLE = "Request cannot be processed; see errors."
_ROW = "_sdc_wire_row"  # helper column of sequence_winners (data columns never start with _sdc)

# Arrow type of each column kind; "json" columns hold the value's JSON text (orjson, sorted keys).
_ARROW_TYPES: dict[str, pa.DataType] = {
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "datetime": pa.timestamp("us", "UTC"),
    "json": pa.string(),
}
# Push: the column suffix of a field's value type when the field has several (Stitch's ``cost__it``).
SPLIT_SUFFIXES = {"integer": "it", "number": "fl", "boolean": "bo", "string": "st", "json": "js"}
_SCHEMA_TYPES = {
    "integer": ["integer"],
    "number": ["number"],
    "boolean": ["boolean"],
    "string": ["string"],
    "json": ["object", "array"],
}
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?", re.ASCII
)


class WireError(Exception):
    """A request Stitch would refuse: ``status`` and the JSON ``body`` to answer with.

    ``body`` is always ``{"status": "ERROR", "message": ...}``, plus Stitch's own ``error`` /
    ``errors`` fields where its documentation shows them (Push's 401/403/422). ``plain`` marks the
    answers Stitch sends as a bare string (the Batch 415): ``message`` is that string.
    """

    def __init__(self, status: int, message: str, *, extra: Mapping[str, Any] | None = None, plain: bool = False):
        super().__init__(message)
        self.status = status
        self.message = message
        self.plain = plain
        self.body: dict[str, Any] = {"status": "ERROR", "message": message, **(extra or {})}

    def __repr__(self) -> str:
        return f"WireError({self.status}, {self.message!r})"


@dataclass
class Batch:
    """One table's accepted records.

    ``records`` holds the data columns (typed from ``schema``) then ``_sdc_sequence`` (int64), one row
    per message in request order. ``key_names`` is None when the request had none, ``[]`` for a table
    without a primary key (append-only).
    """

    table_name: str
    schema: dict
    key_names: list[str] | None
    records: pa.Table
    count: int
    table_version: int | None = None
    activated_versions: tuple[int, ...] = ()
    """The table version an ``activate_version`` message made current (Singer's full-table
    replacement: the batch's ``table_version``); the commit retires the records of older versions."""


@dataclass(frozen=True)
class _Column:
    name: str  # the Arrow column
    field: str  # the key in ``data``
    kind: str  # a key of _ARROW_TYPES
    nullable: bool


# --------------------------------------------------------------------------------------------- #
# Shared checks
# --------------------------------------------------------------------------------------------- #


def check_size(n_bytes: int) -> None:
    """Stitch's 413 for a body over 20 MB (an HTTP layer can call it with Content-Length first)."""
    if n_bytes > MAX_BODY_BYTES:
        raise WireError(413, f"Request rejected: request size ({n_bytes} bytes) exceeds the maximum")


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type header, without parameters (``; charset=utf-8``), lower case."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_reserved(name: str) -> bool:
    """Fields Stitch reserves (``_sdc*``, ``_rjm*``): dropped from pushed data, never columns."""
    return name.startswith(RESERVED_PREFIXES)


def _check_content_type(content_type: str | None, *, push: bool) -> None:
    kind = media_type(content_type)
    if kind == JSON_MEDIA_TYPE:
        return
    if push and kind == TRANSIT_MEDIA_TYPE:
        raise WireError(415, "Transit is not supported yet: Content-Type must be application/json")
    raise WireError(415, "Content-Type must be application/json", plain=not push)


def _load_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(400, f"Malformed json in the body! {exc}", extra={"error": str(exc)}) from None


def _type_name(value: Any) -> str:
    """The JSON type of a value as Stitch's validator (everit, Java) names it."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Double"
    if isinstance(value, str):
        return "String"
    return "JSONArray" if isinstance(value, list) else "JSONObject"


def _invalid(path: str, problem: str) -> WireError:
    return WireError(400, f"Request failed validation:{path}: {problem}")


def _expect(value: Any, expected: type, name: str, path: str) -> None:
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise _invalid(path, f"expected type: {name}, found: {_type_name(value)}")


def _json_text(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def parse_datetime(text: str) -> datetime | None:
    """An RFC 3339 timestamp (``T``/``t``/space separator, any fraction digits, ``Z`` or ``±hh:mm``)
    as an aware datetime, or None. Without an offset the value is taken as UTC; digits beyond
    microseconds are truncated."""
    found = _RFC3339.fullmatch(text)
    if found is None:
        return None
    fraction, offset = found.group(1) or "", found.group(2) or "+00:00"
    normal = f"{text[:10]}T{text[11:19]}{fraction[:7]}{'+00:00' if offset in ('Z', 'z') else offset}"
    try:
        return datetime.fromisoformat(normal)
    except ValueError:  # e.g. month 13, second 60
        return None


def _build_table(columns: list[_Column], arrays: list[pa.Array], sequences: list[int]) -> pa.Table:
    fields = [pa.field(c.name, _ARROW_TYPES[c.kind], nullable=c.nullable) for c in columns]
    fields.append(pa.field(SDC_SEQUENCE, pa.int64(), nullable=False))
    return pa.Table.from_arrays([*arrays, pa.array(sequences, pa.int64())], schema=pa.schema(fields))


def _plain_values(kind: str, values: list[Any]) -> pa.Array:
    """A column from Python values already of the column's kind (or None)."""
    if kind == "json":
        return pa.array([None if v is None else _json_text(v) for v in values], pa.string())
    if kind == "number":  # ints too (JSON Schema numbers include them), up to 2**64 from orjson
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    return pa.array(values, _ARROW_TYPES[kind])


# --------------------------------------------------------------------------------------------- #
# Batch: POST /v2/import/batch
# --------------------------------------------------------------------------------------------- #


def _schema_nodes(node: Any) -> Iterator[dict]:
    """Every subschema of a draft-4 JSON Schema (not ``enum``/``default`` values, which are data)."""
    if not isinstance(node, dict):
        return
    yield node
    for key in ("properties", "patternProperties", "definitions", "dependencies"):
        children = node.get(key)
        if isinstance(children, dict):
            for child in children.values():
                yield from _schema_nodes(child)
    for key in ("items", "allOf", "anyOf", "oneOf"):
        children = node.get(key)
        for child in children if isinstance(children, list) else [children]:
            yield from _schema_nodes(child)
    for key in ("additionalItems", "additionalProperties", "not"):
        yield from _schema_nodes(node.get(key))


def _stitch_extras(extras: list[str]) -> str:
    """jsonschema's own wording, which Stitch's answers carry."""
    shown = ", ".join(map(repr, extras))
    return f"Additional properties are not allowed ({shown} {'was' if len(extras) == 1 else 'were'} unexpected)"


@functools.cache
def _validator_class() -> Any:
    """``Draft4Validator`` (Stitch validates with python jsonschema 2.6.0: draft 4) whose regular
    expressions run in RE2's linear time: a tenant's schema cannot make a record take seconds."""
    return linear_validator_class(jsonschema.Draft4Validator, _stitch_extras)


def _validator_for(schema: dict) -> Any:
    """:func:`_checked_validator`, kept for the schemas seen last: a client sends the same schema
    with every batch of a table, and checking it costs about a millisecond."""
    try:
        text = orjson.dumps(schema)  # key order kept: it decides which of several errors is reported
    except TypeError:  # (orjson writes at most 254 levels)
        raise WireError(400, "Invalid JSON schema: nested too deeply") from None
    if len(text) <= 65_536:
        return _validator_by_text(text)
    if len(text) > 4 << 20:
        return _checked_validator(schema)
    # a wide schema (checking it costs seconds): a few kept, by digest
    digest = hashlib.sha256(text).digest()
    with _LARGE_LOCK:
        found = _LARGE_VALIDATORS.get(digest)
    if found is None:
        found = _checked_validator(schema)
        with _LARGE_LOCK:
            _LARGE_VALIDATORS[digest] = found
            while len(_LARGE_VALIDATORS) > 8:
                _LARGE_VALIDATORS.pop(next(iter(_LARGE_VALIDATORS)))
    return found


_LARGE_VALIDATORS: dict[bytes, Any] = {}
_LARGE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=256)
def _validator_by_text(text: bytes) -> Any:
    return _checked_validator(orjson.loads(text))


def _checked_validator(schema: dict) -> Any:
    """A validator for ``schema``, or Stitch's 400 ``Invalid JSON schema: ...``.

    Only local references (``#...``) resolve: nothing is ever fetched for a tenant's ``$ref``.
    """
    try:
        return _checked_validator_of(schema)
    except RecursionError:
        raise WireError(400, "Invalid JSON schema: nested too deeply") from None


def _checked_validator_of(schema: dict) -> Any:
    nodes = list(itertools.islice(_schema_nodes(schema), MAX_SCHEMA_NODES + 1))
    if len(nodes) > MAX_SCHEMA_NODES:
        raise WireError(400, f"Invalid JSON schema: more than {MAX_SCHEMA_NODES:,} subschemas")
    for node in nodes:
        declared = node.get("type")
        for name in [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []:
            if isinstance(name, str) and name not in _DRAFT4_TYPES:
                raise WireError(400, f"Invalid JSON schema: unknown type: [{name}]")
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            raise WireError(400, f"Invalid JSON schema: only local references (#...) are supported: [{ref}]")
    try:
        jsonschema.Draft4Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise WireError(400, f"Invalid JSON schema: {exc.message}") from None
    for patrn in schema_patterns(schema):
        why = unsupported(patrn)
        if why is not None:
            raise WireError(400, f"Invalid JSON schema: pattern {patrn!r} is not supported: {why}")
    return _validator_class()(schema, registry=Registry())


def _property_kind(prop: Any) -> tuple[str, bool]:
    """The column kind of a schema property and whether its values may be null.

    One non-null type maps to its kind (``string`` + ``format: date-time`` → datetime); ``integer``
    with ``number`` → number; anything else (no ``type``, several types, object, array) → JSON text.
    """
    declared = prop.get("type") if isinstance(prop, dict) else None
    if isinstance(declared, str):
        names = {declared}
    elif isinstance(declared, list):
        names = set(declared)
    else:
        return "json", True
    non_null, nullable = names - {"null"}, "null" in names
    if non_null == {"integer", "number"}:
        return "number", nullable
    if len(non_null) != 1:
        return "json", True
    (name,) = non_null
    if name == "string":
        return ("datetime" if prop.get("format") == "date-time" else "string"), nullable
    if name in ("integer", "number", "boolean"):
        return name, nullable
    return "json", nullable


def _check_batch_envelope(doc: Any) -> tuple[str, dict, list, list[str] | None, int | None]:
    """The request's shape, with the texts of Stitch's request validator (``Request failed validation:...``)."""
    _expect(doc, dict, "JSONObject", "#")
    for key in _BATCH_REQUIRED:
        if key not in doc:
            raise _invalid("#", f"required key [{key}] not found")
    for key in sorted(set(doc) - _BATCH_ALLOWED):
        raise _invalid("#", f"extraneous key [{key}] is not permitted")
    table_name, schema, messages = doc["table_name"], doc["schema"], doc["messages"]
    _expect(table_name, str, "String", "#/table_name")
    if not table_name:
        raise _invalid("#/table_name", "expected minLength: 1, actual: 0")
    _expect(schema, dict, "JSONObject", "#/schema")
    if "properties" not in schema:
        raise _invalid("#/schema", "required key [properties] not found")
    _expect(schema["properties"], dict, "JSONObject", "#/schema/properties")
    _expect(messages, list, "JSONArray", "#/messages")
    if not messages:
        raise _invalid("#/messages", "expected minimum item count: 1, found: 0")
    if len(messages) > MAX_RECORDS:
        raise _invalid("#/messages", f"expected maximum item count: {MAX_RECORDS}, found: {len(messages)}")
    _check_cells(len(schema["properties"]), len(messages))
    key_names = doc.get("key_names")
    if "key_names" in doc:
        _expect(key_names, list, "JSONArray", "#/key_names")
        for j, key in enumerate(key_names):
            _expect(key, str, "String", f"#/key_names/{j}")
        if len(set(key_names)) != len(key_names):
            raise _invalid("#/key_names", "array items are not unique")
    if "table_version" in doc:
        _expect(doc["table_version"], int, "Integer", "#/table_version")
        if not 0 <= doc["table_version"] <= MAX_SEQUENCE:
            raise _invalid("#/table_version", f"{doc['table_version']} is not a table version (0..{MAX_SEQUENCE})")
    if "bookmark_names" in doc:
        _expect(doc["bookmark_names"], list, "JSONArray", "#/bookmark_names")
    return table_name, schema, messages, key_names, doc.get("table_version")


def _check_cells(properties: int, messages: int) -> None:
    """A batch's table has a cell per declared property and message, present or not: bounded, so a
    wide schema over many tiny records cannot make one request take gigabytes (or minutes)."""
    if properties * messages > MAX_CELLS:
        raise _invalid(
            "#/messages",
            f"{messages} records of a schema declaring {properties} properties is over {MAX_CELLS:,} cells; "
            "send fewer records per batch",
        )


def _check_messages(messages: list) -> None:
    """Each message's shape, in order: the first bad one answers with Stitch's text."""
    for i, message in enumerate(messages):
        path = f"#/messages/{i}"
        _expect(message, dict, "JSONObject", path)
        action = message.get("action")
        for key in _MESSAGE_REQUIRED if action != "activate_version" else ("action", "sequence"):
            if key not in message:
                raise _invalid(path, f"required key [{key}] not found")
        for key in sorted(set(message) - _MESSAGE_ALLOWED):
            raise _invalid(path, f"extraneous key [{key}] is not permitted")
        if action not in _ACTIONS:
            raise _invalid(
                f"{path}/action",
                f"{action if isinstance(action, str) else _json_text(action)} is not a valid enum value",
            )
        if "time_extracted" in message:
            _expect(message["time_extracted"], str, "String", f"{path}/time_extracted")
        sequence = message["sequence"]
        _expect(sequence, int, "Integer", f"{path}/sequence")
        if sequence > MAX_SEQUENCE:
            raise _invalid("#", f"sequence can not be above {MAX_SEQUENCE}")
        if sequence < 0:
            raise _invalid(f"{path}/sequence", f"{sequence} is not greater or equal to 0")
        if action == "activate_version":
            continue
        data = message["data"]
        _expect(data, dict, "JSONObject", f"{path}/data")
        if len(data) > MAX_FIELDS:
            raise _invalid(f"{path}/data", f"maximum size: [{MAX_FIELDS}], found: [{len(data)}]")


def parse_batch(body: bytes, content_type: str | None, *, path: str = "typed") -> Batch:
    """A ``POST /v2/import/batch`` body as one validated :class:`Batch`, else :class:`WireError`.

    Checks in Stitch's order: size (413), Content-Type ``application/json`` with any parameters
    (415, the bare string ``Content-Type must be application/json``), JSON (400), the request's
    shape (400 ``Request failed validation:#...``: keys ``table_name``, ``schema``, ``messages``,
    optional ``key_names``; 1..20,000 messages of ``action: "upsert"``, ``sequence`` 0..2**63-1,
    ``data`` of at most 10,000 fields), the schema (400 ``Invalid JSON schema: ...``, draft 4), then
    each record in order; the first failing one answers 400 ``Record <i> did not conform to schema:
    #/<path>: <jsonschema's message>`` (``i`` 0-based, as Stitch's examples) or ``Record is missing
    key property <k>``. Every key name must be a top-level schema property.

    Columns: one per schema property, typed by :func:`_property_kind` (int64, float64, bool,
    timestamp[us, UTC] for ``format: date-time`` strings — a value that is not RFC 3339 fails its
    record —, string, JSON text for objects/arrays/untyped), absent values null, non-nullable only
    when the schema guarantees a value (required and not ``null``-typed) or it is a key; then fields
    the schema does not declare (allowed unless ``additionalProperties: false``) as JSON text
    columns, in first-seen order; then ``_sdc_sequence``. Reserved fields (``_sdc*``, ``_rjm*``) in
    data or schema are validated as sent, then dropped: Stitch does not replicate them.

    A batch whose schema types only its top-level fields is proven valid by msgspec's typed decoding
    (``push/typed.py``), else field by field over orjson's objects (``push/columnar.py``); anything
    neither proves goes record by record through ``jsonschema``. ``path`` starts further down that
    list (the tests compare the paths). All accept the same batches and build the same table.
    """
    check_size(len(body))
    _check_content_type(content_type, push=False)
    if path == "typed":
        found = _typed_batch(body)
        if isinstance(found, Batch):
            return found
    table_name, schema, messages, key_names, table_version = _check_batch_envelope(_load_json(body))
    plain = plain_messages(messages, MAX_SEQUENCE, MAX_FIELDS) if path != "records" else None
    if plain is None:
        _check_messages(messages)
    validator = _validator_for(schema)
    properties: dict[str, Any] = schema["properties"]
    columns, fields, required = _plan(schema, key_names)
    found_columns = None
    if plain is not None and plain_fields(schema, fields, properties, required):
        datas = plain[0]
        found_columns = plain_columns(
            datas,
            fields,
            required=required,
            key_names=key_names or [],
            closed=schema.get("additionalProperties") is False,
            max_key_chars=MAX_BATCH_KEY_CHARS,
            is_reserved=is_reserved,
        )
    if found_columns is not None:
        arrays, extras = found_columns
        columns.extend(_Column(name, name, "json", nullable=True) for name in extras)
        arrays.extend(_plain_values("json", [d.get(name) for d in datas]) for name in extras)
        sequences = plain[1] if plain is not None else []
    else:
        upserts = [(i, m) for i, m in enumerate(messages) if m["action"] == "upsert"]
        arrays = _records_one_by_one(validator, columns, [(i, m["data"]) for i, m in upserts], properties, key_names)
        sequences = [m["sequence"] for _, m in upserts]
    activated = table_version is not None and any(m["action"] == "activate_version" for m in messages)
    return _batch(table_name, schema, key_names, _build_table(columns, arrays, sequences), table_version, activated)


def _plan(schema: dict, key_names: list[str] | None) -> tuple[list[_Column], list[PlainField], set[str]]:
    """The table's columns from the schema (reserved properties are none), the same as
    :class:`PlainField` for the vectorised paths, and the required names; 400 for a bad key name."""
    properties: dict[str, Any] = schema["properties"]
    for key in key_names or []:
        if is_reserved(key):
            raise _invalid("#/key_names", f"key property [{key}] is reserved (_sdc/_rjm prefix)")
        if key not in properties:
            raise _invalid("#/key_names", f"key property [{key}] is not a top-level property of the schema")
    keys = set(key_names or [])
    required = set(schema.get("required") or [])
    columns: list[_Column] = []
    fields: list[PlainField] = []
    for name, prop in properties.items():
        if is_reserved(name):
            continue
        kind, may_be_null = _property_kind(prop)
        guaranteed = name in keys or (name in required and not may_be_null)
        columns.append(_Column(name, name, kind, nullable=not guaranteed))
        fields.append(PlainField(name, kind, may_be_null))
    return columns, fields, required


def check_batch(body: bytes, content_type: str | None) -> "BatchHead":
    """What :func:`parse_batch` answers for the body, without building its table when the typed path
    proves the batch valid (the request path: the table is built again by whoever reads the batch)."""
    check_size(len(body))
    _check_content_type(content_type, push=False)
    found = _typed_batch(body, only_check=True)
    if isinstance(found, BatchHead):
        return found
    batch = parse_batch(body, content_type, path="columnar")
    return BatchHead(batch.table_name, batch.key_names, batch.count)


@dataclass(frozen=True)
class BatchHead:
    """A valid Batch request's table, keys and number of records."""

    table_name: str
    key_names: list[str] | None
    count: int


def _typed_batch(body: bytes, *, only_check: bool = False) -> Batch | BatchHead | None:
    """The batch through ``push/typed.py`` when it proves it valid (``only_check``: its head), else None
    (the slower paths decide)."""
    if only_check:
        head = _native_check(body)
        if head is not None:
            return head
    top = envelope(body)
    if top is None or not _plain_head(top.table_name, top.table_version):
        return None
    plan = _plain_plan(top.schema, top.key_names)
    if plan is None:
        return None
    columns, fields, required = plan
    found = typed_columns(
        top.messages,
        fields,
        required=required,
        key_names=top.key_names or [],
        max_records=MAX_RECORDS,
        max_sequence=MAX_SEQUENCE,
        max_key_chars=MAX_BATCH_KEY_CHARS,
        only_check=only_check,
    )
    if found is None:
        return None
    arrays, count, sequences = found
    if len(top.schema["properties"]) * count > MAX_CELLS:
        return None  # (the slower paths refuse it with the message)
    if only_check:
        return BatchHead(top.table_name, top.key_names, count)
    records = _build_table(columns, arrays, sequences)
    return _batch(top.table_name, top.schema, top.key_names, records, top.table_version, activated=False)


def _native_check(body: bytes) -> BatchHead | None:
    """The request proven in one native pass (``push/native.py``) when the values the messages depend
    on (``schema``, ``key_names``) come before them, as clients write them; else None."""
    head = native.batch_head(body)
    early = top_values(head.values) if head is not None else None
    if head is None or early is None or "schema" not in early:
        return None
    schema, key_names = early["schema"], early.get("key_names")
    plan = _plain_plan(schema, key_names)
    if plan is None:
        return None
    _, fields, required = plan
    modes = field_modes(fields, required=required, key_names=key_names or [])
    proven = native.prove_batch_rest(body, head, modes, max_records=MAX_RECORDS, max_key_chars=MAX_BATCH_KEY_CHARS)
    if proven is None:
        return None
    count, later = proven
    if len(schema["properties"]) * count > MAX_CELLS:
        return None  # (the slower paths refuse it with the message)
    values = top_values(later)
    if values is None or "key_names" in later or "schema" in later:
        return None
    table_name = values.get("table_name", early.get("table_name"))
    if not isinstance(table_name, str) or not _plain_head(
        table_name, values.get("table_version", early.get("table_version"))
    ):
        return None
    return BatchHead(table_name, key_names, count)


def _plain_head(table_name: str, table_version: int | None) -> bool:
    """The envelope checks of :func:`_check_batch_envelope` beyond the types the fast paths read."""
    return bool(table_name) and (table_version is None or 0 <= table_version <= MAX_SEQUENCE)


def _plain_plan(schema: dict, key_names: list[str] | None) -> tuple[list[_Column], list[PlainField], set[str]] | None:
    """:func:`_plan` for the fast paths: None unless the schema is valid, the key names unique and
    every property a plain field (``columnar.plain_fields``); the slower paths answer otherwise."""
    if not isinstance(schema.get("properties"), dict):
        return None
    if key_names is not None and len(set(key_names)) != len(key_names):
        return None
    try:
        _validator_for(schema)  # a bad schema: the slower paths answer, in Stitch's order
        columns, fields, required = _plan(schema, key_names)
    except WireError:
        return None
    if len(fields) > MAX_FIELDS or not plain_fields(schema, fields, schema["properties"], required):
        return None
    return columns, fields, required


def _batch(
    table_name: str,
    schema: dict,
    key_names: list[str] | None,
    records: pa.Table,
    table_version: int | None,
    activated: bool,
) -> Batch:
    if table_version is not None:  # Stitch's _sdc_table_version: the version the rows belong to
        records = records.append_column(
            pa.field(SDC_TABLE_VERSION, pa.int64(), nullable=False),
            pa.repeat(pa.scalar(table_version, pa.int64()), records.num_rows),
        )
    return Batch(
        table_name,
        schema,
        None if key_names is None else list(key_names),
        records,
        records.num_rows,
        table_version=table_version,
        activated_versions=(table_version,) if table_version is not None and activated else (),
    )


def _records_one_by_one(
    validator: Any,
    columns: list[_Column],
    records: list[tuple[int, dict]],
    properties: dict[str, Any],
    key_names: list[str] | None,
) -> list[pa.Array]:
    """Each record through ``jsonschema`` in order (the first failing one answers 400); ``columns``
    gains the undeclared fields as JSON text columns. Returns one array per column."""
    integers = [c.field for c in columns if c.kind == "integer"]
    datetimes: dict[str, list[datetime | None]] = {c.field: [] for c in columns if c.kind == "datetime"}
    extras: dict[str, None] = {}
    for i, data in records:
        try:
            valid = validator.is_valid(data)
            if not valid:
                error = best_match(validator.iter_errors(data))
        except referencing.exceptions.Unresolvable as exc:
            raise WireError(400, f"Invalid JSON schema: unresolvable reference: {exc}") from None
        except RecursionError:
            raise WireError(400, "Invalid JSON schema: a reference loops without consuming the record") from None
        if not valid:
            where = "".join(f"/{p}" for p in error.absolute_path)
            raise WireError(400, f"Record {i} did not conform to schema: #{where}: {error.message}")
        for name in integers:
            value = data.get(name)
            if value is not None and not _INT64_MIN <= value <= _INT64_MAX:
                raise WireError(
                    400, f"Record {i} did not conform to schema: #/{name}: {value} does not fit in a 64-bit integer"
                )
        for name, parsed in datetimes.items():
            value = data.get(name)
            stamp = None if value is None else parse_datetime(value)
            if value is not None and stamp is None:
                raise WireError(
                    400, f"Record {i} did not conform to schema: #/{name}: {value[:80]!r} is not a 'date-time'"
                )
            parsed.append(stamp)
        for key in key_names or []:
            value = data.get(key)
            if value is None:
                raise WireError(400, f"Record is missing key property {key}")
            if isinstance(value, str) and len(value) > MAX_BATCH_KEY_CHARS:
                raise WireError(
                    400, f"Record {i} key property {key} must be shorter than {MAX_BATCH_KEY_CHARS + 1} characters"
                )
        for name in data:
            if name not in properties and name not in extras and not is_reserved(name):
                extras[name] = None
    columns.extend(_Column(name, name, "json", nullable=True) for name in extras)
    datas = [data for _, data in records]
    arrays = []
    for column in columns:
        if column.kind == "datetime":
            arrays.append(pa.array(datetimes[column.field], _ARROW_TYPES["datetime"]))
        else:
            arrays.append(_plain_values(column.kind, [d.get(column.field) for d in datas]))
    return arrays


# --------------------------------------------------------------------------------------------- #
# Push: POST /v2/import/push and /v2/import/validate (legacy)
# --------------------------------------------------------------------------------------------- #


def _unprocessable(i: int | None, argument: str, reason: str, message: str | None = None) -> WireError:
    """Stitch's 422: ``errors: [{"reason": {<argument>: [<reason>]}}]``."""
    text = message or (f"{argument} {reason}" if reason == "can't be blank" else reason)
    return WireError(
        422,
        text if i is None else f"Record {i}: {text}",
        extra={"error": _UNPROCESSABLE, "errors": [{"reason": {argument: [reason]}}]},
    )


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "json"


def _check_client(records: list, client_id: int) -> None:
    """One ``client_id`` for the whole body, the token's: 401 when missing, 422 when several, else 403."""
    seen: dict[int, None] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise WireError(400, "An array of records is expected")
        if record.get("client_id") is None:
            raise WireError(401, "Not Authenticated.", extra={"error": "Not Authenticated.", "errors": None})
        value = record["client_id"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise _unprocessable(i, "client_id", "should be an integer", "client_id should be an integer")
        seen[value] = None
    if len(seen) > 1:
        why = f"The batch contains data points for multiple clients. Only client_id {client_id} is allowed"
        raise WireError(422, why, extra={"error": _UNPROCESSABLE, "errors": [{"reason": why}]})
    if next(iter(seen)) != client_id:
        why = "Access token is not associated with this client."
        raise WireError(403, why, extra={"error": "Forbidden", "errors": {"error": why}})


def _check_push_record(i: int, record: dict) -> None:
    for argument in _PUSH_REQUIRED:
        if record.get(argument) is None or record.get(argument) == "":
            raise _unprocessable(i, argument, "can't be blank")
    if not isinstance(record["table_name"], str):
        raise _unprocessable(i, "table_name", "should be a string", "table_name should be a string")
    sequence = record["sequence"]
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise WireError(
            422,
            f"Record {i}: sequence should be an integer",
            extra={
                "error": _UNPROCESSABLE,
                "errors": [{"reason": {"sequence": ["should be an integer", "should be a number"]}}],
            },
        )
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise _unprocessable(
            i, "sequence", f"must be between 0 and {MAX_SEQUENCE}", f"sequence must be between 0 and {MAX_SEQUENCE}"
        )
    if record["action"] != "upsert":
        raise _unprocessable(i, "action", "must be upsert", "action must be upsert")
    key_names = record["key_names"]
    if (
        not isinstance(key_names, list)
        or not all(isinstance(k, str) for k in key_names)
        or len(set(key_names)) != len(key_names)
    ):
        raise _unprocessable(
            i, "key_names", "should be an array of distinct strings", "key_names should be an array of distinct strings"
        )
    for key in key_names:
        if is_reserved(key):
            raise _unprocessable(i, "key_names", f"{key} is reserved (_sdc/_rjm prefix)")
    data = record["data"]
    if not isinstance(data, dict):
        raise _unprocessable(i, "data", "data must be an object")
    if len(data) > MAX_FIELDS:
        raise _unprocessable(i, "data", f"data cannot have more than {MAX_FIELDS} fields")
    for key in key_names:
        if key not in data:
            raise _unprocessable(i, "data", "data must include keys")
        value = data[key]
        if value is None:
            raise _unprocessable(i, "data", "keys cannot not be null in data")
        if isinstance(value, str) and len(value) > MAX_PUSH_KEY_CHARS:
            raise _unprocessable(i, "data", f"String keys cannot be longer than {MAX_PUSH_KEY_CHARS} characters")
    for name, value in data.items():
        if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX:
            raise _unprocessable(i, "data", f"{name}: integers must fit in 64 bits")


def _push_batch(table_name: str, key_names: list[str], records: list[dict]) -> Batch:
    """One table's Push records, typed by their values (no schema: Stitch types Push data by value)."""
    datas: list[dict] = [r["data"] for r in records]
    kinds: dict[str, dict[str, None]] = {}  # field -> its value kinds, first-seen order
    for data in datas:
        for name, value in data.items():
            if value is not None and not is_reserved(name):
                kinds.setdefault(name, {})[_value_kind(value)] = None
    columns: list[_Column] = []
    owner: dict[str, str] = {}
    for name, seen in kinds.items():
        if name in key_names and len(seen) > 1:
            why = f"key {name} must have one type in table {table_name}, found {', '.join(seen)}"
            raise _unprocessable(None, "data", why)
        for n, kind in enumerate(seen):
            target = name if n == 0 else f"{name}__{SPLIT_SUFFIXES[kind]}"
            if target in owner:
                why = f"field {name} ({kind}) and field {owner[target]} would both be column {target}"
                raise _unprocessable(None, "data", why)
            owner[target] = name
            columns.append(_Column(target, name, kind, nullable=name not in key_names))
    arrays = []
    for column in columns:
        values = [d.get(column.field) for d in datas]
        if column.name != column.field or len(kinds[column.field]) > 1:
            values = [v if v is not None and _value_kind(v) == column.kind else None for v in values]
        arrays.append(_plain_values(column.kind, values))
    properties: dict[str, Any] = {}
    for c in columns:
        types = _SCHEMA_TYPES[c.kind]
        properties[c.name] = {"type": ["null", *types] if c.nullable else types[0] if len(types) == 1 else types}
    schema = {"type": "object", "properties": properties}
    records_table = _build_table(columns, arrays, [r["sequence"] for r in records])
    return Batch(table_name, schema, list(key_names), records_table, len(records))


def parse_push(body: bytes, content_type: str | None, client_id: int) -> list[Batch]:
    """A ``/v2/import/push`` or ``/v2/import/validate`` body as one :class:`Batch` per table (in
    first-seen order), else :class:`WireError`.

    Checks: size (413), Content-Type (415 unless JSON or Transit ``application/transit+json``, which
    ``push/transit.py`` decodes to the same values), JSON or Transit (400), an array root of 1..20,000 objects (400 ``An array of records is expected``),
    one ``client_id`` (missing: Stitch's 401 ``Not Authenticated.``; several: 422; not the token's:
    403 ``Access token is not associated with this client.``), then each record: ``table_name``,
    ``sequence`` (0..2**63-1), ``action: "upsert"``, ``key_names`` (required; ``[]`` = append-only,
    the same for every record of a table), ``data`` (an object of at most 10,000 fields holding
    every key, non-null, string keys at most 1,024 characters) — 422 with Stitch's reasons.

    Types come from the JSON values (Stitch enforces none on Push): int → int64, float → float64,
    bool, str → string, object/array → JSON text. A field's first type in the request names its
    column; values of other types go to ``<field>__<suffix>`` columns (``it``, ``fl``, ``bo``, ``st``,
    ``js``), as Stitch splits ``cost`` / ``cost__it``. Fields null in every record have no column;
    reserved fields (``_sdc*``, ``_rjm*``) are dropped. ``Batch.schema`` describes the columns.
    """
    check_size(len(body))
    if media_type(content_type) == TRANSIT_MEDIA_TYPE:
        from .transit import decode_transit

        doc = decode_transit(body)
    else:
        _check_content_type(content_type, push=True)
        doc = _load_json(body)
    if not isinstance(doc, list) or not doc:
        raise WireError(400, "An array of records is expected")
    if len(doc) > MAX_RECORDS:
        raise WireError(400, f"Request rejected: {len(doc)} records exceed the maximum of {MAX_RECORDS} per request")
    _check_client(doc, client_id)
    tables: dict[str, list[dict]] = {}
    keys: dict[str, list[str]] = {}
    for i, record in enumerate(doc):
        _check_push_record(i, record)
        table_name = record["table_name"]
        if keys.setdefault(table_name, record["key_names"]) != record["key_names"]:
            raise _unprocessable(i, "key_names", f"must be the same for every record of table {table_name}")
        tables.setdefault(table_name, []).append(record)
    return [_push_batch(name, keys[name], records) for name, records in tables.items()]


# --------------------------------------------------------------------------------------------- #
# Sequencing
# --------------------------------------------------------------------------------------------- #


def sequence_winners(table: pa.Table, key_names: list[str]) -> pa.Table:
    """The row Stitch loads for each key of one request: the highest ``_sdc_sequence``; on equal
    sequences the later row in the request wins (Stitch documents no tie rule; "last write wins"
    matches an upsert replayed in order). Winners keep request order. Without keys (append-only)
    the table is returned unchanged."""
    if not key_names or table.num_rows == 0:
        return table
    helper = table.select([*key_names, SDC_SEQUENCE]).append_column(
        _ROW, pa.array(np.arange(table.num_rows, dtype=np.int64))
    )
    ordered = helper.sort_by([(SDC_SEQUENCE, "ascending"), (_ROW, "ascending")])
    last = ordered.group_by(key_names, use_threads=False).aggregate([(_ROW, "last")])
    rows = last.column(f"{_ROW}_last")
    return table.take(rows.take(pc.sort_indices(rows)))
