"""Failure notifications (Prequel's notification webhooks): the config, each vendor's request as a real
loopback endpoint receives it (signatures verified, hostile tenant values kept as data), retries,
internal hosts refused, secrets kept out of logs, ``/webhooks`` CRUD and scoping, and the Dagster
sensors against a real instance: a failing extract, growing dead letters, a failing check and a
freshness miss each reach the subscribed endpoint."""

import contextlib
import datetime as dt
import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import dagster as dg
import httpx
import pytest

from prequel_dagster import build_definitions, load_config
from prequel_dagster.config.errors import ConfigError
from prequel_dagster.config.models import Notification
from prequel_dagster.delivery.signing import generate_key_pair, verify_request
from prequel_dagster.notify import events as ev
from prequel_dagster.notify.payloads import DATADOG_URL, PAGERDUTY_URL, build_request
from prequel_dagster.notify.sender import RetryPolicy, host_problem, notify, send

from .api_helpers import data, error
from .servers import free_port
from .test_api_resources import running

FAST = RetryPolicy(max_attempts=3, timeout_seconds=5, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)
API_KEY = "k3y-Zq81-notify-SECRET"
SLACK_PATH = "/services/T0001/B0002/sl4ckS3cretToken"
SLACK_URL = "https://hooks.slack.com" + SLACK_PATH
PRIVATE_PEM, PUBLIC_PEM = generate_key_pair(2048)
HOSTILE = "a&b=c#frag/../x?y=1\nline2 <!channel> é"


# ---------------------------------------------------------------------- a loopback endpoint that records


@dataclass
class Received:
    method: str
    path: str
    query: str  # raw, as sent
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """A real HTTP server on loopback: records each request, answers with the next scripted answer
    (status, body, headers), then 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: list[tuple[int, bytes, dict[str, str]]] = field(default_factory=list)

    def answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.answers.append((status, body, headers))


@contextlib.contextmanager
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path, _, query = self.path.partition("?")
            with lock:
                rec.received.append(Received(self.command, path, query, dict(self.headers.items()), body))
                status, answer, headers = rec.answers.pop(0) if rec.answers else (200, b"ok", {})
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


class ToLoopback(httpx.HTTPTransport):
    """Sends every request to the recorder instead of its host (Slack's URL must be hooks.slack.com)."""

    def __init__(self, base: str):
        super().__init__()
        self.base = httpx.URL(base)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme=self.base.scheme, host=self.base.host, port=self.base.port)
        return super().handle_request(request)


def notification(**fields: Any) -> Notification:
    return Notification.model_validate({"id": "n1", **fields})


def sample_event(**overrides: Any) -> ev.NotificationEvent:
    fields: dict[str, Any] = {
        "key": "run-1/prequel/acme/users",
        "dataset_id": "users",
        "run_id": "run-1",
        "link": "http://dagster.example/runs/run-1",
        "occurred_at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    }
    fields.update(overrides)
    message = fields.pop("message", "connection refused")
    return ev.event(fields.pop("type", ev.EXTRACT_FAILED), fields.pop("provider_id", "acme"), message, **fields)


# ---------------------------------------------------------------------- config


def base_config(**extra: Any) -> dict[str, Any]:
    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}],
        "providers": [
            {"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]},
            {"id": "globex", "name": "globex", "datalake_id": "lake", "products": ["all"]},
        ],
        **extra,
    }


