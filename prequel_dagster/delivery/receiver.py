"""The reference Batch API endpoint: accepts spec-compliant batches and stores them in SQLite.

Used by ``prequel-dagster receiver`` and the demo, and a model for your own endpoint: it answers
2xx only after the batch is stored, remembers batch ids (so a retried batch is stored once), and
rejects malformed envelopes with 400 and a reason.

What it enforces, since an endpoint faces whatever the network sends:

- Bodies need a Content-Length of at most ``max_body_bytes`` (64 MB by default; 411/400/413 otherwise,
  answered before reading the body), and a gzip body may decompress to at most as much (413): it is
  inflated a chunk at a time, so a small "gzip bomb" is never held whole.
- A client that stalls (part of the headers or body, then nothing) is cut off after ``read_timeout``
  seconds (30 by default): 408 if its headers had arrived, else the connection is just closed.
- Anything malformed gets a 4xx JSON answer with a reason; an unexpected failure gets a JSON 500
  (and a traceback on stderr), never a silently dropped connection.
- With ``public_key``, the signature is checked over the raw body before it is decompressed or parsed.

Replays: the signature covers only the timestamp and the body (not the method, URL or other headers),
so a captured request can be sent again. ``verify_request`` rejects timestamps more than 5 minutes
(``tolerance_seconds``) from now, and within that window a receiver must remember batch ids: this one
stores each ``batch_id`` once (its primary key) and answers a repeat 2xx without storing it again.
In ``webhook_record`` mode the batch id comes from the unsigned ``Idempotency-Key`` header and the
provider and deletion flag from the unsigned URL, so rely on TLS and authentication there too.
"""

import contextlib
import json
import socket
import sqlite3
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .signing import SignatureError, verify_request

ENVELOPE_KEYS = {"provider_id", "stream_id", "load_id", "batch_id", "format", "records", "deleted_records"}
ID_KEYS = ("provider_id", "stream_id", "load_id", "batch_id")
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_READ_TIMEOUT = 30.0


