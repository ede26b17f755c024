"""A resource body's secrets (its model's ``Secret`` fields): found, sealed at rest, stripped from responses."""

import collections.abc
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Union

from pydantic import BaseModel

from ..config.errors import format_path
from ..config.secrets import MASK, Secret

SEALED_KEY = "$sealed"

KeyPath = tuple[str | int, ...]
"""Keys and list indexes from a body's top to a value: ``("signing", "private_key")``."""


class Sealer(Protocol):
    """What sealing needs of a :class:`~prequel_dagster.catalog.crypto.SecretBox`."""

    def encrypt(self, text: str) -> str: ...

    def decrypt(self, token: str) -> str: ...

    def rotate(self, token: str) -> str: ...


# ---------------------------------------------------------------------------- the shapes of fields


@dataclass(frozen=True)
class _Secret:
    pass


@dataclass(frozen=True)
class _Model:
    cls: type[BaseModel]


@dataclass(frozen=True)
class _Seq:
    item: "_Shape"


@dataclass(frozen=True)
class _Map:
    value: "_Shape"


@dataclass(frozen=True)
class _Union:
    options: tuple["_Shape", ...]


_Shape = _Secret | _Model | _Seq | _Map | _Union
_SECRET = _Secret()


def _shape(annotation: Any) -> _Shape | None:
    """What of a value with this annotation can be secret; None if nothing can."""
    if annotation is Secret:
        return _SECRET
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Model(annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _shape(args[0])
    if origin in (Union, types.UnionType):
        options = tuple(s for s in (_shape(a) for a in args) if s is not None)
        if not options:
            return None
        return options[0] if len(options) == 1 else _Union(options)
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence):
        item = _shape(args[0]) if args else None
        return _Seq(item) if item is not None else None
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        value = _shape(args[1]) if len(args) == 2 else None
        return _Map(value) if value is not None else None
    return None


@functools.cache
def _fields(cls: type[BaseModel]) -> dict[str, _Shape]:
    """The fields of ``cls`` that can hold a secret, by the key a body spells them with (the alias)."""
    out: dict[str, _Shape] = {}
    for key, annotation in _field_keys(cls):
        shape = _shape(annotation)
        if shape is not None:
            out[key] = shape
    return out


@functools.cache
def _keys(cls: type[BaseModel]) -> frozenset[str]:
    """Every key a body of ``cls`` may have."""
    return frozenset(key for key, _ in _field_keys(cls))


def _field_keys(cls: type[BaseModel]) -> list[tuple[str, Any]]:
    """``(key, annotation)`` per field: by its alias, and by its name too if the model accepts names."""
    by_name = bool(cls.model_config.get("populate_by_name") or cls.model_config.get("validate_by_name"))
    out = []
    for name, info in cls.model_fields.items():
        alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
        out.append((alias or name, info.annotation))
        if alias and by_name:
            out.append((name, info.annotation))
    return out


# ---------------------------------------------------------------------------- finding secrets


def _walk(shape: _Shape, value: Any, path: KeyPath, in_place: bool, out: list[tuple[KeyPath, bool]]) -> None:
    """Append ``(path, in_place)`` for every secret in ``value``; ``in_place`` when the secret is an
    item of a map or list (masked where it is rather than removed)."""
    if value is None:
        return
    if isinstance(shape, _Secret):
        out.append((path, in_place))
    elif isinstance(shape, _Model):
        if isinstance(value, Mapping):
            fields = _fields(shape.cls)
            if fields:
                for key, item in value.items():
                    sub = fields.get(key)
                    if sub is not None:
                        _walk(sub, item, (*path, key), False, out)
    elif isinstance(shape, _Map):
        if isinstance(value, Mapping):
            for key, item in value.items():
                _walk(shape.value, item, (*path, key), True, out)
    elif isinstance(shape, _Seq):
        if isinstance(value, list | tuple):
            for index, item in enumerate(value):
                _walk(shape.item, item, (*path, index), True, out)
    else:
        _walk_union(shape, value, path, in_place, out)


def _walk_union(shape: _Union, value: Any, path: KeyPath, in_place: bool, out: list[tuple[KeyPath, bool]]) -> None:
    """A value of a union: walked as each option it can be (a body of the model whose fields hold all its
    keys; any model if none does), the secrets of all of them reported once."""
    if isinstance(value, Mapping) and not is_sealed(value):
        models = [o for o in shape.options if isinstance(o, _Model)]
        fitting = [o for o in models if _keys(o.cls).issuperset(value.keys())]
        options: list[_Shape] = [*(fitting or models), *(o for o in shape.options if isinstance(o, _Map))]
    elif isinstance(value, list | tuple):
        options = [o for o in shape.options if isinstance(o, _Seq)]
    else:
        options = [o for o in shape.options if isinstance(o, _Secret | _Union)]
    found: list[tuple[KeyPath, bool]] = []
    for option in options:
        _walk(option, value, path, in_place, found)
    seen = set()
    for item in found:
        if item[0] not in seen:
            seen.add(item[0])
            out.append(item)


