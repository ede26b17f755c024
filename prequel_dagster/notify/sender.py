"""Sending notifications: signed like deliveries, retried, bounded in time, never to internal hosts
of a provider's choosing, and never logging a secret.

- Signing: with a ``signing`` block, every attempt carries ``X-Prequel-Webhook-Timestamp``,
  ``X-Prequel-Webhook-Signature`` and ``X-Prequel-Webhook-Digest`` exactly as a delivery does
  (``delivery/signing.py``) over the body, or for ``generic_get`` over the raw query string as sent.
- Retries: 408, 425, 429, 5xx, timeouts and dropped connections, with exponential backoff and full
  jitter, ``Retry-After`` honoured up to the backoff cap; any other answer is final. Redirects are not
  followed (one could lead inside the network).
- Internal hosts: a notification scoped to a provider may have been written by that provider's key, so
  its host must be a public address, checked as written and as resolved (loopback, private, link-local
  such as the cloud metadata service, multicast and reserved ranges are refused). Notifications of every
  provider are the company's own (YAML, or the company's key) and may go anywhere;
  ``PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS=true`` lifts the check for all (a private network's alerting).
- Logs name the notification, vendor, event and the URL's origin (never its path or query: a Slack
  webhook's path is its credential), with any answer excerpt redacted.
"""

import datetime as dt
import ipaddress
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..config.models import Notification
from ..config.secrets import MissingEnvironmentVariable, redact, register_secret_value
from ..delivery.signing import load_private_key, sign_request
from ..delivery.webhook import RETRYABLE_STATUS, parse_retry_after
from .events import NotificationEvent
from .payloads import HttpRequest, build_request

log = logging.getLogger("prequel_dagster.notify")

ALLOW_INTERNAL_ENV_VAR = "PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS"
Resolver = Callable[..., Sequence[tuple[Any, ...]]]


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_attempts`` tries of ``timeout_seconds`` each, with backoff between them: about 35 s
    at worst by default, inside a sensor tick's minute."""

    max_attempts: int = 3
    timeout_seconds: float = 10.0
    initial_backoff_seconds: float = 1.0
    max_backoff_seconds: float = 5.0

    def backoff(self, attempt: int) -> float:
        base = self.initial_backoff_seconds * (2 ** (attempt - 1))
        return random.uniform(0, min(self.max_backoff_seconds, base))


@dataclass(frozen=True)
class SendResult:
    """What happened to one event for one notification. ``detail`` is safe to log and show."""

    notification_id: str
    vendor: str
    event_type: str
    event_id: str
    delivered: bool
    status: int | None
    attempts: int
    detail: str
    refused: bool = False  # not sent at all: an internal host, a missing secret, a bad key

    def __str__(self) -> str:
        what = "delivered" if self.delivered else "refused" if self.refused else "not delivered"
        return (
            f"notification '{self.notification_id}' ({self.vendor}) {self.event_type} {self.event_id}: "
            f"{what} after {self.attempts} attempt(s) ({self.detail})"
        )


# ---------------------------------------------------------------------------- internal hosts


