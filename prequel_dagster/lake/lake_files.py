"""Reading the small JSON files of the lake (manifests, markers, plans) so damage is named, not a KeyError.

Every such file is written whole by this package (an atomic create or replace), so one that does
not parse or lacks a key was changed by something else: the error names the file, what is wrong
and what to do, and nothing is guessed.
"""

import json
from typing import Any

from ..config.errors import PrequelError
from ..stores import Store


class CorruptLakeFile(PrequelError):
    """A lake file that prequel_dagster did not write as it is: the message names it and the fix."""


def read_json_object(
    storage: Store, path: str, *, what: str, keys: dict[str, type | tuple[type, ...]], fix: str
) -> dict[str, Any]:
    """The JSON object in ``path`` with ``keys`` of the given types, or :class:`CorruptLakeFile`."""
    raw = storage.read_bytes(path)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise corrupt(storage, path, what, f"it is not valid JSON ({exc}; {len(raw)} bytes)", fix) from None
    if not isinstance(data, dict):
        raise corrupt(storage, path, what, "it is not a JSON object", fix)
    for key, types in keys.items():
        if key not in data:
            raise corrupt(storage, path, what, f"the key '{key}' is missing", fix)
        if not isinstance(data[key], types) or isinstance(data[key], bool) and bool not in _as_tuple(types):
            raise corrupt(storage, path, what, f"'{key}' has the wrong type ({type(data[key]).__name__})", fix)
    return data


def corrupt(storage: Store, path: str, what: str, problem: str, fix: str) -> CorruptLakeFile:
    return CorruptLakeFile(f"{what} {storage.uri(path)} is damaged: {problem}. {fix}")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)
