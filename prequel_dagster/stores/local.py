"""A directory on local disk (or a mounted volume)."""

import os
import uuid
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

from .base import CommitConflict, Store


class LocalStore(Store):
    """A directory on local disk; the atomic create is a hard link of a fully written temp file."""

    kind = "local"

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(pafs.LocalFileSystem(), str(root.resolve()))

    def uri(self, path: str = "") -> str:
        return Path(self.full_path(path)).as_uri()

    def write_bytes(self, path: str, data: bytes) -> None:
        full = Path(self.full_path(path))
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(f".{full.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # durable before it replaces the old content
        os.replace(tmp, full)

    def open_append(self, path: str) -> BinaryIO:
        full = Path(self.full_path(path))
        full.parent.mkdir(parents=True, exist_ok=True)
        return open(full, "ab", buffering=0)

    def create_exclusive(self, path: str, data: bytes) -> None:
        full = Path(self.full_path(path))
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.with_name(f".{full.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, full)  # fails if it exists: exactly one writer wins
        except FileExistsError:
            raise CommitConflict(f"{path} was committed by another run; rerun to continue from its state") from None
        finally:
            tmp.unlink(missing_ok=True)