class Rejected(Exception):
    """A request answered with ``status`` and ``message``; ``hang_up`` when its body was not (all) read."""

    def __init__(self, status: int, message: str, *, hang_up: bool = False):
        super().__init__(message)
        self.status, self.message, self.hang_up = status, message, hang_up


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
        """Store a batch once; False when its batch_id was already stored (a retry, or a replay).

        ``envelope`` must have passed :func:`check_envelope`.
        """
        with self.lock:
            try:
                self.db.execute(
                    "INSERT INTO batches VALUES (?,?,?,?,?,?,?)",
                    (
                        envelope["batch_id"],
                        envelope["provider_id"],
                        envelope["stream_id"],
                        envelope["load_id"],
                        len(envelope["records"]),
                        len(envelope["deleted_records"]),
                        time.time(),
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
        sql = "SELECT provider_id, stream_id, is_deleted, record, batch_id FROM records WHERE 1=1"
        args: list[Any] = []
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
    """Why a body is not a valid Batch API envelope, or None (then :meth:`ReceiverStore.store` cannot fail on it)."""
    if not isinstance(data, dict):
        return "the body must be a JSON object"
    missing = ENVELOPE_KEYS - data.keys()
    if missing:
        return f"missing keys: {', '.join(sorted(missing))}"
    if data["format"] != "json":
        return 'format must be "json"'
    for key in ID_KEYS:
        if not isinstance(data[key], str):
            return f"{key} must be a string"
        try:
            data[key].encode()
        except UnicodeEncodeError:
            return f"{key} is not valid Unicode (it has a lone surrogate escape such as \\ud800)"
    if not data["batch_id"]:
        return "batch_id must not be empty"
    for key in ("records", "deleted_records"):
        if not isinstance(data[key], list) or not all(isinstance(r, dict) for r in data[key]):
            return f"{key} must be a list of objects"
    return None


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body a chunk at a time, so a small body that inflates hugely is never held whole.

    Raises :class:`Rejected`: 413 past ``limit`` bytes, 400 when the data is not (complete) gzip.
    """
    out = bytearray()
    while True:  # a gzip body may have several members
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            while not inflater.eof:
                chunk = inflater.decompress(data, limit + 1 - len(out))
                data = inflater.unconsumed_tail
                if not chunk and not data:
                    raise Rejected(400, "the gzip body is truncated; send the whole compressed body")
                out += chunk
                if len(out) > limit:
                    raise Rejected(
                        413, f"the body decompresses to more than max_body_bytes ({limit}); send smaller batches"
                    )
        except zlib.error as exc:
            raise Rejected(
                400, f"the body is not valid gzip ({exc}); compress it with gzip, or drop Content-Encoding"
            ) from None
        data = inflater.unused_data
        if not data:
            return bytes(out)


def record_request_envelope(method: str, path: str, headers: dict[str, str], record: dict[str, Any]) -> dict[str, Any]:
    """A webhook_record request (one record per request) stored like a batch of one.

    A DELETE, or ``?deleted=true`` in the uri, marks a deletion; ``?provider_id=`` names the provider.
    """
    from urllib.parse import parse_qs, urlsplit

    query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
    deleted = method == "DELETE" or query.get("deleted") == "true"
    key = {k.lower(): v for k, v in headers.items()}.get("idempotency-key") or f"record-{time.time_ns()}"
    return {
        "provider_id": query.get("provider_id", ""),
        "stream_id": query.get("stream_id", ""),
        "load_id": "",
        "batch_id": key,
        "format": "json",
        "records": [] if deleted else [record],
        "deleted_records": [record] if deleted else [],
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops connects in a burst; each then waits ~1 s to retry


class Receiver:
    """A threaded HTTP server on loopback that stores Batch API requests.

    ``max_body_bytes`` caps a body, before and after gzip decompression (413 past it); ``read_timeout``
    is how long a client may leave a read waiting before it is cut off (seconds). ``keep_requests``
    keeps every request in ``requests`` (for tests; turn it off for a long-running server).
    """

    def __init__(
        self,
        store: ReceiverStore | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        fault: Fault | None = None,
        public_key: bytes | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        keep_requests: bool = True,
    ):
        if max_body_bytes < 1 or read_timeout <= 0:
            raise ValueError("max_body_bytes and read_timeout must be positive")
        self.store = store or ReceiverStore()
        self.fault = fault
        self.public_key = public_key
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout
        self.keep_requests = keep_requests
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits ~40 ms for a delayed ACK
            timeout = read_timeout  # on every socket read and write: a stalled client is cut off

            def log_message(self, *args: Any) -> None:  # quiet by default
                pass

            def _handle(self) -> None:
                req = ReceivedRequest(self.command, self.path, dict(self.headers.items()), b"", 0, time.monotonic())
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                    if receiver.keep_requests:
                        receiver.requests.append(req)
                try:
                    self._process(req)
                except Rejected as exc:
                    self.close_connection = self.close_connection or exc.hang_up
                    with contextlib.suppress(OSError):
                        self._answer(
                            req,
                            exc.status,
                            {"status": "error", "message": exc.message},
                            {"Connection": "close"} if exc.hang_up else None,
                        )
                        if exc.hang_up:
                            self._hang_up()
                except OSError:  # the client went away or stalled mid-answer
                    self.close_connection = True
                except Exception as exc:  # answer rather than drop the connection; keep the traceback
                    traceback.print_exc(file=sys.stderr)
                    self.close_connection = True
                    if not req.answered:
                        with contextlib.suppress(OSError):
                            message = f"the receiver failed ({type(exc).__name__}); see its log"
                            self._answer(req, 500, {"status": "error", "message": message}, {"Connection": "close"})
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def _content_length(self) -> int:
                """The body's length; Rejected before any of it is read when it is absent, invalid or too big."""
                lengths = self.headers.get_all("Content-Length") or []
                if "Transfer-Encoding" in self.headers:
                    if lengths:
                        raise Rejected(
                            400, "both Transfer-Encoding and Content-Length; send only Content-Length", hang_up=True
                        )
                    raise Rejected(411, "chunked bodies are not accepted; send a Content-Length", hang_up=True)
                if not lengths:
                    raise Rejected(411, "Content-Length is required", hang_up=True)
                value = lengths[0].strip()
                if len(lengths) > 1 or not (value.isascii() and value.isdigit()):
                    raise Rejected(400, "send exactly one Content-Length, a number of bytes", hang_up=True)
                if int(value) > receiver.max_body_bytes:
                    raise Rejected(
                        413,
                        f"the body is {value} bytes, over max_body_bytes "
                        f"({receiver.max_body_bytes}); send smaller batches",
                        hang_up=True,
                    )
                return int(value)

            def _process(self, req: ReceivedRequest) -> None:
                length = self._content_length()
                try:
                    body = self.rfile.read(length) if length else b""
                except TimeoutError:
                    message = f"the body did not arrive within read_timeout ({receiver.read_timeout}s)"
                    raise Rejected(408, message, hang_up=True) from None
                if len(body) < length:
                    raise Rejected(
                        400, f"the body ended after {len(body)} of {length} bytes (Content-Length)", hang_up=True
                    )
                req.body = body
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
                    time.sleep(float(action[1]))  # type: ignore[arg-type]
                    action = None
                if action is not None:
                    status, headers = action if isinstance(action, tuple) else (action, {})
                    self._answer(req, int(status), {"status": "error", "message": "injected"}, headers)
                    return
                if receiver.public_key is not None:
                    try:  # verified over the raw body, before decompressing or parsing it
                        verify_request(receiver.public_key, dict(self.headers.items()), body)
                    except SignatureError as exc:
                        raise Rejected(401, f"signature: {exc}") from None
                encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
                if encoding == "gzip":
                    body = gunzip(body, receiver.max_body_bytes)
                elif encoding != "identity":
                    raise Rejected(415, f"unsupported Content-Encoding {encoding[:40]!r}; send gzip or no encoding")
                try:
                    data = json.loads(body.decode())
                except UnicodeDecodeError as exc:
                    raise Rejected(400, f"the body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
                except RecursionError:
                    raise Rejected(400, "the body's JSON nests too deeply") from None
                except ValueError as exc:
                    raise Rejected(400, f"the body is not JSON ({exc})") from None
                if isinstance(data, dict) and "records" not in data and "batch_id" not in data:
                    data = record_request_envelope(self.command, self.path, dict(self.headers.items()), data)
                problem = check_envelope(data)
                if problem:
                    raise Rejected(400, problem)
                if self.headers.get("Idempotency-Key") not in (None, data["batch_id"]):
                    raise Rejected(400, "Idempotency-Key differs from batch_id")
                receiver.store.store(data)  # False for a batch_id already stored: still 2xx, stored once
                self._answer(req, 202, {"status": "accepted", "message": "Accepted for processing."})

            def _hang_up(self) -> None:
                """Close after answering before the body was read: stop writing, then drop what the client still
                sends for up to read_timeout, so it reads the answer rather than a reset (a lingering close)."""
                self.close_connection = True
                deadline = time.monotonic() + receiver.read_timeout
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_WR)
                    while time.monotonic() < deadline and self.rfile.read1(65536):
                        pass

            def _answer(self, req: ReceivedRequest, status: int, payload: dict, headers: dict | None = None) -> None:
                req.answered = status
                self._send(status, payload, headers)

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(raw)

            def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
                """http.server's own rejections (a bad request line, too many headers) in JSON too."""
                self.close_connection = True
                if self.request_version == "HTTP/0.9":  # the request line was unreadable: answer with a status line
                    self.request_version = "HTTP/1.1"
                message = message or self.responses.get(code, ("error",))[0]
                self._send(code, {"status": "error", "message": message}, {"Connection": "close"})

            do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

        self.server = _Server((host, port), Handler)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}"

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


def serve(db_path: Path, host: str, port: int, public_key: bytes | None = None, **options: Any) -> None:
    """Run the reference receiver in the foreground until interrupted; ``options`` go to :class:`Receiver`."""
    receiver = Receiver(
        ReceiverStore(str(db_path)), host=host, port=port, public_key=public_key, keep_requests=False, **options
    )
    checks = "verifying signatures, " if public_key else ""
    print(f"prequel receiver listening on {receiver.url} — {checks}storing batches in {db_path}", flush=True)
    try:
        receiver.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.server.server_close()
