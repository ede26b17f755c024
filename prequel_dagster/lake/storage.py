"""Datalake storage: one bucket (or directory) behind pyarrow's filesystem interface.

Everything above this module sees paths relative to the datalake root (``lakehouse/...``,
``artifacts/...``) and three primitives the commit protocol needs: write a file, read it back,
and *create a small file only if it does not exist yet* (the commit point).
"""

import os
import uuid
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

from ..config.errors import PrequelError
from ..config.models import Datalake, PrequelConfig


class CommitConflict(PrequelError):
    """Another writer committed the same sequence number first."""


class LakeStorage:
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


class LocalStorage(LakeStorage):
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
        tmp.write_bytes(data)
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


class S3Storage(LakeStorage):
    """A bucket (and prefix) on S3 or an S3-compatible store. Files are PUT whole (multipart for
    Parquet), so a reader never sees half an object; the commit point is a PUT with
    ``If-None-Match: *``, which the store refuses with 412 when the manifest already exists."""

    kind = "s3"

    def __init__(self, *, bucket: str, prefix: str, region: str, access_key: str | None = None,
                 secret_key: str | None = None, session_token: str | None = None, endpoint: str | None = None):
        import boto3
        import botocore.config

        # the AWS SDKs' endpoint variables (a VPC endpoint, a local S3), honoured by both clients
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        scheme, _, host = (endpoint or "").rpartition("://")
        fs = pafs.S3FileSystem(
            access_key=access_key, secret_key=secret_key, session_token=session_token, region=region,
            endpoint_override=host or None, scheme=scheme or "https", allow_bucket_creation=False,
            allow_bucket_deletion=False, check_directory_existence_before_creation=False,
        )
        super().__init__(fs, f"{bucket}/{prefix.strip('/')}" if prefix.strip("/") else bucket)
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client(
            "s3", region_name=region, endpoint_url=endpoint, aws_access_key_id=access_key,
            aws_secret_access_key=secret_key, aws_session_token=session_token,
            config=botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def uri(self, path: str = "") -> str:
        return f"s3://{self.full_path(path)}"

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def open_output(self, path: str):
        return self.fs.open_output_stream(self.full_path(path))  # no directory markers on object stores

    def list_names(self, directory: str) -> list[str]:
        return [n for n in super().list_names(directory) if n and not n.endswith("/")]

    def delete(self, path: str) -> None:
        # boto3, not pyarrow: pyarrow leaves a directory marker behind when a "directory" empties
        self.client.delete_object(Bucket=self.bucket, Key=self._key(path))

    def create_exclusive(self, path: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise CommitConflict(f"{path} was committed by another run; rerun to continue from its state") from None
            raise

    def check(self, datalake_id: str) -> None:
        """Fail early, naming the datalake and the fix, when the bucket cannot be reached or written."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchBucket", "NotFound"):
                fix = f"bucket '{self.bucket}' does not exist; create it or fix bucket_name"
            elif code in ("403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"):
                fix = "access denied; check the access keys (or role) and the bucket policy"
            else:
                fix = f"{code}: check the bucket settings"
            raise PrequelError(f"datalake '{datalake_id}': {fix}") from None
        except BotoCoreError as exc:
            raise PrequelError(f"datalake '{datalake_id}': cannot reach the store ({type(exc).__name__}); "
                               "check host, port and region") from None


def _s3_credentials(block, datalake_id: str) -> dict[str, str | None]:
    """Access keys, an assumed role's temporary keys, or nothing (the default AWS credential chain)."""
    method = getattr(block, "auth_method", "aws_access_keys")
    if method == "aws_access_keys":
        if block.aws_access_keys is None:
            raise PrequelError(f"datalake '{datalake_id}': auth_method aws_access_keys needs an aws_access_keys block")
        return {"access_key": block.aws_access_keys.access_key_id,
                "secret_key": block.aws_access_keys.secret_access_key.reveal()}
    if method == "aws_iam_role":
        import boto3

        if block.aws_iam_role is None:
            raise PrequelError(f"datalake '{datalake_id}': auth_method aws_iam_role needs an aws_iam_role block")
        creds = boto3.client("sts").assume_role(RoleArn=block.aws_iam_role.aws_iam_role_arn,
                                                RoleSessionName="prequel-dagster")["Credentials"]
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "session_token": creds["SessionToken"]}
    return {}


def open_storage(datalake: Datalake, config: PrequelConfig) -> LakeStorage:
    """The storage for a configured datalake."""
    from ..config.secrets import MissingEnvironmentVariable

    try:
        if datalake.storage == "local":
            return LocalStorage(config.resolve_path(datalake.local.path))  # type: ignore[union-attr]
        if datalake.storage == "s3":
            b = datalake.s3
            assert b is not None
            storage = S3Storage(bucket=b.bucket_name, prefix=b.prefix, region=b.bucket_region,
                                **_s3_credentials(b, datalake.id))
            storage.check(datalake.id)
            return storage
        if datalake.storage == "s3_compatible":
            b = datalake.s3_compatible
            assert b is not None
            endpoint = f"{'http' if b.disable_ssl else 'https'}://{b.host}" + (f":{b.port}" if b.port else "")
            storage = S3Storage(bucket=b.bucket_name, prefix=b.prefix, region=b.region, endpoint=endpoint,
                                **_s3_credentials(b, datalake.id))
            storage.check(datalake.id)
            return storage
    except MissingEnvironmentVariable as exc:
        raise PrequelError(f"datalake '{datalake.id}': {exc}") from None
    raise PrequelError(
        f"datalake '{datalake.id}': storage '{datalake.storage}' is not supported yet; "
        "use storage: local, s3 or s3_compatible for now"
    )
