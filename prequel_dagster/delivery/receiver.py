"""The reference Batch API endpoint: accepts spec-compliant batches and stores them in SQLite.

Used by ``prequel-dagster receiver`` and the demo, and a model for your own endpoint: it answers
2xx only after the batch is stored, remembers batch ids (so a retried batch is stored once), and
rejects malformed envelopes with 400 and a reason.
"""

import gzip
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .signing import SignatureError, verify_request

ENVELOPE_KEYS = {"provider_id", "stream_id", "load_id", "batch_id", "format", "records", "deleted_records"}


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int | str  # the status sent, or "dropped"
    at: float = 0.0  # time.monotonic() when it arrived


Fault = Callable[[ReceivedRequest], "int | tuple[int, dict[str, str]] | str | None"]
"""Test hook: return a status (optionally with headers) to answer instead, "drop" to close the
connection without an answer, ("sleep", s) to stall, or None to process normally."""


@dataclass
class ReceiverStore:
    """Batches and records received, in a SQLite file (``:memory:`` for tests)."""

    path: str = ":memory:"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.db = sqlite3.connect(self.path, check_same_thread=False)
        self.db.executescript(
            """
            CREATE TABLE IF NOT EXISTS batches (
              batch_id TEXT PRIMARY KEY, provider_id TEXT, stream_id TEXT, load_id TEXT,
              records INTEGER, deleted_records INTEGER, received_at REAL);
            CREATE TABLE IF NOT EXISTS records (
              batch_id TEXT, provider_id TEXT, stream_id TEXT, is_deleted INTEGER, record TEXT);
            """
        )
        self.db.commit()

    def store(self, envelope: dict[str, Any]) -> bool:
        """Store a batch once; False when its batch_id was already stored (a retry)."""
        with self.lock:
            try:
                self.db.execute(
                    "INSERT INTO batches VALUES (?,?,?,?,?,?,?)",
                    (
                        envelope["batch_id"], envelope["provider_id"], envelope["stream_id"], envelope["load_id"],
                        len(envelope["records"]), len(envelope["deleted_records"]), time.time(),
                    ),
                )
            except sqlite3.IntegrityError:
                return False
            rows = [
                (envelope["batch_id"], envelope["provider_id"], envelope["stream_id"], deleted, json.dumps(r))
                for deleted, key in ((0, "records"), (1, "deleted_records"))
                for r in envelope[key]
            ]
            self.db.executemany("INSERT INTO records VALUES (?,?,?,?,?)", rows)
            self.db.commit()
            return True

    def records(self, *, stream_id: str | None = None, provider_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT provider_id, stream_id, is_deleted, record, batch_id FROM records WHERE 1=1", []
        if stream_id:
            sql, args = sql + " AND stream_id = ?", [*args, stream_id]
        if provider_id:
            sql, args = sql + " AND provider_id = ?", [*args, provider_id]
        with self.lock:
            rows = self.db.execute(sql + " ORDER BY rowid", args).fetchall()
        return [
            {"provider_id": p, "stream_id": s, "is_deleted": bool(d), "record": json.loads(r), "batch_id": b}
            for p, s, d, r, b in rows
        ]

    def summary(self) -> list[tuple[str, str, int, int, int]]:
        """(provider, stream, batches, records, deleted_records) per stream."""
        with self.lock:
            return self.db.execute(
                "SELECT provider_id, stream_id, COUNT(*), SUM(records), SUM(deleted_records) FROM batches "
                "GROUP BY provider_id, stream_id ORDER BY provider_id, stream_id"
            ).fetchall()


def check_envelope(data: Any) -> str | None:
    """Why a body is not a valid Batch API envelope, or None."""
    if not isinstance(data, dict):
        return "the body must be a JSON object"
    missing = ENVELOPE_KEYS - data.keys()
    if missing:
        return f"missing keys: {', '.join(sorted(missing))}"
    if data["format"] != "json":
        return f"unsupported format {data['format']!r}"
    for key in ("records", "deleted_records"):
        if not isinstance(data[key], list) or not all(isinstance(r, dict) for r in data[key]):
            return f"{key} must be a list of objects"
    return None


def record_request_envelope(method: str, path: str, headers: dict[str, str], record: dict[str, Any]) -> dict[str, Any]:
    """A webhook_record request (one record per request) stored like a batch of one.

    A DELETE, or ``?deleted=true`` in the uri, marks a deletion; ``?provider_id=`` names the provider.
    """
    from urllib.parse import parse_qs, urlsplit

    query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
    deleted = method == "DELETE" or query.get("deleted") == "true"
    key = {k.lower(): v for k, v in headers.items()}.get("idempotency-key") or f"record-{time.time_ns()}"
    return {
        "provider_id": query.get("provider_id", ""), "stream_id": query.get("stream_id", ""), "load_id": "",
        "batch_id": key, "format": "json",
        "records": [] if deleted else [record], "deleted_records": [record] if deleted else [],
    }


class Receiver:
    """A threaded HTTP server on loopback that stores Batch API requests."""

    def __init__(self, store: ReceiverStore | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 fault: Fault | None = None, public_key: bytes | None = None):
        self.store = store or ReceiverStore()
        self.fault = fault
        self.public_key = public_key
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK

            def log_message(self, *args: Any) -> None:  # quiet by default
                pass

            def _handle(self) -> None:
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    self._process()
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def _process(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = ReceivedRequest(self.command, self.path, dict(self.headers.items()), body, 0, time.monotonic())
                with receiver._lock:
                    receiver.requests.append(req)
                action = receiver.fault(req) if receiver.fault else None
                if action == "drop":
                    req.answered = "dropped"
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                if isinstance(action, tuple) and action and action[0] == "sleep":
                    time.sleep(action[1])
                    action = None
                if action is not None:
                    status, headers = action if isinstance(action, tuple) else (action, {})
                    self._answer(req, status, {"status": "error", "message": "injected"}, headers)
                    return
                if receiver.public_key is not None:
                    try:  # verified over the raw body, before decompressing or parsing it
                        verify_request(receiver.public_key, dict(self.headers.items()), body)
                    except SignatureError as exc:
                        self._answer(req, 401, {"status": "error", "message": f"signature: {exc}"})
                        return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                try:
                    data = json.loads(body)
                except ValueError:
                    self._answer(req, 400, {"status": "error", "message": "body is not JSON"})
                    return
                if isinstance(data, dict) and "records" not in data and "batch_id" not in data:
                    data = record_request_envelope(self.command, self.path, dict(self.headers.items()), data)
                problem = check_envelope(data)
                if problem:
                    self._answer(req, 400, {"status": "error", "message": problem})
                    return
                if self.headers.get("Idempotency-Key") not in (None, data["batch_id"]):
                    self._answer(req, 400, {"status": "error", "message": "Idempotency-Key differs from batch_id"})
                    return
                receiver.store.store(data)
                self._answer(req, 202, {"status": "accepted", "message": "Accepted for processing."})

            def _answer(self, req: ReceivedRequest, status: int, payload: dict, headers: dict | None = None) -> None:
                req.answered = status
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "Receiver":
        self.thread = threading.Thread(target=self.server.serve_forever, name="prequel-receiver", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(db_path: Path, host: str, port: int, public_key: bytes | None = None) -> None:
    """Run the reference receiver in the foreground until interrupted."""
    receiver = Receiver(ReceiverStore(str(db_path)), host=host, port=port, public_key=public_key)
    checks = "verifying signatures, " if public_key else ""
    print(f"prequel receiver listening on {receiver.url} — {checks}storing batches in {db_path}", flush=True)
    try:
        receiver.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.server.server_close()
