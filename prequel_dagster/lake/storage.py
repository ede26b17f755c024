"""Datalake storage: one bucket (or directory) behind pyarrow's filesystem interface.

Everything above this module sees paths relative to the datalake root (``lakehouse/...``,
``artifacts/...``) and three primitives the commit protocol needs: write a file, read it back,
and *create a small file only if it does not exist yet* (the commit point).
"""

import json
import os
import uuid
from pathlib import Path
from typing import BinaryIO

import pyarrow.fs as pafs

from ..config.errors import PrequelError
from ..config.secrets import MissingEnvironmentVariable, redact
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


class _ObjectStore(LakeStorage):
    """Shared by the object stores: no directories to create, keys ending in "/" are not files."""

    def open_output(self, path: str):
        return self.fs.open_output_stream(self.full_path(path))

    def list_names(self, directory: str) -> list[str]:
        return [n for n in super().list_names(directory) if n and not n.endswith("/")]


class S3Storage(_ObjectStore):
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


class GcsStorage(_ObjectStore):
    """A bucket (and prefix) on Google Cloud Storage; the commit point is an upload with
    ``ifGenerationMatch=0``, which GCS refuses with 412 when the object exists."""

    kind = "gcs"

    def __init__(self, *, bucket: str, prefix: str, service_account_key: str | None = None,
                 endpoint: str | None = None):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        credentials, token, expiry = None, None, None
        if service_account_key:
            import google.auth.transport.requests
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_info(
                json.loads(service_account_key), scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
            credentials.refresh(google.auth.transport.requests.Request())
            token, expiry = credentials.token, credentials.expiry
        scheme, _, host = (endpoint or "").rpartition("://")
        anonymous = bool(endpoint) and credentials is None  # an emulator or a private endpoint without keys
        fs = pafs.GcsFileSystem(anonymous=anonymous, access_token=token, credential_token_expiration=expiry,
                                scheme=scheme or None, endpoint_override=host or None)
        prefix = prefix.strip("/")
        super().__init__(fs, f"{bucket}/{prefix}" if prefix else bucket)
        self.bucket_name, self.prefix = bucket, prefix
        if anonymous:
            credentials = AnonymousCredentials()
        options = {"api_endpoint": endpoint} if endpoint else None
        self.client = storage.Client(project="prequel" if anonymous else None, credentials=credentials,
                                     client_options=options)
        self.bucket = self.client.bucket(bucket)

    def uri(self, path: str = "") -> str:
        return f"gs://{self.full_path(path)}"

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def create_exclusive(self, path: str, data: bytes) -> None:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self.bucket.blob(self._key(path)).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            raise CommitConflict(f"{path} was committed by another run; rerun to continue from its state") from None

    def delete(self, path: str) -> None:
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.blob(self._key(path)).delete()
        except NotFound:
            pass

    def check(self, datalake_id: str) -> None:
        from google.api_core import exceptions

        try:
            self.client.get_bucket(self.bucket_name)
        except exceptions.NotFound:
            raise PrequelError(f"datalake '{datalake_id}': bucket '{self.bucket_name}' does not exist; "
                               "create it or fix bucket_name") from None
        except (exceptions.Forbidden, exceptions.Unauthorized):
            raise PrequelError(f"datalake '{datalake_id}': access denied; check the service account key "
                               "and its roles on the bucket") from None
        except Exception as exc:  # transport errors come from several libraries
            raise PrequelError(f"datalake '{datalake_id}': cannot reach GCS ({type(exc).__name__}); "
                               "check the endpoint") from None


class AbsStorage(_ObjectStore):
    """A container (and prefix) on Azure Blob Storage; the commit point is an upload that must not
    overwrite (``If-None-Match: *``), refused with 409 when the blob exists."""

    kind = "abs"

    def __init__(self, *, account: str, container: str, prefix: str, account_key: str | None = None,
                 sas_token: str | None = None, endpoint: str | None = None):
        from azure.storage.blob import ContainerClient

        account_url = (endpoint or f"https://{account}.blob.core.windows.net").rstrip("/")
        scheme, _, rest = account_url.partition("://")
        authority = rest.split("/", 1)[0]
        custom = endpoint is not None
        if sas_token:  # Arrow appends the token to URLs as given; the Azure SDK takes it with or without "?"
            sas_token = "?" + sas_token.lstrip("?")
        fs = pafs.AzureFileSystem(
            account, account_key=account_key, sas_token=sas_token,
            blob_storage_authority=authority if custom else None, blob_storage_scheme=scheme if custom else None,
            dfs_storage_authority=authority if custom else None, dfs_storage_scheme=scheme if custom else None,
        )
        prefix = prefix.strip("/")
        super().__init__(fs, f"{container}/{prefix}" if prefix else container)
        self.container_name, self.prefix = container, prefix
        credential = {"account_name": account, "account_key": account_key} if account_key else sas_token
        self.container = ContainerClient(account_url, container, credential=credential)

    def uri(self, path: str = "") -> str:
        return f"abfs://{self.full_path(path)}"

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def create_exclusive(self, path: str, data: bytes) -> None:
        from azure.core.exceptions import ResourceExistsError

        try:
            self.container.upload_blob(self._key(path), data, overwrite=False)
        except ResourceExistsError:
            raise CommitConflict(f"{path} was committed by another run; rerun to continue from its state") from None

    def delete(self, path: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self.container.delete_blob(self._key(path))
        except ResourceNotFoundError:
            pass

    def check(self, datalake_id: str) -> None:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

        try:  # List Blobs: a container SAS may list, but may never read the container's properties
            next(self.container.list_blobs(name_starts_with=self._key(""), results_per_page=1).by_page(), None)
        except ResourceNotFoundError:
            raise PrequelError(f"datalake '{datalake_id}': container '{self.container_name}' does not exist; "
                               "create it or fix bucket_name") from None
        except (ClientAuthenticationError, HttpResponseError) as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code not in (401, 403):
                raise PrequelError(f"datalake '{datalake_id}': Azure answered {exc.status_code}; "
                                   "check the account and container") from None
            raise PrequelError(f"datalake '{datalake_id}': access denied; check the account key or the "
                               "shared access signature") from None
        except Exception as exc:
            raise PrequelError(f"datalake '{datalake_id}': cannot reach Azure ({type(exc).__name__}); "
                               "check storage_account_name and endpoint") from None


def s3_credentials(block, where: str) -> dict[str, str | None]:
    """Access keys, an assumed role's temporary keys, or nothing (the default AWS credential chain).

    ``where`` names the config entry in errors (``datalake 'lake'``, ``source 'files'``)."""
    method = getattr(block, "auth_method", "aws_access_keys")
    if method == "aws_access_keys":
        if block.aws_access_keys is None:
            raise PrequelError(f"{where}: auth_method aws_access_keys needs an aws_access_keys block")
        return {"access_key": block.aws_access_keys.access_key_id,
                "secret_key": block.aws_access_keys.secret_access_key.reveal()}
    if method == "aws_iam_role":
        import boto3

        if block.aws_iam_role is None:
            raise PrequelError(f"{where}: auth_method aws_iam_role needs an aws_iam_role block")
        import botocore.exceptions

        role = block.aws_iam_role.aws_iam_role_arn
        try:
            creds = boto3.client("sts").assume_role(RoleArn=role, RoleSessionName="prequel-dagster")["Credentials"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise PrequelError(f"{where}: cannot assume aws_iam_role {role} ({redact(str(exc)).splitlines()[0]}); "
                               "check the role's trust policy names this machine's AWS identity") from None
        return {"access_key": creds["AccessKeyId"], "secret_key": creds["SecretAccessKey"],
                "session_token": creds["SessionToken"]}
    return {}


def open_storage(datalake: Datalake, config: PrequelConfig) -> LakeStorage:
    """The storage for a configured datalake."""
    try:
        if datalake.storage == "local":
            return LocalStorage(config.resolve_path(datalake.local.path))  # type: ignore[union-attr]
        if datalake.storage == "s3":
            b = datalake.s3
            assert b is not None
            storage = S3Storage(bucket=b.bucket_name, prefix=b.prefix, region=b.bucket_region,
                                **s3_credentials(b, f"datalake '{datalake.id}'"))
            storage.check(datalake.id)
            return storage
        if datalake.storage == "s3_compatible":
            b = datalake.s3_compatible
            assert b is not None
            endpoint = f"{'http' if b.disable_ssl else 'https'}://{b.host}" + (f":{b.port}" if b.port else "")
            storage = S3Storage(bucket=b.bucket_name, prefix=b.prefix, region=b.region, endpoint=endpoint,
                                **s3_credentials(b, f"datalake '{datalake.id}'"))
            storage.check(datalake.id)
            return storage
        if datalake.storage == "gcs":
            g = datalake.gcs
            assert g is not None
            if g.auth_method == "gcs_hmac_keys":
                raise PrequelError(f"datalake '{datalake.id}': gcs auth_method gcs_hmac_keys is not supported yet; "
                                   "use gcp_service_account_key or default_credentials")
            key = g.gcp_service_account_key.service_account_key.reveal() \
                if g.auth_method == "gcp_service_account_key" and g.gcp_service_account_key else None
            try:
                storage = GcsStorage(bucket=g.bucket_name, prefix=g.prefix, service_account_key=key,
                                     endpoint=g.endpoint)
            except Exception as exc:  # json, google.auth (malformed key, refused refresh) and transport errors
                detail = redact(str(exc)).splitlines()[0][:200] if str(exc) else ""
                raise PrequelError(
                    f"datalake '{datalake.id}': gcp_service_account_key is not a usable service account key "
                    f"({type(exc).__name__}: {detail}); paste the whole JSON key file of a service account "
                    "with access to the bucket") from None
            storage.check(datalake.id)
            return storage
        if datalake.storage == "abs":
            a = datalake.abs
            assert a is not None
            account_key = a.azure_storage_account_key.account_key.reveal() \
                if a.auth_method == "azure_storage_account_key" and a.azure_storage_account_key else None
            sas = a.azure_service_shared_access_signature.shared_access_signature_token.reveal() \
                if a.auth_method == "azure_service_shared_access_signature" and a.azure_service_shared_access_signature \
                else None
            storage = AbsStorage(account=a.storage_account_name, container=a.bucket_name, prefix=a.prefix,
                                 account_key=account_key, sas_token=sas, endpoint=a.endpoint)
            storage.check(datalake.id)
            return storage
    except MissingEnvironmentVariable as exc:
        raise PrequelError(f"datalake '{datalake.id}': {exc}") from None
    raise PrequelError(f"datalake '{datalake.id}': storage '{datalake.storage}' is not supported")
