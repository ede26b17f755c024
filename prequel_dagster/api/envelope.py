"""Prequel's response envelopes: ``{status, data, message}`` for success and for errors."""

from typing import Any

import orjson
from starlette.responses import Response


def success(data: Any, message: str = "ok", status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = {"status": "success", "data": data, "message": message}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def error(status: int, message: str) -> Response:
    body = {"status": "error", "message": message, "data": None}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")
