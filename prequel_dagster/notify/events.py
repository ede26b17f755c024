"""What a notification is about: one failure of one provider's extract, load, check or freshness."""

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config.models import NOTIFICATION_EVENT_TYPES
from ..config.secrets import redact

EXTRACT_FAILED = "extract.failed"
LOAD_FAILED = "load.failed"
DEAD_LETTERS_GREW = "dead_letters.grew"
CHECK_FAILED = "check.failed"
FRESHNESS_MISSED = "freshness.missed"
EVENT_TYPES = NOTIFICATION_EVENT_TYPES

MAX_MESSAGE_CHARS = 1000
_EVENT_NAMESPACE = uuid.UUID("5b1e7c44-5d7e-4c55-9a51-2f0c3c7d9a10")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

_TITLES = {
    EXTRACT_FAILED: "Extract failed",
    LOAD_FAILED: "Load failed",
    DEAD_LETTERS_GREW: "Dead letters grew",
    CHECK_FAILED: "Check failed",
    FRESHNESS_MISSED: "Freshness missed",
}


def clean_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """A message fit to leave the process: every secret revealed so far masked (``redact``), control
    characters other than newlines removed, at most ``limit`` characters."""
    text = _CONTROL.sub(" ", redact(text)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class NotificationEvent:
    """One event to notify. ``key`` names the occurrence itself (the run and asset, the check execution,
    the freshness change): the same occurrence found twice gets the same ``id``, which receivers can
    de-duplicate by. ``message`` is already redacted (build events with :func:`event`)."""

    type: str
    provider_id: str
    message: str
    occurred_at: dt.datetime
    key: str
    dataset_id: str | None = None
    stream_id: str | None = None
    run_id: str | None = None
    check_name: str | None = None
    link: str | None = None
    details: Mapping[str, int | float | str | bool | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown notification event type {self.type!r}; one of {', '.join(EVENT_TYPES)}")

    @property
    def id(self) -> str:
        """Stable per occurrence (a UUID derived from ``key``)."""
        return str(uuid.uuid5(_EVENT_NAMESPACE, f"{self.type}\n{self.key}"))

    @property
    def subject(self) -> str:
        """What failed: ``dataset 'users'``, ``stream 'users-app'``."""
        if self.stream_id is not None:
            return f"stream '{self.stream_id}'"
        if self.dataset_id is not None:
            return f"dataset '{self.dataset_id}'"
        return "provider"

    @property
    def title(self) -> str:
        """One line: ``Extract failed: dataset 'users' of provider 'acme'``."""
        check = f"{self.check_name} on " if self.check_name else ""
        return f"{_TITLES[self.type]}: {check}{self.subject} of provider '{self.provider_id}'"

    @property
    def occurred_at_text(self) -> str:
        return rfc3339(self.occurred_at)

    def data(self) -> dict[str, object]:
        """The event's fields as data (the ``data`` of Prequel's envelope); unset ones left out."""
        out: dict[str, object] = {
            "id": self.id,
            "provider_id": self.provider_id,
            "dataset_id": self.dataset_id,
            "stream_id": self.stream_id,
            "run_id": self.run_id,
            "check_name": self.check_name,
            "message": self.message,
            "occurred_at": self.occurred_at_text,
            "link": self.link,
        }
        out = {k: v for k, v in out.items() if v is not None}
        if self.details:
            out["details"] = dict(self.details)
        return out


def event(
    type: str,
    provider_id: str,
    message: str,
    *,
    key: str,
    occurred_at: dt.datetime | float | None = None,
    **fields: object,
) -> NotificationEvent:
    """A :class:`NotificationEvent` with its message cleaned (:func:`clean_message`) and its time in UTC
    (a datetime, epoch seconds, or now)."""
    if occurred_at is None:
        when = dt.datetime.now(dt.UTC)
    elif isinstance(occurred_at, dt.datetime):
        when = occurred_at if occurred_at.tzinfo else occurred_at.replace(tzinfo=dt.UTC)
    else:
        when = dt.datetime.fromtimestamp(occurred_at, dt.UTC)
    return NotificationEvent(
        type=type,
        provider_id=provider_id,
        message=clean_message(message),
        occurred_at=when.astimezone(dt.UTC),
        key=key,
        **fields,  # type: ignore[arg-type]
    )


def rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mask_config_secrets(config: object) -> None:
    """Register every secret of a config (or any model) that can be revealed here with ``redact``, so that
    messages another process wrote (a run's error, read back from Dagster's event log) are masked here
    too. Secrets whose environment variable is not set in this process are skipped."""
    from pydantic import BaseModel

    from ..config.secrets import MissingEnvironmentVariable, Secret

    stack: list[object] = [config]
    while stack:
        value = stack.pop()
        if isinstance(value, Secret):
            try:
                value.reveal()  # (registers the value with redact)
            except MissingEnvironmentVariable:
                pass
        elif isinstance(value, BaseModel):
            stack.extend(getattr(value, name) for name in type(value).model_fields)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
