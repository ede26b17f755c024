"""Request bodies read with a limit: a client that keeps sending is cut off, never held whole."""

from starlette.requests import Request

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
