"""Glob datasets: CSV, JSON lines and Parquet files in a provider's bucket, SFTP server or local
folder, read incrementally.

The cursor is the fingerprint (size and modification time) of every file already extracted, so an
extract reads only files that are new or changed since. Files are read by pyarrow in batches; each
row carries no trace of its file, so a rewritten file yields its rows again and change detection
(by primary key, against the lake) keeps only what changed.

A provider controls its files' names and, on a local folder or SFTP server, links: nothing it
names reaches outside the source. Patterns are relative, without ``..``; a listed name with a
``.`` or ``..`` segment is refused (some stores resolve them); a link that leads outside the
folder is refused, one inside it is read (links to folders are not followed); every other name,
quotes, newlines and all, is only ever data: listed, matched and opened as it is.
"""

import datetime as dt
import fnmatch
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..config.errors import SourceError
from ..config.models import FILE_SOURCE_VENDORS, Dataset, PrequelConfig, Source, glob_pattern_problem
from ..config.secrets import redact
from ..stores import Store, open_source_bucket
from .errors import check_columns

BATCH_ROWS = 65_536
BLOCK_BYTES = 8 << 20
"""CSV and JSON lines are read a block at a time; column types are inferred from the first block."""


@dataclass(frozen=True)
class FileState:
    path: str  # relative to the bucket
    size: int
    modified: str  # ISO time

    @property
    def fingerprint(self) -> str:
        return f"{self.size}@{self.modified}"


class BucketFiles:
    """Files in a bucket, through the datalake's storage classes (pyarrow filesystems)."""

    def __init__(self, storage: Store):
        self.storage = storage

    def describe(self, path: str) -> str:
        return self.storage.uri(path)

    def list(self, base: str) -> list[FileState]:
        selector = pafs.FileSelector(
            self.storage.full_path(base) if base else self.storage.root, recursive=True, allow_not_found=True
        )
        root = self.storage.root.rstrip("/") + "/"
        out = []
        for info in self.storage.fs.get_file_info(selector):
            if info.type == pafs.FileType.File and not info.path.endswith("/"):
                relative = info.path[len(root) :] if info.path.startswith(root) else info.path
                out.append(FileState(relative, info.size or 0, info.mtime.isoformat() if info.mtime else ""))
        return out

    def open(self, path: str) -> Any:
        return self.storage.fs.open_input_file(self.storage.full_path(path))

    def close(self) -> None:
        pass


