"""The native proof of a Batch request's messages (``native/push_proof``, Rust, no dependencies),
when it is built: it reads the messages once without building a value, about five times faster than
msgspec's typed decoding, and answers only "proven" or "not proven" (then ``push/typed.py`` decides).

Built by ``scripts/build_native.sh`` (``cargo build --release --offline``) into this folder; without
it (no Rust toolchain), or with ``PREQUEL_PUSH_NATIVE=0``, the Import API answers the same, slower.
The call releases the GIL, so a worker's event loop reads the next request meanwhile.
"""

import ctypes
import functools
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIBRARY_NAME = "libprequel_push_proof.so"
DISABLE_ENV_VAR = "PREQUEL_PUSH_NATIVE"
KINDS = {"integer": 0, "number": 1, "boolean": 2, "string": 3, "datetime": 4}
MODES = {"key": 0, "value": 1, "null_or_value": 2, "absent_or_value": 3, "any": 4}


@functools.cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get(DISABLE_ENV_VAR, "1") == "0":
        return None
    path = Path(__file__).with_name(LIBRARY_NAME)
    if not path.is_file():
        return None
    try:
        library = ctypes.CDLL(str(path))
    except OSError:  # built for another platform: the Python paths answer
        return None
    try:  # every argument typed: ctypes would pass a Python int as a 32-bit C int
        _declare(library.prequel_prove_messages, "bytes", "size", "bytes", "size", "i64", "i64")
        _declare(library.prequel_batch_head, "bytes", "size", "offsets")
        _declare(library.prequel_prove_batch_rest, "bytes", "size", "size", "bytes", "size", "i64", "i64", "offsets")
    except AttributeError:  # built from another version of native/push_proof: rebuild it
        return None
    return library


_C_TYPES: dict[str, Any] = {
    "bytes": ctypes.c_char_p,
    "size": ctypes.c_size_t,
    "i64": ctypes.c_int64,
    "offsets": ctypes.POINTER(ctypes.c_int64),
}


def _declare(function: Any, *arguments: str) -> None:
    function.argtypes = [_C_TYPES[argument] for argument in arguments]
    function.restype = ctypes.c_int64


def available() -> bool:
    return _library() is not None


@functools.lru_cache(maxsize=256)
def _spec(modes: tuple[tuple[str, str, str], ...]) -> bytes | None:
    parts = []
    for name, kind, mode in modes:
        encoded = name.encode()
        if len(encoded) > 0xFFFF:
            return None
        parts.append(struct.pack("<BBH", KINDS[kind], MODES[mode], len(encoded)) + encoded)
    return b"".join(parts)


def prove_messages(
    messages: bytes, modes: Sequence[tuple[str, str, str]], *, max_records: int, max_key_chars: int
) -> int | None:
    """How many messages, when the native proof finds every one valid for ``modes`` (each field's
    name, kind and mode, as ``push/typed.py`` builds them); None when not proven or not built."""
    library = _library()
    spec = _spec(tuple(modes)) if library is not None else None
    if library is None or spec is None or not messages:
        return None
    count = library.prequel_prove_messages(messages, len(messages), spec, len(spec), max_records, max_key_chars)
    return int(count) if count > 0 else None


TOP_KEYS = ("table_name", "schema", "messages", "key_names", "table_version", "bookmark_names")
_Offsets = ctypes.c_int64 * (2 * len(TOP_KEYS))


@dataclass
class BatchHead:
    """A Batch request read up to its messages: the JSON text of each top-level value before them,
    where the messages start, and the offsets the second call completes."""

    values: dict[str, bytes]
    messages_at: int
    offsets: Any


def batch_head(body: bytes) -> BatchHead | None:
    """The request's top-level values before ``messages`` (their JSON text, checked but not read),
    or None when the native proof is not built or the body is not plainly a Batch request."""
    library = _library()
    if library is None or not body:
        return None
    offsets = _Offsets()
    at = library.prequel_batch_head(body, len(body), offsets)
    return BatchHead(_values(body, offsets), int(at), offsets) if at > 0 else None


def prove_batch_rest(
    body: bytes, head: BatchHead, modes: Sequence[tuple[str, str, str]], *, max_records: int, max_key_chars: int
) -> tuple[int, dict[str, bytes]] | None:
    """How many messages, when every one is proven valid for ``modes`` and the rest of the request is
    well formed; and the JSON text of the top-level values after the messages. None otherwise."""
    library = _library()
    spec = _spec(tuple(modes)) if library is not None else None
    if library is None or spec is None:
        return None
    offsets = head.offsets
    count = library.prequel_prove_batch_rest(
        body, len(body), head.messages_at, spec, len(spec), max_records, max_key_chars, offsets
    )
    if count <= 0:
        return None
    later = {key: text for key, text in _values(body, offsets).items() if key not in head.values}
    return int(count), later


def _values(body: bytes, offsets: Any) -> dict[str, bytes]:
    return {
        key: body[offsets[2 * n] : offsets[2 * n + 1]]
        for n, key in enumerate(TOP_KEYS)
        if key != "messages" and offsets[2 * n] >= 0 and offsets[2 * n + 1] >= 0
    }
