"""S3 and S3-compatible buckets; also the AWS credentials (keys, an assumed role, the default chain)."""

import os

import pyarrow.fs as pafs

from ..config.errors import PrequelError
from ..config.secrets import redact
from .base import CommitConflict, ObjectStore


class S3Store(ObjectStore):
    """A bucket (and prefix) on S3 or an S3-compatible store. Files are PUT whole (multipart for
    Parquet), so a reader never sees half an object; the commit point is a PUT with
    ``If-None-Match: *``, which the store refuses with 412 when the manifest already exists."""

    kind = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str,
        region: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        endpoint: str | None = None,
    ):
        import boto3
        import botocore.config

        # the AWS SDKs' endpoint variables (a VPC endpoint, a local S3), honoured by both clients
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        scheme, _, host = (endpoint or "").rpartition("://")
        fs = pafs.S3FileSystem(
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            region=region,
            endpoint_override=host or None,
            scheme=scheme or "https",
            allow_bucket_creation=False,
            allow_bucket_deletion=False,
            check_directory_existence_before_creation=False,
        )
        super().__init__(fs, f"{bucket}/{prefix.strip('/')}" if prefix.strip("/") else bucket)
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.client = boto3.client(
            "s3",
            region_name=region,
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            config=botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"}),
        )

    def uri(self, path: str = "") -> str:
        return f"s3://{self.full_path(path)}"

    def _key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def delete(self, path: str) -> None:
        # boto3, not pyarrow: pyarrow leaves a directory marker behind when a "directory" empties
        self.client.delete_object(Bucket=self.bucket, Key=self._key(path))

    def list_names_after(self, directory: str, name: str) -> list[str]:
        """One ``ListObjectsV2`` from ``StartAfter`` on: the cost follows what was added since ``name``,
        not how many files the directory holds."""
        prefix = self._key(directory).rstrip("/") + "/"
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, StartAfter=prefix + name, Delimiter="/"
        )
        names = [o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", [])]
        return sorted(n for n in names if n and "/" not in n and n > name)

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
            raise PrequelError(
                f"datalake '{datalake_id}': cannot reach the store ({type(exc).__name__}); check host, port and region"
            ) from None


def s3_credentials(block, where: str, *, region: str | None = None, sts=None) -> dict[str, str | None]:
    """Access keys, an assumed role's temporary keys, or nothing (the default AWS credential chain).

    ``where`` names the config entry in errors (``datalake 'lake'``, ``source 'files'``). The role is
    assumed with ``sts`` if given (a boto3 STS client), else with one for ``region`` on this machine's
    default AWS credentials. ``aws_iam_role`` blocks take the ARN as ``aws_iam_role_arn`` or, as
    Prequel's API returns it, ``aws_iam_role`` (the config models accept both)."""
    method = getattr(block, "auth_method", "aws_access_keys")
    if method == "aws_access_keys":
        if block.aws_access_keys is None:
            raise PrequelError(f"{where}: auth_method aws_access_keys needs an aws_access_keys block")
        return {
            "access_key": block.aws_access_keys.access_key_id,
            "secret_key": block.aws_access_keys.secret_access_key.reveal(),
        }
    if method == "aws_iam_role":
        import boto3

        if block.aws_iam_role is None:
            raise PrequelError(f"{where}: auth_method aws_iam_role needs an aws_iam_role block")
        import botocore.exceptions

        role = block.aws_iam_role.aws_iam_role_arn
        try:
            client = sts if sts is not None else boto3.client("sts", region_name=region)
            creds = client.assume_role(RoleArn=role, RoleSessionName="prequel-dagster")["Credentials"]
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise PrequelError(
                f"{where}: cannot assume aws_iam_role {role} ({redact(str(exc)).splitlines()[0]}); "
                "check the role's trust policy names this machine's AWS identity"
            ) from None
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "session_token": creds["SessionToken"],
        }
    return {}
