"""The datalake on a store: layout, the dataset commit log, change detection, delivery state."""

from .commits import OP_COLUMN, Commit, DatasetLog

__all__ = ["OP_COLUMN", "Commit", "DatasetLog"]
