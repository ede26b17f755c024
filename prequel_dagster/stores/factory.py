"""One factory for every store: a datalake's, and the provider buckets that file sources read.

Datalake and source blocks spell a few settings differently (``bucket_region`` / ``region``); both
come through :func:`open_bucket_store`, so a bucket kind is wired in one place.
"""

from typing import Any

from ..config.errors import PrequelError, SourceError
from ..config.models import Datalake, PrequelConfig, Source
from ..config.secrets import MissingEnvironmentVariable
from .base import Store
from .local import LocalStore

BUCKET_KINDS = ("s3", "s3_compatible", "gcs", "abs")


def open_bucket_store(
    kind: str, block: Any, *, prefix: str, where: str, error: type[PrequelError] = PrequelError
) -> Store:
    """The store for a bucket block of ``kind`` (s3, s3_compatible, gcs, abs); ``where`` names the config
    entry in errors."""
    try:
        if kind in ("s3", "s3_compatible"):
            from .s3 import S3Store, s3_credentials

            if kind == "s3":
                host = getattr(block, "bucket_host", None)
                endpoint = f"https://{host}" if host else None
                region = getattr(block, "bucket_region", None) or getattr(block, "region", None) or "us-east-1"
            else:
                endpoint = f"{'http' if block.disable_ssl else 'https'}://{block.host}" + (
                    f":{block.port}" if block.port else ""
                )
                region = block.region
            return S3Store(
                bucket=block.bucket_name,
                prefix=prefix,
                region=region,
                endpoint=endpoint,
                **s3_credentials(block, where),
            )
        if kind == "gcs":
            from .gcs import GcsStore

            if block.auth_method == "gcs_hmac_keys":
                raise error(
                    f"{where}: gcs auth_method gcs_hmac_keys is not supported yet; use "
                    "gcp_service_account_key, or the machine's own Google credentials"
                )
            key = (
                block.gcp_service_account_key.service_account_key.reveal()
                if block.auth_method == "gcp_service_account_key" and block.gcp_service_account_key
                else None
            )
            try:
                return GcsStore(
                    bucket=block.bucket_name, prefix=prefix, service_account_key=key, endpoint=block.endpoint
                )
            except Exception as exc:  # json, google.auth (malformed key, refused refresh) and transport errors
                from ..config.secrets import redact

                detail = redact(str(exc)).splitlines()[0][:200] if str(exc) else ""
                raise error(
                    f"{where}: gcp_service_account_key is not a usable service account key "
                    f"({type(exc).__name__}: {detail}); paste the whole JSON key file of a service "
                    "account with access to the bucket"
                ) from None
        if kind == "abs":
            from .abs import AbsStore

            method = getattr(block, "auth_method", "azure_service_shared_access_signature")
            account_key = (
                block.azure_storage_account_key.account_key.reveal()
                if method == "azure_storage_account_key" and getattr(block, "azure_storage_account_key", None)
                else None
            )
            sas_block = getattr(block, "azure_service_shared_access_signature", None)
            sas = (
                sas_block.shared_access_signature_token.reveal()
                if method == "azure_service_shared_access_signature" and sas_block
                else None
            )
            return AbsStore(
                account=block.storage_account_name,
                container=block.bucket_name,
                prefix=prefix,
                account_key=account_key,
                sas_token=sas,
                endpoint=block.endpoint,
            )
    except MissingEnvironmentVariable as exc:
        raise error(f"{where}: {exc}") from None
    except PrequelError as exc:
        raise exc if isinstance(exc, error) else error(str(exc)) from None
    raise error(f"{where}: '{kind}' is not a supported store (supported: local, {', '.join(BUCKET_KINDS)})")


def open_datalake(datalake: Datalake, config: PrequelConfig) -> Store:
    """The store of a configured datalake, checked (bucket reachable, credentials accepted)."""
    if datalake.storage == "local":
        return LocalStore(config.resolve_path(datalake.local.path))  # type: ignore[union-attr]
    where = f"datalake '{datalake.id}'"
    block = getattr(datalake, datalake.storage, None)
    if block is None:
        raise PrequelError(f"{where}: storage '{datalake.storage}' needs its '{datalake.storage}' block")
    store = open_bucket_store(datalake.storage, block, prefix=block.prefix, where=where)
    store.check(datalake.id)  # type: ignore[attr-defined]
    return store


def open_source_bucket(source: Source) -> Store:
    """The provider's bucket behind a file source, read from its root (patterns are relative to it)."""
    block = getattr(source, source.vendor, None)
    return open_bucket_store(source.vendor, block, prefix="", where=f"source '{source.id}'", error=SourceError)
