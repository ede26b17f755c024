"""Whether a destination's endpoint answers at all: Prequel checks this when a destination is created."""

from urllib.parse import urlsplit

import httpx

from ..config.models import Destination
from ..config.secrets import redact

TIMEOUT_SECONDS = 5.0


def unreachable(destination: Destination, *, transport: httpx.BaseTransport | None = None) -> str | None:
    """None when the endpoint's host answers an HTTP request (any status: auth and methods are the
    receiver's business); otherwise what failed. A URI whose host comes from a template is not checked."""
    uri = destination.webhook.request_template.uri
    head = uri.split("{{", 1)[0]
    if "{{" in uri and head.count("/") < 3:
        return None  # the host itself is templated (per provider): nothing to check before a load
    parts = urlsplit(head)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"uri {uri!r} is not an http(s) URL"
    origin = f"{parts.scheme}://{parts.netloc}/"
    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS, transport=transport, follow_redirects=False) as client:
            client.request("HEAD", origin)
    except httpx.HTTPError as exc:
        return redact(f"{origin} does not answer ({type(exc).__name__}: {exc})")
    return None