class PathOutsideSource(Exception):
    """A listed file, or link, whose real location is outside the source's folder."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _modified(info: os.stat_result) -> str:
    return (_EPOCH + dt.timedelta(microseconds=info.st_mtime_ns // 1000)).isoformat()  # as pyarrow reports it


class LocalFiles:
    """Files in a local folder, confined to it: a link is read only when its target is inside the
    folder (links to folders are not followed), and a file is opened only after checking that the
    file opened is the one inside the folder, so a file swapped for a link meanwhile is refused."""

    def __init__(self, folder: str):
        self.root = os.path.realpath(folder)

    def _inside(self, real: str) -> bool:
        return os.path.commonpath([self.root, real]) == self.root

    def describe(self, path: str) -> str:
        return Path(self.root, path).as_uri()

    def list(self, base: str) -> list[FileState]:
        start = os.path.join(self.root, base)
        if not os.path.exists(start):
            return []
        if not self._inside(os.path.realpath(start)):
            raise PathOutsideSource(base)
        out, folders = [], [(start, base)]
        while folders:
            folder, relative = folders.pop()
            with os.scandir(folder) as entries:
                for entry in entries:
                    path = f"{relative}/{entry.name}" if relative else entry.name
                    if entry.is_symlink():
                        if not self._inside(os.path.realpath(entry.path)):
                            raise PathOutsideSource(path)
                        if entry.is_file():  # a link to a file inside the folder
                            info = entry.stat()
                            out.append(FileState(path, info.st_size, _modified(info)))
                    elif entry.is_dir(follow_symlinks=False):
                        folders.append((entry.path, path))
                    elif entry.is_file(follow_symlinks=False):  # not a fifo, socket or device
                        info = entry.stat(follow_symlinks=False)
                        out.append(FileState(path, info.st_size, _modified(info)))
        return out

    def open(self, path: str) -> Any:
        full = os.path.join(self.root, path)
        fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a fifo put in its place must not block
        try:
            info, real = os.fstat(fd), os.path.realpath(full)
            if not (self._inside(real) and os.path.exists(real) and os.path.samestat(info, os.stat(real))):
                raise PathOutsideSource(path)
            if not stat.S_ISREG(info.st_mode):
                raise OSError(f"{path!r} is not a regular file")
            if os.path.isdir("/proc/self/fd"):
                return pa.OSFile(f"/proc/self/fd/{fd}")  # the very file checked, read natively
            return pa.PythonFile(os.fdopen(os.dup(fd), "rb"), mode="r")
        finally:
            os.close(fd)

    def close(self) -> None:
        pass


class SftpFiles:
    """Files on an SFTP server (paths relative to the login folder)."""

    def __init__(self, source: Source):
        from .ssh import connect

        b = source.sftp
        assert b is not None
        key = passphrase = password = None
        if b.auth_method == "public_key_auth" and b.public_key_auth and b.public_key_auth.private_key:
            key = b.public_key_auth.private_key.reveal()
            passphrase = (
                b.public_key_auth.private_key_passphrase.reveal() if b.public_key_auth.private_key_passphrase else None
            )
        elif b.auth_method == "password_auth" and b.password_auth and "password" in b.password_auth:
            password = b.password_auth["password"].reveal()
        self.host = b.host
        self.client = connect(
            f"source '{source.id}'",
            host=b.host,
            port=b.port,
            username=b.username,
            private_key=key,
            passphrase=passphrase,
            password=password,
        )
        self.sftp = self.client.open_sftp()

    def describe(self, path: str) -> str:
        return f"sftp://{self.host}/{path}"

    def list(self, base: str) -> list[FileState]:
        """Files under ``base``; a link is read only when the server resolves it inside the login
        folder (links to folders are not followed)."""
        root = self.sftp.normalize(".").rstrip("/") + "/"

        def inside(path: str) -> bool:
            return (self.sftp.normalize(path).rstrip("/") + "/").startswith(root)

        out, folders = [], [base or "."]
        if base:
            try:
                if not inside(base):
                    raise PathOutsideSource(base)
            except FileNotFoundError:
                return []
        while folders:
            folder = folders.pop()
            try:
                entries = self.sftp.listdir_attr(folder)
            except FileNotFoundError:
                continue
            for entry in entries:
                path = entry.filename if folder == "." else f"{folder}/{entry.filename}"
                mode = entry.st_mode or 0
                if stat.S_ISLNK(mode):
                    try:
                        if not inside(path):
                            raise PathOutsideSource(path)
                        entry = self.sftp.stat(path)  # the target's size and time
                    except FileNotFoundError:
                        continue  # a broken link
                    if not stat.S_ISREG(entry.st_mode or 0):
                        continue
                elif stat.S_ISDIR(mode):
                    folders.append(path)
                    continue
                modified = dt.datetime.fromtimestamp(entry.st_mtime or 0, dt.UTC).isoformat()
                out.append(FileState(path, entry.st_size or 0, modified))
        return out

    def open(self, path: str) -> Any:
        handle = self.sftp.open(path, "rb")
        handle.prefetch()  # pipelined reads: whole-file throughput instead of one round trip per block
        return handle

    def close(self) -> None:
        self.client.close()


def open_files(source: Source, config: PrequelConfig) -> "BucketFiles | LocalFiles | SftpFiles":
    """The files behind a file source."""
    if source.vendor == "sftp":
        return SftpFiles(source)
    if source.vendor == "local":
        folder = config.resolve_path(source.local.path)  # type: ignore[union-attr]
        if not folder.is_dir():
            raise SourceError(
                f"source '{source.id}': folder {folder} does not exist; check local.path "
                "(relative paths start at the config file's folder)"
            )
        return LocalFiles(str(folder))
    return BucketFiles(open_source_bucket(source))


def _first_line(exc: Exception) -> str:
    """An error's first line with secrets masked (SDKs quote signed URLs in their errors)."""
    text = redact(str(exc)).strip()
    return text.splitlines()[0] if text else repr(exc)


def _shown(name: str) -> str:
    """A provider's file name for a message: as it is, or quoted and escaped when it holds control characters."""
    return name if name.isprintable() else repr(name)


_SEGMENTS = re.compile(r"[/\\]")


def _static_prefix(pattern: str) -> str:
    """The folder part of a pattern before its first wildcard: where the listing starts."""
    head = pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else ""