def issues_of(config: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    return {i.path: i.message for i in caught.value.issues}


def test_config_accepts_every_vendor_with_defaults(monkeypatch):
    monkeypatch.setenv("PD_KEY", "pd-routing-key")
    config = load_config(
        base_config(
            notifications=[
                {"id": "ops", "vendor": "generic_post", "url": "https://alerts.example.com/prequel"},
                {"id": "q", "vendor": "generic_get", "url": "https://alerts.example.com/q?team=data", "api_key": "x"},
                {"id": "chat", "vendor": "slack", "url": SLACK_URL, "provider_id": "acme", "events": ["load.failed"]},
                {"id": "pd", "vendor": "pagerduty", "api_key": "${PD_KEY}", "is_enabled": False},
                {
                    "id": "dd",
                    "name": "Datadog",
                    "vendor": "datadog",
                    "api_key": "dd",
                    "url": "https://api.datadoghq.eu/api/v1/events",
                },
            ]
        )
    )
    ops, _, chat, pd, dd = config.notifications
    assert ops.name == "ops" and ops.provider_id is None and ops.is_enabled
    assert ops.events == list(ev.EVENT_TYPES)
    assert chat.events == ["load.failed"] and chat.provider_id == "acme"
    assert pd.api_key.reveal() == "pd-routing-key" and "pd-routing-key" not in repr(pd)
    assert dd.name == "Datadog"
    assert config.notification("chat") is chat
    assert chat.listens_to("load.failed", "acme") and not chat.listens_to("load.failed", "globex")
    assert not chat.listens_to("extract.failed", "acme") and ops.listens_to("freshness.missed", "globex")
    assert not pd.listens_to("extract.failed", "acme")  # disabled


def test_config_errors_name_the_field_and_the_fix():
    found = issues_of(
        base_config(
            notifications=[
                {"id": "a", "vendor": "generic_post"},
                {"id": "b", "vendor": "slack", "url": "https://hooks.slack.com.evil.io/services/T/B/x"},
                {"id": "c", "vendor": "pagerduty"},
                {"id": "d", "vendor": "generic_post", "url": "ftp://x.io/"},
                {"id": "e", "vendor": "generic_get", "url": "https://x.io/a#b", "events": []},
                {"id": "f", "vendor": "slack", "url": SLACK_URL, "api_key": "k"},
                {"id": "g", "vendor": "teams", "url": "https://x.io"},
                {"id": "h", "vendor": "generic_post", "url": "https://x.io", "provider_id": "initech"},
                {"id": "i", "vendor": "generic_post", "url": "https://x.io", "events": ["load.failed", "load.failed"]},
                {"id": "j", "vendor": "generic_post", "url": "https://x.io", "colour": "red"},
                {"id": "k", "vendor": "generic_post", "url": "https://x.io", "events": ["extract.failed", "nope"]},
            ]
        )
    )
    assert "url is missing" in found["notifications[0].url"] and "url: https://" in found["notifications[0].url"]
    assert "https://hooks.slack.com/services/" in found["notifications[1].url"]
    assert "api_key is missing" in found["notifications[2].api_key"]
    assert "http(s)" in found["notifications[3].url"]
    assert "extract.failed" in found["notifications[10].events[1]"]  # the allowed values are named
    assert "fragment" in found["notifications[4].url"]
    assert "lists no event type" in found["notifications[4].events"]
    assert "remove it" in found["notifications[5].api_key"]
    assert "slack" in found["notifications[6].vendor"]
    assert found["notifications[7].provider_id"].startswith("no provider with id 'initech'")
    assert "twice" in found["notifications[8].events[1]"]
    assert "unknown key" in found["notifications[9].colour"]


def test_yaml_notifications_load_from_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SLACK_ALERTS_URL", SLACK_URL)
    path = tmp_path / "prequel.yaml"
    path.write_text(
        """
datalakes:
  - {id: lake, name: lake, storage: local, local: {path: lake}}
providers:
  - {id: acme, name: Acme, datalake_id: lake, products: [all]}
notifications:
  - id: ops-slack
    vendor: slack
    url: ${SLACK_ALERTS_URL}
    events: [extract.failed, load.failed]
  - id: acme-pager
    vendor: pagerduty
    api_key: "${PAGERDUTY_ROUTING_KEY:-r0uting}"
    provider_id: acme
"""
    )
    config = load_config(path)
    assert [n.id for n in config.notifications] == ["ops-slack", "acme-pager"]
    assert config.notifications[0].url == SLACK_URL

    # the contract's name for the same list, Prequel's /webhooks: errors name what was written
    as_webhooks = path.read_text().replace("notifications:", "webhooks:")
    path.write_text(as_webhooks)
    assert [n.id for n in load_config(path).notifications] == ["ops-slack", "acme-pager"]
    path.write_text(as_webhooks.replace("provider_id: acme", "provider_id: nobody"))
    with pytest.raises(ConfigError, match=r"webhooks\[1\]\.provider_id: no provider"):
        load_config(path)
    path.write_text(as_webhooks + "notifications: []\n")
    with pytest.raises(ConfigError, match="both webhooks: and notifications:"):
        load_config(path)


# ---------------------------------------------------------------------- each vendor's request, received


def test_generic_post_sends_prequels_envelope_signed_like_deliveries():
    with recorder() as rec:
        n = notification(
            vendor="generic_post",
            url=rec.url + "/hooks/prequel",
            api_key=API_KEY,
            signing={"private_key": PRIVATE_PEM.decode()},
        )
        event = sample_event(message=HOSTILE, details={"records": 3})
        result = send(n, event, allow_internal_hosts=True, policy=FAST)
    assert result.delivered and result.status == 200 and result.attempts == 1, result
    (got,) = rec.received
    assert got.method == "POST" and got.path == "/hooks/prequel" and got.query == ""
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["content-type"] == "application/json"
    assert headers["x-api-key"] == API_KEY
    assert headers["idempotency-key"] == event.id
    verify_request(PUBLIC_PEM, got.headers, got.body)  # signature, digest and timestamp
    body = got.json()
    assert set(body) == {"type", "version", "created_at", "data"}
    assert body["type"] == "extract.failed" and body["version"] == "2023-12-01"
    assert dt.datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")).tzinfo is not None
    assert body["data"] == {
        "id": event.id,
        "webhook_id": "n1",
        "provider_id": "acme",
        "dataset_id": "users",
        "run_id": "run-1",
        "message": HOSTILE,  # data, JSON-escaped: the newline and the rest arrive as sent
        "occurred_at": "2026-01-02T03:04:05Z",
        "link": "http://dagster.example/runs/run-1",
        "details": {"records": 3},
    }
    # the same occurrence found twice has the same id; another has another
    assert sample_event().id == sample_event(message="other").id != sample_event(key="run-2/x").id


def test_generic_get_puts_the_envelope_in_the_query_encoded_even_with_hostile_values():
    with recorder() as rec:
        n = notification(
            vendor="generic_get",
            url=rec.url + "/notify/in?team=data&x=%2F",
            api_key=API_KEY,
            signing={"private_key": PRIVATE_PEM.decode()},
        )
        event = sample_event(dataset_id="d&s=1#/..", message=HOSTILE, run_id="r/1?x=#", details={"a&b": "c=d"})
        result = send(n, event, allow_internal_hosts=True, policy=FAST)
    assert result.delivered, result
    (got,) = rec.received
    assert got.method == "GET" and got.path == "/notify/in" and got.body == b""
    assert "#" not in got.query and "\n" not in got.query and " " not in got.query
    pairs = parse_qsl(got.query, keep_blank_values=True)
    assert pairs[:2] == [("team", "data"), ("x", "/")]  # the URL's own parameters first, as written
    params = dict(pairs)
    assert params["type"] == "extract.failed" and params["version"] == "2023-12-01"
    assert params["dataset_id"] == "d&s=1#/.." and params["run_id"] == "r/1?x=#"
    assert params["message"] == HOSTILE and params["details.a&b"] == "c=d"
    assert params["provider_id"] == "acme" and params["webhook_id"] == "n1" and params["id"] == event.id
    assert "s" not in params  # nothing of a value became a parameter of its own
    headers = {k.lower(): v for k, v in got.headers.items()}
    assert headers["x-api-key"] == API_KEY
    verify_request(PUBLIC_PEM, got.headers, got.query.encode())  # a GET signs its query string as sent


def test_slack_message_has_text_and_blocks_with_tenant_values_escaped():
    with recorder() as rec:
        n = notification(vendor="slack", url=SLACK_URL)
        event = sample_event(message="boom <!channel> <https://evil.io|click> & more", stream_id="s<@U1>")
        result = send(n, event, allow_internal_hosts=True, policy=FAST, transport=ToLoopback(rec.url))
    assert result.delivered, result
    (got,) = rec.received
    assert got.path == SLACK_PATH and got.headers["Host"] == "hooks.slack.com"
    assert "X-API-KEY" not in got.headers and "x-api-key" not in {k.lower() for k in got.headers}
    body = got.json()
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("Load failed: stream ") or body["text"].startswith("Extract failed")
    marked = [body["text"]] + [  # the text Slack reads markup in: tenant values are escaped there
        t["text"]
        for b in body["blocks"]
        for t in [b.get("text"), *b.get("fields", []), *b.get("elements", [])]
        if t and t["type"] == "mrkdwn"
    ]
    for text in marked:
        assert "<!channel>" not in text and "<https://evil.io" not in text and "<@U1>" not in text, text
    assert "&lt;!channel&gt;" in body["text"] and "&amp; more" in body["text"]
    kinds = [b["type"] for b in body["blocks"]]
    assert kinds == ["header", "section", "section", "context"]
    header = body["blocks"][0]["text"]
    assert header["type"] == "plain_text" and len(header["text"]) <= 150
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1] for f in body["blocks"][1]["fields"]}
    assert fields["*Provider*"] == "acme" and fields["*Stream*"] == "s&lt;@U1&gt;"
    assert body["blocks"][2]["text"] == {"type": "plain_text", "text": event.message}  # plain text: no markup
    assert "<http://dagster.example/runs/run-1|Open in Dagster>" in body["blocks"][3]["elements"][0]["text"]


