"""Transit JSON bodies (``application/transit+json``, what Stitch's Python ``stitchclient`` sends to
``/v2/import/push``) decoded to the plain values a JSON body would hold.

Timestamps (``~m``) become RFC 3339 strings, decimals (``~f``) their exact text, keywords, symbols
and UUIDs their names: Push types columns by value, and these keep every digit.
"""

import datetime as dt
import decimal
import io
import uuid
from collections.abc import Mapping
from typing import Any

from .wire import WireError


def decode_transit(body: bytes) -> Any:
    from transit.reader import Reader

    try:
        value = Reader("json").read(io.StringIO(body.decode("utf-8")))
    except Exception as exc:  # the reader raises many kinds for bad input
        raise WireError(400, f"Malformed transit in the body! {type(exc).__name__}: {exc}"[:500]) from None
    return _plain(value)


def _plain(value: Any) -> Any:
    """Walk without recursion limits of its own: bodies are bounded (20 MB) and Transit nests like JSON."""
    if isinstance(value, Mapping):
        return {str(_plain(k)) if not isinstance(k, str) else k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, float, str)):
        return value
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return stamp.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)  # keywords, symbols, URIs, tagged values: their text
