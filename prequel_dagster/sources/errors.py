"""Source failures as messages that name the source, the dataset and the fix (never a traceback)."""

from ..config.errors import SourceError
from ..config.models import Dataset, Source
from ..config.secrets import redact

_FIXES = [  # first match wins
    (("password authentication failed", "authentication failed", "invalid password", "access denied"),
     "check password_auth.username and the password's environment variable"),
    (('database "',), "check the source's database name"),
    (("connection refused", "could not connect", "timeout", "timed out", "name or service", "could not translate host",
      "no route to host", "network is unreachable", "failed to connect"),
     "check host and port, and that the database accepts connections from this machine"),
    (("permission denied", "insufficient privilege"), "grant the source user SELECT on the table"),
    (("does not exist", "no such table", "not found"), "check the dataset's table (namespace and name) or its query"),
    (("syntax error",), "check the dataset's sql.query"),
]


def describe_failure(source: Source, dataset: Dataset, exc: BaseException) -> SourceError:
    """The database's own first line (secrets masked) and what to change."""
    raw = str(getattr(exc, "orig", None) or exc)
    lines = [line.strip() for line in redact(raw).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    low = redact(raw).lower()
    fix = next((f for needles, f in _FIXES if any(n in low for n in needles)), "see the database's message above")
    return SourceError(f"source '{source.id}' (dataset '{dataset.id}'): {text} — {fix}")