def test_pagerduty_event_has_the_events_api_v2_fields():
    n = notification(vendor="pagerduty", api_key=API_KEY)
    assert build_request(n, sample_event(), api_key=API_KEY).url == PAGERDUTY_URL
    with recorder() as rec:
        n = notification(vendor="pagerduty", api_key=API_KEY, url=rec.url + "/v2/enqueue")
        event = sample_event(type=ev.LOAD_FAILED, stream_id="users-app", message="x" * 5000)
        result = send(n, event, allow_internal_hosts=True, policy=FAST)
    assert result.delivered, result
    (got,) = rec.received
    assert got.method == "POST" and got.path == "/v2/enqueue"
    body = got.json()
    assert body["routing_key"] == API_KEY and body["event_action"] == "trigger"
    assert body["dedup_key"] == "prequel-dagster/load.failed/acme/users-app/" and len(body["dedup_key"]) <= 255
    payload = body["payload"]
    assert {"summary", "source", "severity", "timestamp", "custom_details"} <= set(payload)
    assert len(payload["summary"]) <= 1024 and payload["summary"].startswith("Load failed: stream 'users-app'")
    assert payload["source"] == "prequel-dagster/acme" and payload["severity"] == "error"
    assert payload["timestamp"] == "2026-01-02T03:04:05Z"
    assert payload["custom_details"]["stream_id"] == "users-app" and payload["class"] == "load.failed"
    assert body["links"] == [{"href": "http://dagster.example/runs/run-1", "text": "Open in Dagster"}]
    assert "x-api-key" not in {k.lower() for k in got.headers}  # the key travels in the body only


def test_datadog_event_has_the_events_api_fields_and_key_header():
    n = notification(vendor="datadog", api_key=API_KEY)
    assert build_request(n, sample_event(), api_key=API_KEY).url == DATADOG_URL
    with recorder() as rec:
        rec.answer(202, b'{"status": "ok"}')
        n = notification(vendor="datadog", api_key=API_KEY, url=rec.url + "/api/v1/events")
        event = sample_event(type=ev.FRESHNESS_MISSED, dataset_id="Users Table", message="late")
        result = send(n, event, allow_internal_hosts=True, policy=FAST)
    assert result.delivered and result.status == 202, result
    (got,) = rec.received
    assert got.path == "/api/v1/events"
    assert {k.lower(): v for k, v in got.headers.items()}["dd-api-key"] == API_KEY
    body = got.json()
    assert {"title", "text", "alert_type", "tags"} <= set(body)
    assert body["alert_type"] == "error" and len(body["title"]) <= 100 and len(body["text"]) <= 4000
    assert body["title"] == "Freshness missed: dataset 'Users Table' of provider 'acme'"
    assert "late" in body["text"]
    assert "prequel_provider:acme" in body["tags"] and "prequel_event:freshness.missed" in body["tags"]
    assert "prequel_dataset:users_table" in body["tags"]  # Datadog's tag characters
    assert isinstance(body["date_happened"], int)


