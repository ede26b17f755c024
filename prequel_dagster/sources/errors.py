"""Source failures as messages that name the source, the dataset and the fix (never a traceback)."""

import difflib
from collections.abc import Sequence

from ..config.errors import SourceError
from ..config.models import Dataset, Source
from ..config.secrets import redact

_FIXES = [  # first match wins
    (
        ("password authentication failed", "authentication failed", "invalid password", "access denied"),
        "check password_auth.username and the password's environment variable",
    ),
    (('database "',), "check the source's database name"),
    (
        (
            "connection refused",
            "could not connect",
            "timeout",
            "timed out",
            "name or service",
            "could not translate host",
            "no route to host",
            "network is unreachable",
            "failed to connect",
        ),
        "check host and port, and that the database accepts connections from this machine",
    ),
    (("permission denied", "insufficient privilege"), "grant the source user SELECT on the table"),
    (("does not exist", "no such table", "not found"), "check the dataset's table (namespace and name) or its query"),
    (("syntax error",), "check the dataset's sql.query"),
]


_CODES = [
    "AUTHENTICATION_FAILED",
    "DATABASE_NOT_FOUND",
    "UNREACHABLE",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "SYNTAX_ERROR",
]
"""test-source's code for each entry of ``_FIXES``, in order."""


def fix_for(message: str) -> tuple[str, str]:
    """A short code and the fix for a driver's failure message."""
    low = message.lower()
    for (needles, fix), code in zip(_FIXES, _CODES):
        if any(n in low for n in needles):
            return code, fix
    return "CONNECTION_FAILED", "see the message above"


def describe_failure(source: Source, dataset: Dataset, exc: BaseException) -> SourceError:
    """The database's own first line (secrets masked) and what to change."""
    raw = str(getattr(exc, "orig", None) or exc)
    lines = [line.strip() for line in redact(raw).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    low = redact(raw).lower()
    fix = next((f for needles, f in _FIXES if any(n in low for n in needles)), "see the database's message above")
    return SourceError(f"source '{source.id}' (dataset '{dataset.id}'): {text} — {fix}")


def dataset_columns(dataset: Dataset) -> list[tuple[str, str]]:
    """The source columns a dataset's config names, as ``(setting, column)``: key, cursor, deleted flag."""
    block = "dimension" if dataset.dimension else "fact"
    named = [
        ("primary_key_column", dataset.primary_key),
        ("last_modified_column" if dataset.dimension else "created_at_column", dataset.cursor_column),
        ("is_deleted_column", dataset.is_deleted_column),
    ]
    return [(f"{block}.{setting}", column) for setting, column in named if column]


def check_columns(source: Source, dataset: Dataset, columns: Sequence[str]) -> None:
    """Fail, naming the setting, the column and the source's columns, when the dataset's config names a
    column the source does not return: a cursor typo would otherwise make every extract a silent full
    read, a deleted-flag typo would never delete."""
    present, columns = set(columns), [c if c.isprintable() else repr(c) for c in columns]
    for setting, column in dataset_columns(dataset):
        if column not in present:
            near = [c for c in columns if c.lower() == column.lower()] or difflib.get_close_matches(column, columns, 1)
            shown = ", ".join(columns[:50]) + (f", ... ({len(columns) - 50} more)" if len(columns) > 50 else "")
            raise SourceError(
                f"dataset '{dataset.id}': {setting} '{column}' is not a column of source '{source.id}' "
                f"(its columns: {shown or 'none'})"
                + (f"; did you mean '{near[0]}'?" if near else "")
                + f" — fix {setting} in the dataset's config; nothing was committed"
            )
