"""The HTTP request each vendor takes for one event, one function per vendor.

- ``generic_post``: ``POST url`` with Prequel's envelope ``{"type", "version", "created_at", "data"}``.
- ``generic_get``: ``GET url`` with the envelope's fields as query parameters (``type``, ``version``,
  ``created_at``, then ``data``'s: ``id``, ``provider_id``, ``dataset_id``, ...; ``details.<name>`` for
  the details), added to the URL's own parameters.
- ``slack``: an incoming-webhook message, ``{"text": ..., "blocks": [...]}``.
- ``pagerduty``: an Events API v2 ``trigger`` to ``https://events.pagerduty.com/v2/enqueue``.
- ``datadog``: an Events API event to ``https://api.datadoghq.com/api/v1/events`` (``DD-API-KEY``).

Tenant values (ids, error messages) only ever go into a JSON body (escaped by the encoder), into
query parameters (percent-encoded) or into Slack text (``&``, ``<`` and ``>`` escaped, so no mention or
link can be made of them): the URL's scheme, host and path, and every header, come from the
notification's config alone.
"""

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
import orjson

from ..config.models import Notification
from .events import FRESHNESS_MISSED, NotificationEvent, rfc3339

VERSION = "2023-12-01"
"""``version`` of the envelope: the API version of this product (Prequel's payload versioning is in flux)."""
PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
DATADOG_URL = "https://api.datadoghq.com/api/v1/events"
USER_AGENT = "prequel-dagster"
API_KEY_HEADER = "X-API-KEY"


@dataclass(frozen=True)
class HttpRequest:
    """One request to make. ``signed`` is what the signature covers: the body, or for a GET the raw
    query string as sent (the part after ``?``)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    signed: bytes


def envelope(notification: Notification, event: NotificationEvent, now: dt.datetime) -> dict[str, object]:
    """Prequel's event envelope; ``data`` holds the event and the id of the webhook it was sent for."""
    return {
        "type": event.type,
        "version": VERSION,
        "created_at": rfc3339(now),
        "data": {**event.data(), "webhook_id": notification.id},
    }


def _json(value: object) -> bytes:
    return orjson.dumps(value)


def _headers(
    event: NotificationEvent, api_key: str | None, *, json_body: bool, key_header: str | None
) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Idempotency-Key": event.id}
    if json_body:
        headers["Content-Type"] = "application/json"
    if api_key is not None and key_header is not None:
        headers[key_header] = api_key
    return headers


def generic_post(
    notification: Notification, event: NotificationEvent, *, api_key: str | None, now: dt.datetime
) -> HttpRequest:
    body = _json(envelope(notification, event, now))
    headers = _headers(event, api_key, json_body=True, key_header=API_KEY_HEADER)
    return HttpRequest("POST", _url(notification), headers, body, body)


def query_parameters(notification: Notification, event: NotificationEvent, now: dt.datetime) -> list[tuple[str, str]]:
    """The envelope flattened: its top fields, then ``data``'s, then ``details.<name>``; values as text."""
    env = envelope(notification, event, now)
    pairs = [(k, str(env[k])) for k in ("type", "version", "created_at")]
    data = env["data"]
    assert isinstance(data, dict)
    for name, value in data.items():
        if name == "details":
            pairs += [(f"details.{k}", _text(v)) for k, v in value.items()]
        else:
            pairs.append((name, _text(value)))
    return pairs


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def generic_get(
    notification: Notification, event: NotificationEvent, *, api_key: str | None, now: dt.datetime
) -> HttpRequest:
    parts = urlsplit(_url(notification))
    added = urlencode(query_parameters(notification, event, now), quote_via=quote, safe="")
    query = f"{parts.query}&{added}" if parts.query else added
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    headers = _headers(event, api_key, json_body=False, key_header=API_KEY_HEADER)
    return HttpRequest("GET", url, headers, b"", httpx.URL(url).query)  # the query exactly as it is sent


_SLACK_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def slack_escape(text: str) -> str:
    """Text for Slack's mrkdwn: ``&``, ``<`` and ``>`` escaped, as Slack asks, so that a tenant's value
    cannot make a link, a mention (``<!channel>``) or a user reference."""
    return re.sub(r"[&<>]", lambda m: _SLACK_ESCAPES[m.group(0)], text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_body(event: NotificationEvent) -> dict[str, object]:
    """An incoming-webhook message: ``text`` (the notification's plain fallback) and Block Kit blocks
    (a header, the ids as fields, the message as plain text, the event type, time and link)."""
    fields = [("Provider", event.provider_id)]
    if event.dataset_id:
        fields.append(("Dataset", event.dataset_id))
    if event.stream_id:
        fields.append(("Stream", event.stream_id))
    if event.check_name:
        fields.append(("Check", event.check_name))
    if event.run_id:
        fields.append(("Run", event.run_id))
    context = f"`{event.type}` · {event.occurred_at_text}"
    if event.link:
        context += f" · <{slack_escape(event.link).replace('|', '%7C')}|Open in Dagster>"
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(event.title, 150), "emoji": False}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": _clip(f"*{name}*\n{slack_escape(value)}", 2000)} for name, value in fields
            ],
        },
        {"type": "section", "text": {"type": "plain_text", "text": _clip(event.message or "(no message)", 3000)}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(context, 3000)}]},
    ]
    text = slack_escape(f"{event.title}: {event.message}" if event.message else event.title)
    return {"text": _clip(text, 3000), "blocks": blocks}


