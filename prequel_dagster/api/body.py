"""Request bodies read with a limit: a client that keeps sending is cut off, never held whole."""

from typing import Any

import orjson
from starlette.requests import Request

from .service import ApiError

MAX_MANAGEMENT_BODY_BYTES = 5 * 1024 * 1024
"""The management API's bodies (a resource, a record_schema): far below this."""


async def read_at_most(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes ``limit`` bytes (whatever Content-Length said)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, *, fix: str = "") -> Any:
    """A management body parsed as JSON (None when empty): 413 past :data:`MAX_MANAGEMENT_BODY_BYTES`,
    400 when it is not JSON, ending with ``fix`` (what to send instead) when one is given."""
    raw = await read_at_most(request, MAX_MANAGEMENT_BODY_BYTES)
    if raw is None:
        raise ApiError(413, f"the request body is over {MAX_MANAGEMENT_BODY_BYTES // (1024 * 1024)} MB")
    if not raw.strip():
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the request body is not JSON ({exc}){'; ' + fix if fix else ''}") from None