def internal_hosts_allowed(notification: Notification, environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``notification`` may reach loopback and private addresses: one of every provider's events
    (only the company declares those), or when the operator sets ``PREQUEL_NOTIFY_ALLOW_INTERNAL_HOSTS``."""
    env = os.environ if environ is None else environ
    return notification.provider_id is None or env.get(ALLOW_INTERNAL_ENV_VAR, "").lower() in ("1", "true", "yes")


def _address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:
        return "this machine"
    if address.is_link_local:
        return "a link-local address (such as the cloud metadata service)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private or address.is_reserved or not address.is_global:
        return "a private or reserved network address"
    return None


def literal_host_problem(host: str) -> str | None:
    """Why ``host`` as written (a name or an IP literal) is internal; None if it is not (as far as can be
    told without resolving it)."""
    name = host.strip().strip("[]").lower().rstrip(".")
    if not name:
        return "the URL has no host"
    if name in ("localhost", "localhost.localdomain") or name.endswith(".localhost"):
        return f"'{host}' is this machine; a notification must go to a public host"
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None
    what = _address_problem(address)
    return f"'{host}' is {what}; a notification must go to a public host" if what else None


def host_problem(url: str, resolve: Resolver = socket.getaddrinfo) -> str | None:
    """Why ``url``'s host is internal, as written or as resolved now; None if it is public. A name that
    does not resolve is left to the request (which fails on it)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    problem = literal_host_problem(host)
    if problem:
        return problem
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = resolve(host, port, 0, socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError):
        return None
    for info in found:
        try:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        except ValueError:
            continue
        what = _address_problem(address)
        if what:
            return f"'{host}' resolves to {address}, {what}; a notification must go to a public host"
    return None


def origin(url: str) -> str:
    """``scheme://host[:port]``: what logs show of a URL."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


# ---------------------------------------------------------------------------- sending


def send(
    notification: Notification,
    event: NotificationEvent,
    *,
    allow_internal_hosts: bool | None = None,
    policy: RetryPolicy = RetryPolicy(),
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    resolve: Resolver = socket.getaddrinfo,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> SendResult:
    """Send one event to one notification's vendor; never raises for what the network or the receiver does.

    ``allow_internal_hosts`` None: :func:`internal_hosts_allowed` decides.
    """
    if allow_internal_hosts is None:
        allow_internal_hosts = internal_hosts_allowed(notification)

    def result(delivered: bool, status: int | None, attempts: int, detail: str, refused: bool = False) -> SendResult:
        found = SendResult(
            notification.id,
            notification.vendor,
            event.type,
            event.id,
            delivered,
            status,
            attempts,
            redact(detail),
            refused,
        )
        target = origin(request.url) if request is not None else "?"
        (log.info if delivered else log.warning)("%s to %s", found, target)
        return found

    request: HttpRequest | None = None
    try:
        api_key = notification.api_key.reveal() if notification.api_key is not None else None  # (now masked by redact)
        signing_key = load_private_key(notification.signing.private_key.reveal()) if notification.signing else None
    except MissingEnvironmentVariable as exc:
        return result(False, None, 0, f"not sent: {exc}", refused=True)
    except ValueError as exc:
        return result(False, None, 0, f"not sent: signing.private_key: {exc}", refused=True)
    _mask_url(notification)
    request = build_request(notification, event, api_key=api_key, now=now())
    if not allow_internal_hosts:
        problem = host_problem(request.url, resolve)
        if problem:
            return result(False, None, 0, f"not sent: {problem}", refused=True)

    headers = dict(request.headers)
    attempt = 0
    with httpx.Client(timeout=policy.timeout_seconds, transport=transport, follow_redirects=False) as client:
        while True:
            attempt += 1
            wait: float | None = None
            if signing_key is not None:  # signed per attempt: the timestamp is the send time
                headers.update(sign_request(signing_key, request.signed))
            try:
                response = client.request(request.method, request.url, content=request.body or None, headers=headers)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                detail = f"{type(exc).__name__}: {str(exc) or 'connection dropped'}"
            except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:  # a header or URL httpx will not send
                return result(False, None, attempt, f"the request could not be made ({type(exc).__name__}: {exc})")
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return result(True, status, attempt, f"HTTP {status}")
                detail = f"HTTP {status}: {_excerpt(response)}"
                if 300 <= status < 400:
                    return result(False, status, attempt, detail + " (redirects are not followed; give the final URL)")
                if status not in RETRYABLE_STATUS and status < 500:
                    return result(False, status, attempt, detail)
                wait = parse_retry_after(response.headers.get("Retry-After"))
            if attempt >= policy.max_attempts:
                return result(False, None, attempt, f"gave up after {attempt} attempts; last: {detail}")
            backoff = policy.backoff(attempt)
            sleep(min(wait, policy.max_backoff_seconds) if wait is not None else backoff)


class _RedactingFilter(logging.Filter):
    """httpx logs each request's full URL (at INFO): masked here like every other message."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_HTTPX_FILTER = _RedactingFilter()


def _mask_url(notification: Notification) -> None:
    """A Slack webhook's URL is its credential, and other URLs may carry tokens in their path or query:
    registered with ``redact`` (the whole URL, and a Slack URL's path, and any query), and httpx's own
    request log is redacted."""
    httpx_log = logging.getLogger("httpx")
    if _HTTPX_FILTER not in httpx_log.filters:
        httpx_log.addFilter(_HTTPX_FILTER)
    url = notification.url
    if not url:
        return
    register_secret_value(url)
    parts = urlsplit(url)
    if notification.vendor == "slack":
        register_secret_value(parts.path)
    if parts.query:
        register_secret_value(parts.query)


def _excerpt(response: httpx.Response) -> str:
    try:
        text = response.text
    except Exception:  # an undecodable body
        return "(body not text)"
    return " ".join(text[:200].split()) or "(empty body)"


def matching(notifications: Iterable[Notification], event: NotificationEvent) -> list[Notification]:
    """The enabled notifications that listen to this event's type, for its provider or every provider."""
    return [n for n in notifications if n.listens_to(event.type, event.provider_id)]


def notify(
    notifications: Sequence[Notification],
    events: Iterable[NotificationEvent],
    *,
    deadline_seconds: float = 45.0,
    workers: int = 4,
    **send_options: Any,
) -> list[SendResult]:
    """Send every event to each notification that listens to it, ``workers`` at a time. A send not started
    within ``deadline_seconds`` is skipped (reported, not sent): a sensor tick stays inside its minute."""
    jobs = [(n, e) for e in events for n in matching(notifications, e)]
    if not jobs:
        return []
    stop_at = time.monotonic() + deadline_seconds

    def one(job: tuple[Notification, NotificationEvent]) -> SendResult:
        notification, event = job
        if time.monotonic() > stop_at:
            skipped = SendResult(
                notification.id, notification.vendor, event.type, event.id, False, None, 0, "not sent: out of time"
            )
            log.warning("%s", skipped)
            return skipped
        return send(notification, event, **send_options)

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="prequel-notify") as pool:
        return list(pool.map(one, jobs))