def slack(
    notification: Notification, event: NotificationEvent, *, api_key: str | None, now: dt.datetime
) -> HttpRequest:
    body = _json(slack_body(event))
    return HttpRequest("POST", _url(notification), _headers(event, None, json_body=True, key_header=None), body, body)


def pagerduty_dedup_key(event: NotificationEvent) -> str:
    """One PagerDuty alert per failing thing (not per run): a repeat of the same failure is grouped into
    the open alert rather than opening another."""
    target = event.stream_id or event.dataset_id or ""
    text = f"prequel-dagster/{event.type}/{event.provider_id}/{target}/{event.check_name or ''}"
    return text if len(text) <= 255 else text[:190] + "/" + hashlib.sha256(text.encode()).hexdigest()


def pagerduty_body(event: NotificationEvent, routing_key: str) -> dict[str, object]:
    payload: dict[str, object] = {
        "summary": _clip(f"{event.title}: {event.message}" if event.message else event.title, 1024),
        "source": f"prequel-dagster/{event.provider_id}",
        "severity": "warning" if event.type == FRESHNESS_MISSED else "error",
        "timestamp": event.occurred_at_text,
        "component": event.stream_id or event.dataset_id or event.provider_id,
        "group": event.provider_id,
        "class": event.type,
        "custom_details": event.data(),
    }
    body: dict[str, object] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": pagerduty_dedup_key(event),
        "payload": payload,
        "client": USER_AGENT,
    }
    if event.link:
        body["links"] = [{"href": event.link, "text": "Open in Dagster"}]
    return body


def pagerduty(
    notification: Notification, event: NotificationEvent, *, api_key: str | None, now: dt.datetime
) -> HttpRequest:
    body = _json(pagerduty_body(event, api_key or ""))
    url = notification.url or PAGERDUTY_URL
    return HttpRequest("POST", url, _headers(event, None, json_body=True, key_header=None), body, body)


_TAG_UNSAFE = re.compile(r"[^a-z0-9_.:/-]")


def datadog_tag(name: str, value: str) -> str:
    """``name:value`` in the characters Datadog keeps in tags (others become ``_``), at most 200."""
    return _clip(_TAG_UNSAFE.sub("_", f"{name}:{value}".lower()), 200)


def datadog_body(event: NotificationEvent) -> dict[str, object]:
    tags = [datadog_tag("source", "prequel-dagster"), datadog_tag("prequel_event", event.type)]
    tags.append(datadog_tag("prequel_provider", event.provider_id))
    if event.dataset_id:
        tags.append(datadog_tag("prequel_dataset", event.dataset_id))
    if event.stream_id:
        tags.append(datadog_tag("prequel_stream", event.stream_id))
    if event.check_name:
        tags.append(datadog_tag("prequel_check", event.check_name))
    lines = [event.message or "(no message)", "", f"event: {event.type}", f"provider: {event.provider_id}"]
    lines += [
        f"{name}: {value}" for name, value in event.data().items() if name in ("dataset_id", "stream_id", "run_id")
    ]
    if event.link:
        lines.append(f"link: {event.link}")
    return {
        "title": _clip(event.title, 100),
        "text": _clip("\n".join(lines), 4000),
        "alert_type": "error",
        "tags": tags,
        "aggregation_key": hashlib.sha256(pagerduty_dedup_key(event).encode()).hexdigest()[:32],
        "source_type_name": "prequel-dagster",
        "date_happened": int(event.occurred_at.timestamp()),
    }


def datadog(
    notification: Notification, event: NotificationEvent, *, api_key: str | None, now: dt.datetime
) -> HttpRequest:
    body = _json(datadog_body(event))
    url = notification.url or DATADOG_URL
    headers = _headers(event, api_key, json_body=True, key_header="DD-API-KEY")
    return HttpRequest("POST", url, headers, body, body)


BUILDERS = {
    "generic_post": generic_post,
    "generic_get": generic_get,
    "slack": slack,
    "pagerduty": pagerduty,
    "datadog": datadog,
}


def build_request(
    notification: Notification, event: NotificationEvent, *, api_key: str | None, now: dt.datetime | None = None
) -> HttpRequest:
    """The request ``notification``'s vendor takes for ``event`` (``api_key``: the revealed key, if any)."""
    return BUILDERS[notification.vendor](notification, event, api_key=api_key, now=now or dt.datetime.now(dt.UTC))


def _url(notification: Notification) -> str:
    if not notification.url:
        raise ValueError(f"notification '{notification.id}': url is missing")
    return notification.url
