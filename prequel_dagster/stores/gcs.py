"""Google Cloud Storage buckets."""

import json

import pyarrow.fs as pafs

from ..config.errors import PrequelError
from .base import CommitConflict, ObjectStore


class GcsStore(ObjectStore):
    """A bucket (and prefix) on Google Cloud Storage; the commit point is an upload with
    ``ifGenerationMatch=0``, which GCS refuses with 412 when the object exists."""

    kind = "gcs"

    def __init__(
        self, *, bucket: str, prefix: str, service_account_key: str | None = None, endpoint: str | None = None
    ):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        credentials, token, expiry = None, None, None
        if service_account_key:
            import google.auth.transport.requests
            from google.oauth2 import service_account

            credentials = service_account.Credentials.from_service_account_info(
                json.loads(service_account_key), scopes=["https://www.googleapis.com/auth/devstorage.read_write"]
            )
            credentials.refresh(google.auth.transport.requests.Request())
            token, expiry = credentials.token, credentials.expiry
        scheme, _, host = (endpoint or "").rpartition("://")
        anonymous = bool(endpoint) and credentials is None  # an emulator or a private endpoint without keys
        fs = pafs.GcsFileSystem(
            anonymous=anonymous,
            access_token=token,
            credential_token_expiration=expiry,
            scheme=scheme or None,
            endpoint_override=host or None,
        )
        prefix = prefix.strip("/")
        super().__init__(fs, f"{bucket}/{prefix}" if prefix else bucket)
        self.bucket_name, self.prefix = bucket, prefix
        if anonymous:
            credentials = AnonymousCredentials()
        options = {"api_endpoint": endpoint} if endpoint else None
        self.client = storage.Client(
            project="prequel" if anonymous else None, credentials=credentials, client_options=options
        )
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
            raise PrequelError(
                f"datalake '{datalake_id}': bucket '{self.bucket_name}' does not exist; create it or fix bucket_name"
            ) from None
        except (exceptions.Forbidden, exceptions.Unauthorized):
            raise PrequelError(
                f"datalake '{datalake_id}': access denied; check the service account key and its roles on the bucket"
            ) from None
        except Exception as exc:  # transport errors come from several libraries
            raise PrequelError(
                f"datalake '{datalake_id}': cannot reach GCS ({type(exc).__name__}); check the endpoint"
            ) from None