# ---------------------------------------------------------------------- retries, refusals, secrets


def test_retries_after_a_500_and_a_429_then_succeeds():
    sleeps: list[float] = []
    with recorder() as rec:
        rec.answer(500, b"busy")
        rec.answer(429, b"slow down", Retry_After="0.02")
        n = notification(vendor="generic_post", url=rec.url + "/h", signing={"private_key": PRIVATE_PEM.decode()})
        result = send(n, sample_event(), allow_internal_hosts=True, policy=FAST, sleep=sleeps.append)
    assert result.delivered and result.attempts == 3, result
    assert len(rec.received) == 3 and sleeps[1] == 0.02  # Retry-After honoured
    assert len({r.body for r in rec.received}) == 1  # the same body, signed again per attempt
    for got in rec.received:
        verify_request(PUBLIC_PEM, got.headers, got.body)


def test_gives_up_after_its_attempts_and_a_4xx_is_final():
    with recorder() as rec:
        for _ in range(3):
            rec.answer(503)
        n = notification(vendor="generic_post", url=rec.url + "/h")
        result = send(n, sample_event(), allow_internal_hosts=True, policy=FAST, sleep=lambda s: None)
        assert not result.delivered and result.attempts == 3 and "gave up after 3 attempts" in result.detail
        rec.answer(404, b"no such hook")
        result = send(n, sample_event(), allow_internal_hosts=True, policy=FAST, sleep=lambda s: None)
        assert (
            not result.delivered and result.attempts == 1 and result.status == 404 and "no such hook" in result.detail
        )
        rec.answer(302, b"", Location="http://169.254.169.254/latest")
        result = send(n, sample_event(), allow_internal_hosts=True, policy=FAST)
        assert not result.delivered and result.attempts == 1 and "redirects are not followed" in result.detail
    assert len(rec.received) == 5  # nothing followed the redirect
    port = free_port()  # nothing listens there: connection errors are retried, then reported
    n = notification(vendor="generic_post", url=f"http://127.0.0.1:{port}/h")
    result = send(n, sample_event(), allow_internal_hosts=True, policy=FAST, sleep=lambda s: None)
    assert not result.delivered and result.attempts == 3 and "ConnectError" in result.detail


def test_a_providers_notification_never_reaches_internal_hosts(monkeypatch):
    monkeypatch.delenv("PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS", raising=False)

    def resolving_to(address: str):
        return lambda host, port, *rest: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    with recorder() as rec:
        port = urlsplit(rec.url).port
        for url in (
            rec.url + "/h",
            f"http://localhost:{port}/h",
            f"http://[::1]:{port}/h",
            f"http://[::ffff:127.0.0.1]:{port}/h",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.7/h",
            "http://0.0.0.0/h",
            f"http://2130706433:{port}/h",  # 127.0.0.1 as a number: caught when resolved
        ):
            n = notification(vendor="generic_post", url=url, provider_id="acme")
            result = send(n, sample_event(), policy=FAST)
            assert result.refused and not result.delivered and result.attempts == 0, (url, result)
            assert "public host" in result.detail, result
        # a name that resolves inward (DNS the tenant controls) is refused as well
        n = notification(vendor="generic_post", url="https://alerts.tenant.example/h", provider_id="acme")
        assert "resolves to 10.1.2.3" in send(n, sample_event(), resolve=resolving_to("10.1.2.3")).detail
        assert host_problem("https://alerts.tenant.example/h", resolving_to("93.184.215.14")) is None
        assert rec.received == []  # not one request left

        # every provider's notifications are the company's own: they may use internal hosts
        assert send(notification(vendor="generic_post", url=rec.url + "/h"), sample_event(), policy=FAST).delivered
        # and the operator may allow them for all
        monkeypatch.setenv("PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS", "true")
        n = notification(vendor="generic_post", url=rec.url + "/h", provider_id="acme")
        assert send(n, sample_event(), policy=FAST).delivered
    assert len(rec.received) == 2


def test_secrets_never_reach_logs_or_results(caplog, monkeypatch):
    monkeypatch.delenv("PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS", raising=False)
    caplog.set_level(logging.DEBUG)
    results = []
    with recorder() as rec:
        # an endpoint that echoes what it got, secrets and all
        rec.answer(500, f"bad key {API_KEY} at {SLACK_URL}".encode())
        rec.answer(401, f"key {API_KEY} refused".encode())
        n = notification(vendor="datadog", url=rec.url + "/api/v1/events", api_key=API_KEY)
        results.append(send(n, sample_event(), allow_internal_hosts=True, policy=FAST, sleep=lambda s: None))
        slack = notification(vendor="slack", url=SLACK_URL)
        rec.answer(500, f"no such hook {SLACK_PATH}".encode())
        results.append(
            send(
                slack,
                sample_event(),
                allow_internal_hosts=True,
                policy=FAST,
                transport=ToLoopback(rec.url),
                sleep=lambda s: None,
            )
        )
        missing = notification(vendor="pagerduty", api_key="${NOTIFY_TEST_UNSET_KEY}")
        results.append(send(missing, sample_event(), policy=FAST))
    assert not results[0].delivered and results[0].status == 401
    assert results[2].refused and "NOTIFY_TEST_UNSET_KEY" in results[2].detail
    text = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(map(str, results))
    assert "127.0.0.1" in text and "hooks.slack.com" in text  # the logs say where (the origin)...
    for secret in (API_KEY, SLACK_PATH, "sl4ckS3cretToken"):
        assert secret not in text, secret  # ...never with what


