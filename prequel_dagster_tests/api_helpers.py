"""The management API on loopback for tests: a real uvicorn server in a thread, and an httpx client."""

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from .servers import free_port


@contextlib.contextmanager
def api_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def client(base_url: str, key: str | None) -> httpx.Client:
    headers = {"X-API-KEY": key} if key else {}
    return httpx.Client(base_url=base_url, headers=headers, timeout=60)


def data(response: httpx.Response, status: int = 200) -> Any:
    """The ``data`` of a success envelope, after checking the status and the envelope's shape."""
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert set(body) == {"status", "data", "message"}, body
    assert body["status"] == "success" and isinstance(body["message"], str), body
    return body["data"]


def error(response: httpx.Response, status: int) -> str:
    """The message of an error envelope, after checking the status and the envelope's shape."""
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["status"] == "error" and body["data"] is None and isinstance(body["message"], str), body
    return body["message"]
