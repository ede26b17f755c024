"""The reference receiver against hostile or broken clients, on loopback: size limits, gzip bombs,
stalled connections, malformed requests and signature headers."""

import datetime as dt
import gzip
import json
import socket
import time
import tracemalloc

import httpx
import pytest

from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.delivery.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureError,
    generate_key_pair,
    load_private_key,
    sign_request,
    verify_request,
)


def envelope(batch_id: str = "b-1", **changes) -> dict:
    data = {
        "provider_id": "acme",
        "stream_id": "users",
        "load_id": "l-1",
        "batch_id": batch_id,
        "format": "json",
        "records": [{"id": "1"}],
        "deleted_records": [],
    }
    return {**data, **changes}


def post(receiver: Receiver, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(receiver.url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=20)


def raw(receiver: Receiver, request: bytes) -> tuple[int, dict]:
    """Send bytes as they are and read the answer until the server closes: (status, JSON body)."""
    with socket.create_connection(receiver.server.server_address[:2], timeout=20) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b"application/json" in head, answer[:300]
    return int(head.split()[1]), json.loads(body) if body else {}


def assert_still_serving(receiver: Receiver) -> None:
    response = post(receiver, json.dumps(envelope("after")).encode())
    assert response.status_code == 202, response.text


# 1. request size limit


def test_a_body_over_the_limit_gets_413_without_being_read():
    with Receiver(max_body_bytes=64 * 1024, read_timeout=5) as receiver:
        # claims 10 GB and sends 1 MB: answered at once, not after reading (or waiting for) the body
        with socket.create_connection(receiver.server.server_address[:2], timeout=20) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 1_000_000)
            assert sock.recv(65536).startswith(b"HTTP/1.1 413")
        # a client that writes its whole body before reading (httpx) still sees the 413, not a reset
        response = post(receiver, json.dumps(envelope(records=[{"pad": "x" * 1_000_000}])).encode())
        assert response.status_code == 413 and "max_body_bytes" in response.json()["message"]
        assert response.headers["Connection"] == "close"
        assert receiver.store.summary() == []
        assert_still_serving(receiver)


def test_the_default_limit_is_64_mb_and_a_body_at_the_limit_is_accepted():
    assert Receiver.__init__.__kwdefaults__["max_body_bytes"] == 64 * 1024 * 1024
    body = json.dumps(envelope()).encode()
    with Receiver(max_body_bytes=len(body)) as receiver:
        assert post(receiver, body).status_code == 202
        assert post(receiver, body + b" ").status_code == 413