def test_notify_sends_each_event_to_the_subscriptions_that_match():
    with recorder() as rec:
        subs = [
            notification(id="all", vendor="generic_post", url=rec.url + "/all"),
            notification(id="acme", vendor="generic_post", url=rec.url + "/acme", provider_id="acme"),
            notification(id="loads", vendor="generic_post", url=rec.url + "/loads", events=["load.failed"]),
            notification(id="off", vendor="generic_post", url=rec.url + "/off", is_enabled=False),
        ]
        events = [sample_event(), sample_event(provider_id="globex", key="k2", type=ev.LOAD_FAILED, stream_id="s")]
        results = notify(subs, events, allow_internal_hosts=True, policy=FAST)
    assert all(r.delivered for r in results)
    got = sorted((r.path, r.json()["data"]["provider_id"], r.json()["type"]) for r in rec.received)
    assert got == [
        ("/acme", "acme", "extract.failed"),
        ("/all", "acme", "extract.failed"),
        ("/all", "globex", "load.failed"),
        ("/loads", "globex", "load.failed"),
    ]


# ---------------------------------------------------------------------- the API: /webhooks


@pytest.fixture
def catalog_key(monkeypatch) -> str:
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    monkeypatch.setenv("PREQUEL_CATALOG_KEY", key)
    monkeypatch.delenv("PREQUEL_CATALOG_URL", raising=False)
    monkeypatch.delenv("PREQUEL_CONFIG", raising=False)
    return key


