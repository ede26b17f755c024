"""Azure Blob Storage containers."""

import pyarrow.fs as pafs

from ..config.errors import PrequelError
from .base import CommitConflict, ObjectStore


class AbsStore(ObjectStore):
    """A container (and prefix) on Azure Blob Storage; the commit point is an upload that must not
    overwrite (``If-None-Match: *``), refused with 409 when the blob exists."""

    kind = "abs"

    def __init__(
        self,
        *,
        account: str,
        container: str,
        prefix: str,
        account_key: str | None = None,
        sas_token: str | None = None,
        endpoint: str | None = None,
    ):
        from azure.storage.blob import ContainerClient

        account_url = (endpoint or f"https://{account}.blob.core.windows.net").rstrip("/")
        scheme, _, rest = account_url.partition("://")
        authority = rest.split("/", 1)[0]
        custom = endpoint is not None
        if sas_token:  # Arrow appends the token to URLs as given; the Azure SDK takes it with or without "?"
            sas_token = "?" + sas_token.lstrip("?")
        fs = pafs.AzureFileSystem(
            account,
            account_key=account_key,
            sas_token=sas_token,
            blob_storage_authority=authority if custom else None,
            blob_storage_scheme=scheme if custom else None,
            dfs_storage_authority=authority if custom else None,
            dfs_storage_scheme=scheme if custom else None,
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
            raise PrequelError(
                f"datalake '{datalake_id}': container '{self.container_name}' does not exist; "
                "create it or fix bucket_name"
            ) from None
        except (ClientAuthenticationError, HttpResponseError) as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code not in (401, 403):
                raise PrequelError(
                    f"datalake '{datalake_id}': Azure answered {exc.status_code}; check the account and container"
                ) from None
            raise PrequelError(
                f"datalake '{datalake_id}': access denied; check the account key or the shared access signature"
            ) from None
        except Exception as exc:
            raise PrequelError(
                f"datalake '{datalake_id}': cannot reach Azure ({type(exc).__name__}); "
                "check storage_account_name and endpoint"
            ) from None
