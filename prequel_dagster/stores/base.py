"""A store: one bucket (or directory) behind pyarrow's filesystem interface, plus the one atomic create.

Paths are relative to the store's root. Three primitives carry the lake's commit protocol: write a
file, read it back, and *create a small file only if it does not exist yet* (the commit point).
"""

import os
from typing import BinaryIO

import pyarrow.fs as pafs

from ..config.errors import PrequelError


class CommitConflict(PrequelError):
    """Another writer committed the same sequence number first."""


class Store:
    """Files under one datalake root. Subclasses bind a pyarrow filesystem and the atomic create."""

    kind = "abstract"

    def __init__(self, fs: pafs.FileSystem, root: str):
        self.fs = fs
        self.root = root.rstrip("/")

    def full_path(self, path: str) -> str:
        return f"{self.root}/{path}" if self.root else path

    def uri(self, path: str = "") -> str:
        raise NotImplementedError

    def open_output(self, path: str):
        full = self.full_path(path)
        self.fs.create_dir(full.rsplit("/", 1)[0], recursive=True)
        return self.fs.open_output_stream(full)

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(self.full_path(path)) as f:
            return f.read()

    def write_bytes(self, path: str, data: bytes) -> None:
        """Replace a file as a whole (readers see the old or the new content, never a mix)."""
        with self.open_output(path) as f:
            f.write(data)

    def create_exclusive(self, path: str, data: bytes) -> None:
        """Create ``path`` with ``data``; raise :class:`CommitConflict` if it exists."""
        raise NotImplementedError

    def list_names(self, directory: str) -> list[str]:
        """Base names of the files directly in ``directory`` (empty if it does not exist)."""
        selector = pafs.FileSelector(self.full_path(directory), allow_not_found=True, recursive=False)
        return sorted(i.base_name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File)

    def list_names_after(self, directory: str, name: str) -> list[str]:
        """Base names of the files directly in ``directory`` that sort after ``name``, in order: the
        names committed since ``name`` in a directory of sequence-named files. Object stores override
        it to list only those (S3's ``StartAfter``); here it filters a listing, which on a local
        disk reads names only (no stat per file)."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            folder = self.full_path(directory)
            try:
                later = [n for n in os.listdir(folder) if n > name]
            except (FileNotFoundError, NotADirectoryError):
                return []
            return sorted(n for n in later if os.path.isfile(os.path.join(folder, n)))
        return [n for n in self.list_names(directory) if n > name]

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(self.full_path(path)).type != pafs.FileType.NotFound

    def delete(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_file(self.full_path(path))

    def size(self, path: str) -> int:
        return self.fs.get_file_info(self.full_path(path)).size or 0

    def open_append(self, path: str) -> BinaryIO | None:
        """An unbuffered append handle (each write reaches the OS at once), or None where the
        storage cannot append (object stores)."""
        return None


class ObjectStore(Store):
    """Shared by the object stores: no directories to create, keys ending in "/" are not files."""

    def open_output(self, path: str):
        return self.fs.open_output_stream(self.full_path(path))

    def list_names(self, directory: str) -> list[str]:
        return [n for n in super().list_names(directory) if n and not n.endswith("/")]