def test_webhooks_crud_secrets_and_scoping(tmp_path, catalog_key):
    with running(tmp_path) as api, api.client() as company:
        lake = data(
            company.post(
                "/import/datalakes",
                json={"datalake": {"name": "lake", "storage": "local", "local": {"path": str(tmp_path / "lake")}}},
            )
        )["datalake"]["id"]
        for provider in ("acme", "globex"):
            body = {"provider": {"id": provider, "name": provider, "datalake_id": lake, "products": ["all"]}}
            data(company.post("/import/providers", json=body))
        _, acme_key = api.catalog.create_key(provider_id="acme")
        _, globex_key = api.catalog.create_key(provider_id="globex")

        # the company: a webhook of every provider (on loopback: its own network is its business)
        made = data(
            company.post(
                "/webhooks",
                json={
                    "webhook": {
                        "name": "ops",
                        "vendor": "generic_post",
                        "url": "http://127.0.0.1:9/ops",
                        "api_key": API_KEY,
                    }
                },
            )
        )["webhook"]
        glob_id = made["id"]
        assert made["api_key"] == "********" and made["provider_id"] is None
        assert made["events"] == list(ev.EVENT_TYPES) and made["is_enabled"] is True
        assert made["vendor"] == "generic_post" and made["name"] == "ops" and made["created_at"]
        slack = data(
            company.post("/webhooks", json={"webhook": {"vendor": "slack", "url": SLACK_URL, "provider_id": "globex"}})
        )
        slack_id = slack["webhook"]["id"]
        assert slack["webhook"]["url"] == "https://hooks.slack.com/services/********"

        # a provider's key: its own provider's webhooks only
        with httpx.Client(base_url=api.url, headers={"X-API-KEY": acme_key}, timeout=30) as acme:
            mine = data(
                acme.post(
                    "/webhooks",
                    json={"webhook": {"vendor": "pagerduty", "api_key": "rk", "events": ["extract.failed"]}},
                )
            )
            mine_id = mine["webhook"]["id"]
            assert mine["webhook"]["provider_id"] == "acme"  # scoped to the key's provider
            listed = data(acme.get("/webhooks"))
            assert [w["id"] for w in listed["webhooks"]] == [mine_id] and listed["has_next"] is False
            for other in (glob_id, slack_id):
                assert error(acme.get(f"/webhooks/{other}"), 404) == f"no webhook with id '{other}'"
                assert error(acme.patch(f"/webhooks/{other}", json={"webhook": {"name": "x"}}), 404)
                assert error(acme.delete(f"/webhooks/{other}"), 404)
            message = error(
                acme.post(
                    "/webhooks", json={"webhook": {"vendor": "pagerduty", "api_key": "k", "provider_id": "globex"}}
                ),
                400,
            )
            assert "webhook.provider_id: no provider with id 'globex'" in message
            assert "every provider" in error(
                acme.post("/webhooks", json={"webhook": {"vendor": "pagerduty", "api_key": "k", "provider_id": None}}),
                403,
            )
            assert error(acme.patch(f"/webhooks/{mine_id}", json={"webhook": {"provider_id": "globex"}}), 400)
            for url in (
                "http://127.0.0.1:8800/x",
                "http://localhost/x",
                "http://169.254.169.254/latest",
                "http://10.0.0.5/hook",
                "http://[::1]/x",
            ):
                body = {"webhook": {"vendor": "generic_post", "url": url}}
                assert "webhook.url" in error(acme.post("/webhooks", json=body), 400), url
            bad = error(
                acme.post("/webhooks", json={"webhook": {"vendor": "slack", "url": "https://example.com/x"}}), 400
            )
            assert "webhook.url" in bad and "hooks.slack.com/services/" in bad
            assert "webhook.events[0]" in error(
                acme.post("/webhooks", json={"webhook": {"vendor": "pagerduty", "api_key": "k", "events": ["x"]}}), 400
            )
            assert '{"webhook": {...}}' in error(acme.post("/webhooks", json={"notification": {}}), 400)
            assert error(
                acme.post("/webhooks", json={"webhook": {"vendor": "pagerduty", "api_key": "k", "id": "mine"}}), 400
            )
            # PATCH: partial; the body as GET showed it keeps the key
            got = data(acme.get(f"/webhooks/{mine_id}"))["webhook"]
            assert got["api_key"] == "********"
            changed = data(
                acme.patch(
                    f"/webhooks/{mine_id}",
                    json={"webhook": {**{k: got[k] for k in ("api_key", "name")}, "events": ["load.failed"]}},
                )
            )
            assert changed["webhook"]["events"] == ["load.failed"]
            assert api.service.config().notification(mine_id).api_key.reveal() == "rk"
            assert data(acme.delete(f"/webhooks/{mine_id}"))["webhook"] == {"id": mine_id}
            assert error(acme.get(f"/webhooks/{mine_id}"), 404)

        with httpx.Client(base_url=api.url, headers={"X-API-KEY": globex_key}, timeout=30) as globex:
            assert [w["id"] for w in data(globex.get("/webhooks"))["webhooks"]] == [slack_id]
            # a Slack webhook sent back as GET showed it keeps its URL
            shown = data(globex.get(f"/webhooks/{slack_id}"))["webhook"]
            data(globex.patch(f"/webhooks/{slack_id}", json={"webhook": {"url": shown["url"], "name": "chat"}}))
            assert api.service.config().notification(slack_id).url == SLACK_URL

        # the company sees and manages all
        everything = data(company.get("/webhooks?page_size=1"))
        assert len(everything["webhooks"]) == 1 and everything["has_next"] is True
        assert {w["id"] for w in data(company.get("/webhooks"))["webhooks"]} == {glob_id, slack_id}
        data(company.patch(f"/webhooks/{glob_id}", json={"webhook": {"is_enabled": False}}))
        assert api.service.config().notification(glob_id).is_enabled is False
        # a provider with webhooks cannot be deleted from under them
        assert "used by" in error(company.delete("/import/providers/globex"), 400)
        data(company.delete(f"/webhooks/{slack_id}"))
        assert error(company.get("/import/notifications"), 404)  # served at /webhooks only

        # secrets sealed at rest, never in an answer
        for entry in api.catalog.entries():
            assert API_KEY not in json.dumps(entry.body) and "sl4ckS3cretToken" not in json.dumps(entry.body)
        assert API_KEY not in company.get("/webhooks").text
        doc = company.get("/openapi.json").json()
        assert {"post", "get"} <= set(doc["paths"]["/webhooks"]) and {"get", "patch", "delete"} <= set(
            doc["paths"]["/webhooks/{id}"]
        )
        schemas = doc["components"]["schemas"]
        assert schemas["CreateWebhookRequest"]["required"] == ["webhook"]
        assert (
            "vendor" in schemas["WebhookOptions"]["properties"] and "id" not in schemas["WebhookOptions"]["properties"]
        )
        assert not any(p.startswith("/import/notifications") for p in doc["paths"])


# ---------------------------------------------------------------------- Dagster: the sensors


def pipeline_config(
    tmp_path: Path, *, source: dict[str, Any], url: str, notifications: list[dict[str, Any]]
) -> dict[str, Any]:
    return base_config(
        sources=[source],
        datasets=[
            {
                "id": "users",
                "name": "users",
                "source_id": source["id"],
                **(
                    {"method": "glob", "glob": {"pattern": "users.csv", "file_format": "csv"}}
                    if source["vendor"] == "local"
                    else {"table": {"source_table_name": "users"}}
                ),
                "type": "dimension",
                "dimension": {"primary_key_column": "id"},
                "frequency_minutes": 10,
            }
        ],
        destinations=[
            {
                "id": "app",
                "name": "app",
                "type": "webhook_batch",
                "record_schema": {
                    "type": "object",
                    "required": ["id", "email"],
                    "properties": {"id": {"type": "integer"}, "email": {"type": "string", "pattern": "@"}},
                },
                "webhook_batch": {"request_template": {"uri": url + "/batches"}, "max_attempts": 1},
            }
        ],
        streams=[
            {
                "id": "users-app",
                "name": "users",
                "dataset_id": "users",
                "destination_id": "app",
                "mappings": [
                    {"target_field": f, "field_type": "field", "column": {"name": f}} for f in ("id", "email")
                ],
            }
        ],
        notifications=notifications,
    )


def sensor_named(defs: dg.Definitions, name: str) -> Any:
    return next(s for s in defs.sensors if s.name == name)


