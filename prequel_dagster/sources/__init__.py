"""Sources: readers that turn a provider's database tables or queries into Arrow record batches."""

from ..config.models import Dataset, PrequelConfig, Source
from .errors import check_columns
from .files import GlobReader
from .postgres import PostgresReader
from .read_ahead import read_ahead
from .reader import Reader
from .sql import SqlReader

DEFAULT_LOOKBACK_SECONDS = {"postgres": 30, "sqlite": 0}
"""Re-read window before the cursor, per vendor (Prequel uses 30 s for PostgreSQL, 5 min elsewhere)."""


def open_reader(source: Source, dataset: Dataset, config: PrequelConfig) -> Reader:
    """The reader for a dataset; unsupported vendors fail here with a clear message."""
    if dataset.method == "glob":
        return GlobReader(source, dataset, config)
    if source.vendor == "postgres":
        return PostgresReader(source, dataset, config)
    return SqlReader(source, dataset, config)


def lookback_seconds(source: Source, dataset: Dataset) -> int:
    if dataset.lookback_seconds is not None:
        return dataset.lookback_seconds
    return DEFAULT_LOOKBACK_SECONDS.get(source.vendor, 300)


__all__ = [
    "GlobReader",
    "PostgresReader",
    "Reader",
    "SqlReader",
    "check_columns",
    "lookback_seconds",
    "open_reader",
    "read_ahead",
]
