"""HTTP delivery with retries: exponential backoff with full jitter, ``Retry-After`` honoured.

Retried: 408, 425, 429, 5xx, timeouts and dropped connections. Any other 4xx rejects the
batch for good (its records go to the dead letter). 2xx is acceptance.
"""

import email.utils
import gzip
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from ..config.errors import DeliveryError
from ..config.models import Destination
from ..config.secrets import MissingEnvironmentVariable, redact
from .signing import load_private_key, sign_request

RETRYABLE_STATUS = {408, 425, 429}


@dataclass
class Outcome:
    accepted: bool
    status: int | None
    attempts: int
    detail: str  # the answer (status and a bounded body excerpt) or the transport error

    @property
    def retries(self) -> int:
        return self.attempts - 1


class TokenBucket:
    """``max_records_per_minute`` pacing: records are spent before each request."""

    def __init__(self, per_minute: int, capacity: int, clock: Callable[[], float] = time.monotonic):
        self.rate = per_minute / 60.0
        self.capacity = max(1, capacity)
        self.tokens = float(self.capacity)
        self.clock = clock
        self.updated = clock()
        self.lock = threading.Lock()

    def take(self, n: int, sleep: Callable[[float], None] = time.sleep) -> None:
        n = min(n, self.capacity)
        while True:
            with self.lock:
                now = self.clock()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= n:
                    self.tokens -= n
                    return
                wait = (n - self.tokens) / self.rate
            sleep(wait)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header; None means use the backoff (absent, 0 or less, junk)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return seconds if seconds > 0 else None


class WebhookClient:
    """Sends request bodies to one destination for one provider: pacing, signing, retries."""

    def __init__(
        self,
        destination: Destination,
        provider_id: str,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.destination = destination
        self.provider_id = provider_id
        self.settings = destination.webhook
        self.method = self.settings.request_template.method
        try:
            for value in self.settings.request_template.headers.values():
                value.reveal()  # every referenced variable is set: said now, naming the destination
            self.signing_key = (
                load_private_key(destination.signing.private_key.reveal()) if destination.signing else None
            )
        except MissingEnvironmentVariable as exc:
            raise DeliveryError(f"destination '{destination.id}': {exc}") from None
        except ValueError as exc:
            raise DeliveryError(f"destination '{destination.id}' signing.private_key: {exc}") from None
        self.sleep = sleep
        concurrency = destination.concurrency
        self.client = httpx.Client(
            timeout=self.settings.timeout_seconds,
            transport=transport,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        per_second = destination.max_records_per_minute / 60.0
        self.bucket = TokenBucket(destination.max_records_per_minute, capacity=max(1, int(per_second)))

    def close(self) -> None:
        self.client.close()

    def backoff(self, attempt: int) -> float:
        base = self.settings.retry_initial_backoff_seconds * (2 ** (attempt - 1))
        return random.uniform(0, min(self.settings.retry_max_backoff_seconds, base))

    def send(
        self,
        body: bytes,
        *,
        uri: str,
        headers: dict[str, str],
        idempotency_key: str,
        records: int,
    ) -> Outcome:
        """Deliver one body, retrying what is retryable; never raises for HTTP outcomes."""
        headers = dict(headers)
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = idempotency_key
        if getattr(self.settings, "gzip", False):
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        self.bucket.take(records, self.sleep)
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            if self.signing_key is not None:  # signed per attempt: the timestamp is the send time
                headers.update(sign_request(self.signing_key, body))
            try:
                response = self.client.request(self.method, uri, content=body, headers=headers)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                detail = f"{type(exc).__name__}: {redact(str(exc)) or 'connection dropped'}"
            else:
                if 200 <= response.status_code < 300:
                    return Outcome(True, response.status_code, attempt, f"HTTP {response.status_code}")
                detail = f"HTTP {response.status_code}: {redact(response.text[:500])}"
                if response.status_code not in RETRYABLE_STATUS and response.status_code < 500:
                    return Outcome(False, response.status_code, attempt, detail)
                wait = parse_retry_after(response.headers.get("Retry-After"))
            if attempt >= self.settings.max_attempts:
                return Outcome(False, None, attempt, f"gave up after {attempt} attempts; last: {detail}")
            self.sleep(wait if wait is not None else self.backoff(attempt))
