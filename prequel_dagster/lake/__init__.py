"""The datalake: storage, layout, the dataset commit log, change detection, delivery state."""

from .commits import OP_COLUMN, Commit, DatasetLog
from .storage import LakeStorage, LocalStorage, open_storage

__all__ = ["OP_COLUMN", "Commit", "DatasetLog", "LakeStorage", "LocalStorage", "open_storage"]