def evaluate_run_sensor(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, result: Any) -> Any:
    run = instance.get_run_by_id(result.run_id)
    status_event = result.get_run_failure_event() if not result.success else result.get_run_success_event()
    context = dg.build_run_status_sensor_context(
        sensor_name=name, dagster_event=status_event, dagster_instance=instance, dagster_run=run
    )
    if not result.success:
        context = context.for_run_failure()
    return sensor_named(defs, name)(context)


def test_no_sensors_without_an_enabled_notification(tmp_path):
    config = pipeline_config(
        tmp_path,
        source={"id": "files", "name": "f", "vendor": "local", "provider_id": "acme", "local": {"path": "drop"}},
        url="http://127.0.0.1:9",
        notifications=[{"id": "off", "vendor": "generic_post", "url": "https://x.io", "is_enabled": False}],
    )
    names = {s.name for s in build_definitions(load_config(config, base_dir=str(tmp_path))).sensors}
    assert not any(n.startswith("prequel_notify") for n in names)
    config["notifications"][0]["is_enabled"] = True
    names = {s.name for s in build_definitions(load_config(config, base_dir=str(tmp_path))).sensors}
    assert {"prequel_notify_run_failures", "prequel_notify_run_checks", "prequel_notify_freshness"} <= names


def test_a_failing_extract_run_notifies_extract_failed(tmp_path, monkeypatch, caplog):
    """A PostgreSQL source on a closed port: the run fails in a real Dagster instance, and the run-failure
    sensor sends extract.failed (not load.failed: the load never ran) to the subscriptions that match."""
    monkeypatch.setenv("PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS", "true")  # (the endpoint is on loopback)
    monkeypatch.setenv("PREQUEL_DAGSTER_URL", "http://dagster.example:3000/")
    monkeypatch.setenv("NOTIFY_TEST_PG_PASSWORD", "pg-Secret-98765")
    caplog.set_level(logging.INFO)
    closed = free_port()
    with recorder() as rec:
        config = pipeline_config(
            tmp_path,
            source={
                "id": "acme-pg",
                "name": "pg",
                "vendor": "postgres",
                "provider_id": "acme",
                "postgres": {
                    "host": "127.0.0.1",
                    "port": closed,
                    "database": "acme",
                    "connection_timeout_in_seconds": 3,
                    "password_auth": {"username": "prequel", "password": "${NOTIFY_TEST_PG_PASSWORD}"},
                },
            },
            url=rec.url,
            notifications=[
                {
                    "id": "ops",
                    "vendor": "generic_post",
                    "url": rec.url + "/ops",
                    "signing": {"private_key": PRIVATE_PEM.decode()},
                },
                {
                    "id": "acme-extracts",
                    "vendor": "generic_get",
                    "url": rec.url + "/acme",
                    "provider_id": "acme",
                    "events": ["extract.failed"],
                },
                {
                    "id": "acme-loads",
                    "vendor": "generic_post",
                    "url": rec.url + "/loads",
                    "provider_id": "acme",
                    "events": ["load.failed"],
                },
                {"id": "globex", "vendor": "generic_post", "url": rec.url + "/globex", "provider_id": "globex"},
            ],
        )
        defs = build_definitions(load_config(config, base_dir=str(tmp_path)))
        with dg.instance_for_test() as instance:
            result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, raise_on_error=False
            )
            assert not result.success
            outcome = evaluate_run_sensor(defs, "prequel_notify_run_failures", instance, result)
    assert "2 of 2 notification(s) delivered" in str(outcome.skip_message), outcome
    assert sorted(r.path for r in rec.received) == ["/acme", "/ops"]
    ops = next(r for r in rec.received if r.path == "/ops")
    verify_request(PUBLIC_PEM, ops.headers, ops.body)
    body = ops.json()
    assert body["type"] == "extract.failed"
    event = body["data"]
    assert event["provider_id"] == "acme" and event["dataset_id"] == "users" and event["run_id"] == result.run_id
    assert "stream_id" not in event
    assert str(closed) in event["message"] and "refused" in event["message"].lower()
    assert not event["message"].startswith("prequel/acme/users")  # the why, without the asset key
    assert event["link"] == f"http://dagster.example:3000/runs/{result.run_id}"
    params = dict(parse_qsl(next(r for r in rec.received if r.path == "/acme").query))
    assert params["type"] == "extract.failed" and params["dataset_id"] == "users" and params["id"] == event["id"]
    assert "pg-Secret-98765" not in json.dumps(body) and "pg-Secret-98765" not in caplog.text


def test_a_failing_load_notifies_load_failed_for_its_stream(tmp_path, monkeypatch):
    """The extract succeeds, the destination does not answer: load.failed for the stream, nothing else."""
    monkeypatch.setenv("PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS", "true")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "users.csv").write_text("id,email\n1,a@x.io\n")
    with recorder() as rec:
        config = pipeline_config(
            tmp_path,
            source={"id": "files", "name": "f", "vendor": "local", "provider_id": "acme", "local": {"path": "drop"}},
            url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
            notifications=[{"id": "all", "vendor": "generic_post", "url": rec.url + "/n"}],
        )
        config["destinations"][0]["webhook_batch"].update(
            retry_initial_backoff_seconds=0, max_failed_batches_in_a_row=1, timeout_seconds=2
        )
        defs = build_definitions(load_config(config, base_dir=str(tmp_path)))
        with dg.instance_for_test() as instance:
            result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, raise_on_error=False
            )
            assert not result.success
            evaluate_run_sensor(defs, "prequel_notify_run_failures", instance, result)
    (got,) = [r.json() for r in rec.received]
    assert got["type"] == "load.failed"
    assert got["data"]["stream_id"] == "users-app" and got["data"]["dataset_id"] == "users"
    assert got["data"]["provider_id"] == "acme" and got["data"]["message"]
    assert not got["data"]["message"].startswith("prequel/"), got  # the why, without the asset key