@pytest.mark.parametrize(
    "headers, status",
    [
        (b"", 411),  # no Content-Length
        (b"Transfer-Encoding: chunked\r\n", 411),
        (b"Content-Length: abc\r\n", 400),
        (b"Content-Length: -1\r\n", 400),
        (b"Content-Length: +5\r\n", 400),
        (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400),
        (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
    ],
)
def test_a_missing_or_invalid_content_length_gets_a_json_4xx(receiver, headers, status):
    got, answer = raw(receiver, b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n{}")
    assert got == status and answer["status"] == "error" and "Content-Length" in answer["message"]
    assert_still_serving(receiver)


def test_a_body_shorter_than_its_content_length_gets_400(receiver):
    with socket.create_connection(receiver.server.server_address[:2], timeout=20) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}")
        sock.shutdown(socket.SHUT_WR)  # the client is done sending: 98 bytes short
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")
    assert receiver.store.summary() == []


# 2. bounded gzip decompression


def test_a_gzip_bomb_gets_413_without_being_decompressed_whole():
    bomb = gzip.compress(json.dumps(envelope(records=[{"pad": "a" * 64_000_000}])).encode(), compresslevel=9)
    assert len(bomb) < 200_000
    with Receiver(max_body_bytes=1_000_000) as receiver:
        tracemalloc.start()
        try:
            response = post(receiver, bomb, **{"Content-Encoding": "gzip"})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert response.status_code == 413 and "decompress" in response.json()["message"]
        assert peak < 16_000_000, f"the receiver held {peak} bytes for a {len(bomb)}-byte body"
        assert receiver.store.summary() == []
        # within the limit, gzip bodies (also several gzip members) are still accepted
        small = gzip.compress(json.dumps(envelope("g")).encode())
        assert post(receiver, small, **{"Content-Encoding": "gzip"}).status_code == 202
        two = json.dumps(envelope("g2")).encode()
        split = gzip.compress(two[:20]) + gzip.compress(two[20:])
        assert post(receiver, split, **{"Content-Encoding": "GZIP"}).status_code == 202
        assert [row[2] for row in receiver.store.summary()] == [2]


@pytest.mark.parametrize(
    "body",
    [
        b"\x1f\x8b\x08\x00garbage that is not deflate",
        gzip.compress(json.dumps(envelope()).encode())[:-12],  # truncated
        gzip.compress(json.dumps(envelope()).encode()) + b"trailing junk",
        json.dumps(envelope()).encode(),  # says gzip, is not
    ],
    ids=["corrupt", "truncated", "trailing-junk", "not-gzip"],
)
def test_a_corrupt_gzip_body_gets_400(receiver, body):
    response = post(receiver, body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400 and "gzip" in response.json()["message"]
    assert receiver.store.summary() == []
    assert_still_serving(receiver)


def test_an_unsupported_content_encoding_gets_415(receiver):
    response = post(receiver, json.dumps(envelope()).encode(), **{"Content-Encoding": "br"})
    assert response.status_code == 415 and "gzip" in response.json()["message"]


# 3. read timeouts


def test_stalled_connections_are_closed_after_the_read_timeout_and_others_are_served():
    stalls = [
        b"",  # connects and sends nothing
        b"POST / HTT",  # part of the request line
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le",  # part of the headers
        b'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"provider_id"',  # part of the body
    ]
    with Receiver(read_timeout=1.0) as receiver:
        address = receiver.server.server_address[:2]
        sockets = []
        try:
            for i in range(40):
                sock = socket.create_connection(address, timeout=20)
                sock.sendall(stalls[i % len(stalls)])
                sockets.append((i % len(stalls), sock))
            assert_still_serving(receiver)  # threads, so the stalled ones hold nobody up
            started = time.monotonic()
            for kind, sock in sockets:
                answer = b""
                while chunk := sock.recv(65536):  # b"" once the server closes; socket.timeout after 20 s fails
                    answer += chunk
                if kind == 3:  # headers were read: the client is told why
                    assert answer.startswith(b"HTTP/1.1 408"), answer
            assert time.monotonic() - started < 20
        finally:
            for _, sock in sockets:
                sock.close()
        assert_still_serving(receiver)


def test_the_default_read_timeout_is_30_seconds():
    assert Receiver.__init__.__kwdefaults__["read_timeout"] == 30.0


# 4. malformed requests get a JSON 4xx, unexpected failures a JSON 500


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nest"),
        (json.dumps(envelope(batch_id=7)).encode(), "batch_id must be a string"),
        (json.dumps(envelope(batch_id=["a"])).encode(), "batch_id must be a string"),
        (json.dumps(envelope(batch_id="")).encode(), "batch_id must not be empty"),
        (json.dumps(envelope(provider_id={"a": 1})).encode(), "provider_id must be a string"),
        (json.dumps(envelope(stream_id=None)).encode(), "stream_id must be a string"),
        (json.dumps(envelope(load_id=1.5)).encode(), "load_id must be a string"),
        (json.dumps({k: v for k, v in envelope().items() if k != "provider_id"}).encode(), "missing keys: provider_id"),
        (json.dumps(envelope(records="x")).encode(), "records must be a list of objects"),
        (json.dumps(envelope(records=[1])).encode(), "records must be a list of objects"),
        (json.dumps(envelope(deleted_records=None)).encode(), "deleted_records must be a list of objects"),
        (json.dumps(envelope(format=["json"])).encode(), "format"),
        (json.dumps(envelope(batch_id="\ud800")).encode(), "batch_id is not valid Unicode"),  # a lone surrogate
    ],
)
def test_a_malformed_body_gets_400_with_a_reason(receiver, body, message):
    response = post(receiver, body)
    assert response.status_code == 400 and response.json()["status"] == "error"
    assert message in response.json()["message"]
    assert receiver.store.summary() == []
    assert_still_serving(receiver)


