"""What an extract asks of a source: the one interface every reader implements."""

from collections.abc import Iterator
from typing import Any, Protocol

import pyarrow as pa


class Reader(Protocol):
    """Reads one dataset of one source as Arrow record batches."""

    keys_unique: bool
    """Set by :meth:`read` before its first batch: the primary key is unique at the source, so batches
    need no de-duplication."""

    def read(self, lower_bound: Any = None) -> Iterator[pa.RecordBatch]:
        """Rows changed at or after ``lower_bound`` (a cursor value, or a glob's file fingerprints); all
        rows when it is None."""
        ...

    def read_keys(self) -> Iterator[pa.Array]:
        """Every primary key at the source (hard-delete detection)."""
        ...

    def cursor_after_read(self) -> Any:
        """The reader's own cursor once :meth:`read` is done (a glob's file fingerprints), or None when
        the cursor is the largest value of the dataset's cursor column."""
        ...

    def close(self) -> None:
        """Release connections (SFTP sessions, engines)."""
        ...
