"""Errors that name the file, the path inside it and the fix, never a bare traceback."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is (``streams[2].mappings[0].column.name``) and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def format_path(loc: Sequence[str | int]) -> str:
    """``('streams', 2, 'mappings', 0)`` -> ``streams[2].mappings[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class PrequelError(Exception):
    """Base of every error the product raises on purpose; its message is meant for the user."""


class ConfigError(PrequelError):
    """A config file that cannot be used, with every issue found in it."""

    def __init__(self, source: str, issues: Iterable[ConfigIssue]):
        self.source = source
        self.issues = list(issues)
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        noun = "error" if len(self.issues) == 1 else "errors"
        super().__init__(f"{source}: {len(self.issues)} config {noun}:\n{lines}")


class SourceError(PrequelError):
    """A source that cannot be read: unreachable, bad credentials, missing table, unsupported vendor."""


class DeliveryError(PrequelError):
    """A load that could not complete; what was not acknowledged is kept for the next load."""
