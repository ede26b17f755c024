"""Stores: local folders and object-store buckets behind one interface, used by the datalake and by
file sources alike (``base`` the interface, one module per kind, ``factory`` the one way to open them)."""

from .abs import AbsStore
from .base import CommitConflict, ObjectStore, Store
from .factory import BUCKET_KINDS, open_bucket_store, open_datalake, open_source_bucket
from .gcs import GcsStore
from .local import LocalStore
from .s3 import S3Store, s3_credentials

__all__ = [
    "BUCKET_KINDS",
    "AbsStore",
    "CommitConflict",
    "GcsStore",
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "Store",
    "open_bucket_store",
    "open_datalake",
    "open_source_bucket",
    "s3_credentials",
]
