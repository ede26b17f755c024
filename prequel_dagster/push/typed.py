"""The fastest path of ``parse_batch``: a plain batch decoded by msgspec straight into typed values.

No dict per record: the envelope is decoded first with ``messages`` kept raw, then the messages by
a decoder built from the batch's own schema (cached by the schema's text: a client sends the same
schema with every batch of a table), whose types are exactly JSON Schema's for the plain kinds
(``int`` takes no float or bool, ``str`` no number, ``float`` ints and floats, ``bool`` only
``true``/``false``). Like ``columnar.py`` it only ever proves: a message msgspec refuses (another
action, an undeclared or reserved field, a null the schema forbids, a value of another type, a
sequence out of range) or a value Arrow cannot hold returns None, and the slower paths decide with
Stitch's exact message. Every part of the body that msgspec does not type is re-read by orjson, the
parser of those paths, so this path never accepts a document they would call malformed.
"""

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
import orjson
import pyarrow as pa

from . import native
from .columnar import PLAIN_ARROW_TYPES, PlainField, timestamps

_UNSET = msgspec.UNSET
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_SMALLEST_MESSAGE = len(b'{"action":"upsert","sequence":0,"data":{}}')
_MAX_SLOTS = 4_000_000
"""Decoded field slots one request may hold (32 MB): a struct has one per declared field, present
or not, so 10,000 declared fields x 20,000 tiny records would take gigabytes."""
_UNNAMEABLE = re.compile(r'[\\"\x00-\x1f]')  # msgspec cannot rename a field to these: the slower paths take them
_PYTHON_TYPES: dict[str, Any] = {"integer": int, "number": float, "boolean": bool, "string": str, "datetime": str}


class _Envelope(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    table_name: str
    schema: msgspec.Raw
    messages: msgspec.Raw
    key_names: list[str] | msgspec.UnsetType = _UNSET
    table_version: int | msgspec.UnsetType = _UNSET
    bookmark_names: msgspec.Raw | msgspec.UnsetType = _UNSET


_ENVELOPE = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True)
class Envelope:
    """A Batch request's top level: what the messages' decoder and the checks need."""

    table_name: str
    schema: dict
    messages: msgspec.Raw  # a view of the body, not a copy
    key_names: list[str] | None
    table_version: int | None


def envelope(body: bytes) -> Envelope | None:
    """The request's top level with its messages still raw, or None when it is not plainly well formed."""
    try:
        doc = _ENVELOPE.decode(body)
        schema = orjson.loads(bytes(doc.schema))
        if doc.bookmark_names is not _UNSET and not isinstance(orjson.loads(bytes(doc.bookmark_names)), list):
            return None
    except (msgspec.DecodeError, orjson.JSONDecodeError, RecursionError):  # (msgspec's depth is not orjson's)
        return None
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return None
    return Envelope(
        doc.table_name,
        schema,
        doc.messages,
        None if doc.key_names is _UNSET else doc.key_names,
        None if doc.table_version is _UNSET else doc.table_version,
    )