def _find(model: type[BaseModel], data: Mapping[str, Any]) -> list[tuple[KeyPath, bool]]:
    out: list[tuple[KeyPath, bool]] = []
    _walk(_Model(model), data, (), False, out)
    return out


def secret_paths(model: type[BaseModel], data: Mapping[str, Any]) -> list[KeyPath]:
    """The paths in ``data`` (a body of ``model``, keys as aliases) that hold a secret value (clear or sealed)."""
    return [path for path, _ in _find(model, data)]


def is_sealed(value: Any) -> bool:
    """Whether ``value`` is a sealed secret, ``{"$sealed": "<token>"}``."""
    return isinstance(value, Mapping) and len(value) == 1 and isinstance(value.get(SEALED_KEY), str)


# ---------------------------------------------------------------------------- sealing, stripping


def _copy(value: Any) -> Any:
    """A deep copy of JSON-like data (mappings become dicts, tuples lists)."""
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(item) for item in value]
    return value


def _parent(data: Any, path: KeyPath) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def _replace(model: type[BaseModel], data: Mapping[str, Any], change: Callable[[Any, KeyPath], Any]) -> dict[str, Any]:
    out: dict[str, Any] = _copy(data)
    for path, _ in _find(model, out):
        parent = _parent(out, path)
        parent[path[-1]] = change(parent[path[-1]], path)
    return out


def seal(model: type[BaseModel], data: Mapping[str, Any], box: Sealer) -> dict[str, Any]:
    """A copy of ``data`` with each secret replaced by ``{"$sealed": <its encryption>}`` (sealed ones kept)."""

    def sealed(value: Any, path: KeyPath) -> Any:
        if is_sealed(value):
            return value
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            # (the model refuses such a value; refused here too rather than stored in clear)
            raise ValueError(f"{format_path(path)}: a secret must be a string, not {type(value).__name__}")
        return {SEALED_KEY: box.encrypt(str(value))}

    return _replace(model, data, sealed)


def unseal(model: type[BaseModel], data: Mapping[str, Any], box: Sealer) -> dict[str, Any]:
    """A copy of ``data`` with each sealed secret decrypted."""
    return _replace(model, data, lambda value, _: box.decrypt(value[SEALED_KEY]) if is_sealed(value) else value)


def rotate_sealed(data: Any, box: Sealer) -> Any:
    """A copy of ``data`` with every sealed secret, wherever it is, encrypted again with the box's first key."""
    if is_sealed(data):
        return {SEALED_KEY: box.rotate(data[SEALED_KEY])}
    if isinstance(data, Mapping):
        return {key: rotate_sealed(item, box) for key, item in data.items()}
    if isinstance(data, list | tuple):
        return [rotate_sealed(item, box) for item in data]
    return data


def strip(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` for responses: secrets removed, except in maps (headers) and lists, where each is
    shown as ``********`` so users see which are set. Sealed values anywhere are treated as secrets."""
    out: dict[str, Any] = _copy(data)
    found = _find(model, out)
    for path, in_place in reversed(found):  # (reversed: list indexes stay valid)
        parent = _parent(out, path)
        if in_place:
            parent[path[-1]] = MASK
        else:
            del parent[path[-1]]
    _strip_sealed(out)
    return out


def _strip_sealed(data: Any) -> None:
    if isinstance(data, dict):
        for key in [k for k, v in data.items() if is_sealed(v)]:
            del data[key]
        for value in data.values():
            _strip_sealed(value)
    elif isinstance(data, list):
        for index, value in enumerate(data):
            if is_sealed(value):
                data[index] = MASK
            else:
                _strip_sealed(value)


def merge_patch(stored: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``stored`` with the JSON merge patch ``patch`` applied (RFC 7386: objects merged, ``null`` deletes a
    key, anything else replaces); ``********`` in the patch keeps the stored value (a body as GET returned
    it can be sent back as it is), and is never stored itself."""
    out: dict[str, Any] = _copy(stored)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, str) and value == MASK:
            continue
        elif isinstance(value, Mapping):
            current = out.get(key)
            base = current if isinstance(current, Mapping) and not is_sealed(current) else {}
            out[key] = merge_patch(base, value)
        else:
            out[key] = _copy(value)
    return out