class GlobReader:
    """Reads the files of a glob dataset that are new or changed since the previous extract."""

    def __init__(self, source: Source, dataset: Dataset, config: PrequelConfig):
        assert dataset.glob is not None
        self.source, self.dataset, self.config = source, dataset, config
        self.pattern = dataset.glob.pattern
        problem = glob_pattern_problem(self.pattern)
        if problem:
            raise SourceError(f"source '{source.id}' (dataset '{dataset.id}'): glob.pattern {self.pattern!r} {problem}")
        self.file_format = dataset.glob.file_format
        self._files: BucketFiles | LocalFiles | SftpFiles | None = None
        self.keys_unique = False
        self.cursor: dict[str, str] | None = None  # after read(): every matching file's fingerprint

    @property
    def files(self) -> "BucketFiles | LocalFiles | SftpFiles":
        if self._files is None:
            self._files = open_files(self.source, self.config)
        return self._files

    def close(self) -> None:
        if self._files is not None:
            self._files.close()
            self._files = None

    def list_files(self) -> list[FileState]:
        """Every file matching the pattern (``*`` also matches across folders)."""
        base = _static_prefix(self.pattern)
        try:
            listed = self.files.list(base)
        except PathOutsideSource as exc:
            raise self._outside(exc.path) from None
        except OSError as exc:
            raise SourceError(
                f"source '{self.source.id}' (dataset '{self.dataset.id}'): cannot list "
                f"{self.files.describe(base)}: {_first_line(exc)} — "
                "check the bucket (or folder) and the credentials"
            ) from None
        matched = sorted(
            (f for f in listed if fnmatch.fnmatchcase(f.path, self.pattern)), key=lambda f: (f.modified, f.path)
        )
        for f in matched:
            if {".", ".."} & set(_SEGMENTS.split(f.path)):
                raise SourceError(
                    f"source '{self.source.id}' (dataset '{self.dataset.id}'): file {_shown(f.path)} has a '.' or "
                    "'..' segment in its name, which some stores resolve to another folder or bucket; it is not "
                    "read — rename or remove it; nothing was committed"
                )
        return matched

    def _outside(self, path: str) -> SourceError:
        return SourceError(
            f"source '{self.source.id}' (dataset '{self.dataset.id}'): {_shown(path)} is a link that leads outside "
            "the source's folder; links are followed only inside it — put the file itself there, or remove the "
            "link; nothing was committed"
        )

    def cursor_after_read(self) -> dict[str, str] | None:
        return self.cursor

    def pending(self, previous: dict[str, str] | None) -> list[FileState]:
        """Files new or changed since ``previous`` (a cursor of fingerprints)."""
        previous = previous or {}
        return [f for f in self.list_files() if previous.get(f.path) != f.fingerprint]

    def read(self, previous: Any = None) -> Iterator[pa.RecordBatch]:
        previous = previous if isinstance(previous, dict) else {}
        try:
            files = self.list_files()
            self.cursor = {f.path: f.fingerprint for f in files}
            for state in (f for f in files if previous.get(f.path) != f.fingerprint):
                yield from self._read_file(state.path)
        finally:
            self.close()

    def _read_file(self, path: str) -> Iterator[pa.RecordBatch]:
        try:
            with self.files.open(path) as handle:
                if self.file_format == "parquet":
                    yield from pq.ParquetFile(handle).iter_batches(batch_size=BATCH_ROWS)
                elif self.file_format == "csv":
                    yield from pacsv.open_csv(handle, read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES))
                else:  # JSON lines
                    yield from pajson.open_json(handle, read_options=pajson.ReadOptions(block_size=BLOCK_BYTES))
        except PathOutsideSource:
            raise self._outside(path) from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(
                f"source '{self.source.id}' (dataset '{self.dataset.id}'): file {_shown(path)} is not valid "
                f"{self.file_format}: {_first_line(exc)} — fix or remove the file; nothing was committed"
            ) from None

    def read_keys(self) -> Iterator[pa.Array]:
        try:
            for state in self.list_files():
                for batch in self._read_file(state.path):
                    check_columns(self.source, self.dataset, batch.schema.names)
                    yield batch.column(self.dataset.primary_key)
        finally:
            self.close()


__all__ = [
    "FILE_SOURCE_VENDORS",
    "BucketFiles",
    "FileState",
    "GlobReader",
    "LocalFiles",
    "PathOutsideSource",
    "SftpFiles",
    "glob_pattern_problem",
    "open_files",
]