@pytest.mark.parametrize(
    "request_, status, message",
    [
        (b"NOT AN HTTP REQUEST\r\n\r\n", 400, "Bad request version"),
        (b'POST / HTTP/1.1"x\r\n\r\n', 400, '"x'),  # quotes in the reason stay valid JSON
        (b"POST / HTTP/2.0\r\n\r\n", 505, "Invalid HTTP version"),
        (b"POST / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431, "Too many headers"),
        (b"BREW / HTTP/1.1\r\nConnection: close\r\n\r\n", 501, "Unsupported method"),
        (b"HEAD / HTTP/1.1\r\nConnection: close\r\n\r\n", 501, None),  # no body for HEAD
    ],
)
def test_a_malformed_request_line_or_header_block_gets_a_json_error(receiver, request_, status, message):
    got, answer = raw(receiver, request_)
    assert got == status
    assert answer == {} if message is None else message in answer["message"]
    assert_still_serving(receiver)


def test_an_unexpected_failure_answers_500_in_json_and_the_receiver_keeps_serving():
    with Receiver(fault=lambda request: 1 / 0) as receiver:
        response = post(receiver, json.dumps(envelope()).encode())
        assert response.status_code == 500
        assert response.json() == {"status": "error", "message": "the receiver failed (ZeroDivisionError); see its log"}
        receiver.fault = None
        assert_still_serving(receiver)


# 5. verify_request raises SignatureError for any malformed input


@pytest.fixture(scope="module")
def keys():
    private, public = generate_key_pair(2048)
    return load_private_key(private), public


@pytest.mark.parametrize(
    "change",
    [
        {TIMESTAMP_HEADER: None, SIGNATURE_HEADER: None},
        {SIGNATURE_HEADER: None},
        {TIMESTAMP_HEADER: ""},
        {TIMESTAMP_HEADER: "2026-01-01T00:00:00"},  # no timezone
        {TIMESTAMP_HEADER: "2026-01-01"},
        {TIMESTAMP_HEADER: "garbage"},
        {TIMESTAMP_HEADER: "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {TIMESTAMP_HEADER: "9999-12-31T23:59:59-01:00"},  # after year 9999 in UTC
        {TIMESTAMP_HEADER: b"2026-01-01T00:00:00Z"},  # bytes, not text
        {SIGNATURE_HEADER: "q83vEjRWeJA="},  # base64, not hex
        {SIGNATURE_HEADER: "zz"},
        {SIGNATURE_HEADER: "ab" * 16},  # hex, wrong length
        {SIGNATURE_HEADER: 12345},
    ],
)
def test_verify_request_raises_signature_error_for_malformed_headers(keys, change):
    key, public = keys
    headers = {**sign_request(key, b"{}"), **change}
    headers = {k: v for k, v in headers.items() if v is not None}
    with pytest.raises(SignatureError) as raised:
        verify_request(public, headers, b"{}")
    assert type(raised.value) is SignatureError


def test_verify_request_accepts_a_good_request_and_rejects_a_stale_one(keys):
    key, public = keys
    verify_request(public, sign_request(key, b"{}"), b"{}")
    stale = sign_request(key, b"{}", now=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=301))
    with pytest.raises(SignatureError, match="tolerance 300s"):
        verify_request(public, stale, b"{}")


def test_a_naive_timestamp_at_the_receiver_gets_401(keys):
    key, public = keys
    body = json.dumps(envelope()).encode()
    with Receiver(public_key=public) as receiver:
        response = post(receiver, body, **{**sign_request(key, body), TIMESTAMP_HEADER: "2026-01-01T00:00:00"})
        assert response.status_code == 401 and "timezone" in response.json()["message"]
        assert receiver.store.summary() == []


# 6. replays


def test_a_replayed_signed_batch_is_answered_2xx_and_stored_once(keys):
    key, public = keys
    body = json.dumps(envelope()).encode()
    headers = sign_request(key, body)
    with Receiver(public_key=public) as receiver:
        assert [post(receiver, body, **headers).status_code for _ in range(3)] == [202, 202, 202]
        assert receiver.store.summary() == [("acme", "users", 1, 1, 0)]