def test_dead_letters_growing_and_a_failing_check_are_notified_once_each(tmp_path, monkeypatch):
    """Records the destination rejects go to the dead letter (its check fails): dead_letters.grew when the
    count grows, not while it stays; record_schema_conformance failing is check.failed when it starts."""
    monkeypatch.setenv("PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS", "true")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "users.csv").write_text("id,email\n1,a@x.io\n2,no-at-sign\n")
    with recorder() as rec:
        config = pipeline_config(
            tmp_path,
            source={"id": "files", "name": "f", "vendor": "local", "provider_id": "acme", "local": {"path": "drop"}},
            url=rec.url,
            notifications=[
                {"id": "acme-checks", "vendor": "generic_post", "url": rec.url + "/n", "provider_id": "acme"}
            ],
        )
        defs = build_definitions(load_config(config, base_dir=str(tmp_path)))
        job = defs.resolve_implicit_global_asset_job_def()

        def run_and_notify(instance: dg.DagsterInstance) -> list[dict[str, Any]]:
            for _ in range(8):
                rec.answer(400, b"rejected")  # the destination refuses every batch
            before = len([r for r in rec.received if r.path == "/n"])
            result = job.execute_in_process(instance=instance, raise_on_error=False)
            assert result.success, [e.message for e in result.all_events if e.is_failure]
            rec.answers.clear()
            evaluate_run_sensor(defs, "prequel_notify_run_checks", instance, result)
            return [r.json() for r in rec.received if r.path == "/n"][before:]

        with dg.instance_for_test() as instance:
            first = run_and_notify(instance)
            kinds = sorted(b["type"] for b in first)
            assert kinds == ["check.failed", "dead_letters.grew"], first
            grew = next(b["data"] for b in first if b["type"] == "dead_letters.grew")
            assert grew["stream_id"] == "users-app" and grew["provider_id"] == "acme"
            assert grew["check_name"] == "dead_letters_empty" and grew["details"]["previous_dead_letter_records"] == 0
            count = grew["details"]["dead_letter_records"]
            assert count >= 1
            failed = next(b["data"] for b in first if b["type"] == "check.failed")
            assert failed["check_name"] == "record_schema_conformance" and failed["details"]["records_invalid"] >= 1

            assert run_and_notify(instance) == []  # nothing new: nothing grew, the check was failing already

            (drop / "users.csv").write_text("id,email\n1,a@x.io\n2,no-at-sign\n3,c@x.io\n")
            third = run_and_notify(instance)
            assert [b["type"] for b in third] == ["dead_letters.grew"], third
            assert third[0]["data"]["details"]["previous_dead_letter_records"] == count
            assert third[0]["data"]["details"]["dead_letter_records"] > count


def test_a_freshness_miss_is_notified_from_the_freshness_daemons_record(tmp_path, monkeypatch):
    import asyncio

    from dagster._core.loader import LoadingContextForTest
    from dagster._core.test_utils import freeze_time
    from dagster._daemon.freshness import FreshnessDaemon

    monkeypatch.setenv("PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS", "true")
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "users.csv").write_text("id,email\n1,a@x.io\n")
    with recorder() as rec:
        config = pipeline_config(
            tmp_path,
            source={"id": "files", "name": "f", "vendor": "local", "provider_id": "acme", "local": {"path": "drop"}},
            url=rec.url,
            notifications=[
                {"id": "fresh", "vendor": "generic_post", "url": rec.url + "/n", "events": ["freshness.missed"]}
            ],
        )
        defs = build_definitions(load_config(config, base_dir=str(tmp_path)))
        sensor = sensor_named(defs, "prequel_notify_freshness")
        graph = defs.resolve_asset_graph()
        key = dg.AssetKey(["prequel", "acme", "users"])
        with dg.instance_for_test() as instance:
            started = sensor(dg.build_sensor_context(instance=instance))
            assert started.cursor is not None
            job = defs.resolve_implicit_global_asset_job_def()
            assert job.execute_in_process(instance=instance, asset_selection=[key]).success
            at = instance.get_latest_materialization_event(key).timestamp
            daemon = FreshnessDaemon()
            for offset in (60, 25 * 60, 30 * 60):  # pass, fail (after 2 x 10 minutes), still failing
                with freeze_time(at + offset):
                    asyncio.run(daemon._evaluate_asset(context=LoadingContextForTest(instance), node=graph.get(key)))
            result = sensor(dg.build_sensor_context(instance=instance, cursor=started.cursor))
            again = sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
    (got,) = [r.json() for r in rec.received if r.path == "/n"]
    assert got["type"] == "freshness.missed"
    assert got["data"]["provider_id"] == "acme" and got["data"]["dataset_id"] == "users"
    assert "within 20 minutes" in got["data"]["message"] and got["data"]["details"]["fail_window_minutes"] == 20
    assert again.cursor == result.cursor and "nothing to notify" in (again.skip_reason.skip_message or "")