def typed_columns(
    messages: msgspec.Raw | bytes,
    fields: Sequence[PlainField],
    *,
    required: set[str],
    key_names: Sequence[str],
    max_records: int,
    max_sequence: int,
    max_key_chars: int,
    only_check: bool = False,
) -> tuple[list[pa.Array], int, list[int]] | None:
    """``(columns, records, sequences)``: the declared fields' columns, how many messages, and their
    sequences; None when the messages are not provably valid. ``only_check`` builds no more than the
    proof needs (the date-time columns, to check their values): columns and sequences are then empty.

    The caller has checked ``columnar.plain_fields``: every property is a plain, non-reserved field.
    """
    modes = field_modes(fields, required=required, key_names=key_names)
    if only_check and max_sequence == _INT64_MAX:  # (the native proof knows sequences as int64)
        count = native.prove_messages(bytes(messages), modes, max_records=max_records, max_key_chars=max_key_chars)
        if count is not None:
            return [], count, []
    if any(_UNNAMEABLE.search(field.name) for field in fields):
        return None
    if len(fields) * (len(messages) // _SMALLEST_MESSAGE + 1) > _MAX_SLOTS:
        return None  # a struct holds a slot per declared field: wide schemas x many records go by dicts
    try:
        decoded = _decoder(modes, max_sequence, max_key_chars).decode(messages)
    except (msgspec.DecodeError, RecursionError):  # (msgspec.ValidationError is one)
        return None
    if not 1 <= len(decoded) <= max_records:
        return None
    datas = list(map(attrgetter("data"), decoded))
    arrays: list[pa.Array] = []
    for n, (_, kind, mode) in enumerate(modes):
        if only_check and kind != "datetime":
            continue
        array = _array(list(map(attrgetter(f"f{n}"), datas)), kind, absent=mode == "absent_or_value")
        if array is None:
            return None
        if kind == "datetime":
            stamps = timestamps(array)
            if stamps is None:
                return None
            array = stamps
        arrays.append(array)
    if only_check:
        return [], len(decoded), []
    return arrays, len(decoded), list(map(attrgetter("sequence"), decoded))


def field_modes(
    fields: Sequence[PlainField], *, required: set[str], key_names: Sequence[str]
) -> tuple[tuple[str, str, str], ...]:
    """Each field's name, kind and what a record may hold for it (:func:`_mode`)."""
    keys = set(key_names)
    return tuple(
        (field.name, field.kind, _mode(field, required=field.name in required, key=field.name in keys))
        for field in fields
    )


def top_values(parts: Mapping[str, bytes]) -> dict[str, Any] | None:
    """A Batch request's top-level values other than ``messages`` from their JSON text (as the native
    proof delimits them), read by orjson and typed as :class:`_Envelope` types them; None otherwise."""
    try:
        values = {key: orjson.loads(text) for key, text in parts.items() if key != "messages"}
    except orjson.JSONDecodeError:
        return None
    for key, value in values.items():
        if not isinstance(value, _TOP_TYPES[key]) or isinstance(value, bool):
            return None
    names = values.get("key_names")
    if names is not None and not all(isinstance(name, str) for name in names):
        return None
    return values


_TOP_TYPES: dict[str, type | tuple[type, ...]] = {
    "table_name": str,
    "schema": dict,
    "key_names": list,
    "table_version": int,
    "bookmark_names": list,
}


def _array(values: list[Any], kind: str, *, absent: bool) -> pa.Array | None:
    """The values as an Arrow array; ``absent`` fields may hold UNSET (absent: null). None when Arrow
    cannot hold one (an integer beyond 64 bits)."""
    try:
        return pa.array(values, PLAIN_ARROW_TYPES[kind])
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        if not absent:
            return None
    # (a rare case tried second: ``UNSET in values`` compares every value, which costs more than the array)
    try:
        return pa.array([None if value is _UNSET else value for value in values], PLAIN_ARROW_TYPES[kind])
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return None


def _mode(field: PlainField, *, required: bool, key: bool) -> str:
    """What a record may hold for the field: ``key`` or ``value`` (present, not null: a key, or a
    required field whose type has no null), ``null_or_value`` (present: required, null among its types),
    ``absent_or_value`` (null is another type's value) or ``any`` (null, absent or a value)."""
    if key:
        return "key"  # present, not null (the slower paths refuse a null key with their message)
    if required and not field.type_admits_null:
        return "value"
    if required:
        return "null_or_value"
    return "any" if field.type_admits_null else "absent_or_value"


@functools.lru_cache(maxsize=256)
def _decoder(modes: tuple[tuple[str, str, str], ...], max_sequence: int, max_key_chars: int) -> msgspec.json.Decoder:
    """A decoder of the messages array for these fields, checking what Arrow and Stitch require of the
    values too (integers within 64 bits, string keys of at most ``max_key_chars``). Field names are
    the tenant's: the struct's attributes are ``f<n>`` and ``rename`` maps them to the names on the wire."""
    data_fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
    for n, (_, kind, mode) in enumerate(modes):
        python = _PYTHON_TYPES[kind]
        if kind == "integer":
            python = Annotated[int, msgspec.Meta(ge=_INT64_MIN, le=_INT64_MAX)]
        elif kind == "string" and mode == "key":
            python = Annotated[str, msgspec.Meta(max_length=max_key_chars)]
        if mode in ("key", "value"):
            data_fields.append((f"f{n}", python))
        elif mode == "null_or_value":
            data_fields.append((f"f{n}", python | None))
        elif mode == "any":
            data_fields.append((f"f{n}", python | None, None))
        else:
            data_fields.append((f"f{n}", python | msgspec.UnsetType, _UNSET))
    data = msgspec.defstruct(
        "Data",
        data_fields,
        kw_only=True,
        forbid_unknown_fields=True,
        gc=False,
        rename={f"f{n}": name for n, (name, _, _) in enumerate(modes)},
    )
    message = msgspec.defstruct(
        "Message",
        [
            ("action", Literal["upsert"]),
            ("sequence", Annotated[int, msgspec.Meta(ge=0, le=max_sequence)]),
            ("data", data),
            ("time_extracted", str | msgspec.UnsetType, _UNSET),
        ],
        kw_only=True,
        forbid_unknown_fields=True,
        gc=False,
    )
    return msgspec.json.Decoder(list[message])  # type: ignore[valid-type]
