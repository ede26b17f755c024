"""Config models with Prequel Import's API field names.

Each resource kind takes the object Prequel's ``POST /import/<resource>`` takes inside its wrapper
key, plus a user-chosen ``id``. Unknown keys are errors. Plain strings may contain ``${ENV_VAR}``
(resolved at load); secret fields are :class:`~prequel_dagster.config.secrets.Secret` (resolved
only when a connection is made, and masked everywhere).
"""

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from .secrets import Secret, interpolate

LITERAL = {"literal": True}
"""Validation context for entries from the catalog (the API): their strings are data, never ``${ENV}``
references (a tenant's host of ``${AWS_SECRET_ACCESS_KEY}`` must not read the server's environment)."""


def _interpolate(value: Any, info: ValidationInfo) -> Any:
    if not isinstance(value, str) or (info.context is not None and info.context.get("literal")):
        return value
    return interpolate(value)


EnvStr = Annotated[str, BeforeValidator(_interpolate)]
"""A string that may contain ``${ENV_VAR}``, resolved when the config is loaded (not in the catalog's entries)."""

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Id = Annotated[str, Field(pattern=ID_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Block(BaseModel):
    """A nested config object: unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Entry(Block):
    """A top-level resource entry with a user-chosen id."""

    id: Id
    name: EnvStr


def _refuse(model: BaseModel, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
    """Report every ``(location inside the block, message)`` at once, each at its own path
    (``sources[2].redshift.username``), as a field error would be."""
    if problems:
        raise ValidationError.from_exception_data(
            type(model).__name__,
            [
                InitErrorDetails(
                    type=PydanticCustomError("config", "{message}", {"message": message}),
                    loc=loc,
                    input=getattr(model, str(loc[0]), None),
                )
                for loc, message in problems
            ],
        )


def _exactly_one_block(model: BaseModel, selector: str, choices: tuple[str, ...]) -> None:
    chosen = getattr(model, selector)
    if getattr(model, chosen, None) is None:
        raise ValueError(f"{selector} is '{chosen}' but the '{chosen}' block is missing; add `{chosen}: {{...}}`")
    extra = [c for c in choices if c != chosen and getattr(model, c, None) is not None]
    if extra:
        raise ValueError(f"{selector} is '{chosen}' but the block(s) {', '.join(extra)} are also set; remove them")


# ---------------------------------------------------------------------------- credentials


class PasswordAuth(Block):
    username: EnvStr
    password: Secret


class AwsAccessKeys(Block):
    access_key_id: EnvStr
    secret_access_key: Secret


class RedshiftAccessKeys(Block):
    access_id: EnvStr
    secret_key: Secret
    password: Secret | None = None


class AwsIamRole(Block):
    """The role to assume. Prequel's API takes ``aws_iam_role_arn`` on write and returns (and, for
    Redshift, documents) ``aws_iam_role``: both spellings are accepted."""

    aws_iam_role_arn: EnvStr

    @model_validator(mode="before")
    @classmethod
    def _prequel_spelling(cls, data: Any) -> Any:
        if isinstance(data, dict) and "aws_iam_role" in data:
            data = dict(data)
            arn = data.pop("aws_iam_role")
            if "aws_iam_role_arn" in data and data["aws_iam_role_arn"] != arn:
                raise ValueError(
                    "both aws_iam_role and aws_iam_role_arn are set, to different roles; "
                    "keep one (they are two spellings of the role ARN)"
                )
            data["aws_iam_role_arn"] = arn
        return data


class GcpServiceAccountRole(Block):
    service_account_email: EnvStr


class GcpServiceAccountKey(Block):
    service_account_email: EnvStr | None = None
    service_account_key: Secret


class GcsHmacKeys(Block):
    access_id: EnvStr
    secret: Secret


class AzureSas(Block):
    shared_access_signature_token: Secret


class AzureAccountKey(Block):
    account_key: Secret


class PublicKeyAuth(Block):
    public_key: EnvStr | None = None
    private_key: Secret | None = None
    private_key_passphrase: Secret | None = None


class SshTunnel(Block):
    ssh_tunnel_host: EnvStr
    ssh_tunnel_port: Port = 22
    ssh_tunnel_username: EnvStr
    ssh_private_key: Secret | None = None
    ssh_public_key: EnvStr | None = None


# ---------------------------------------------------------------------------- datalakes


class LocalLake(Block):
    path: EnvStr


class S3Lake(Block):
    bucket_name: EnvStr
    bucket_region: EnvStr = "us-east-1"
    prefix: EnvStr = ""
    auth_method: Literal["aws_iam_role", "aws_access_keys", "default_credentials"] = "default_credentials"
    aws_iam_role: AwsIamRole | None = None
    aws_access_keys: AwsAccessKeys | None = None


class S3CompatibleLake(Block):
    host: EnvStr
    port: Port | None = None
    bucket_name: EnvStr
    region: EnvStr = "us-east-1"
    prefix: EnvStr = ""
    disable_ssl: bool = False
    aws_access_keys: AwsAccessKeys


class GcsLake(Block):
    bucket_name: EnvStr
    prefix: EnvStr = ""
    auth_method: Literal["gcs_hmac_keys", "gcp_service_account_key", "default_credentials"] = "default_credentials"
    gcs_hmac_keys: GcsHmacKeys | None = None
    gcp_service_account_key: GcpServiceAccountKey | None = None
    endpoint: EnvStr | None = None


class AbsLake(Block):
    bucket_name: EnvStr  # the blob container
    storage_account_name: EnvStr
    prefix: EnvStr = ""
    auth_method: Literal["azure_service_shared_access_signature", "azure_storage_account_key"] = (
        "azure_storage_account_key"
    )
    azure_service_shared_access_signature: AzureSas | None = None
    azure_storage_account_key: AzureAccountKey | None = None
    endpoint: EnvStr | None = None


LakeKind = Literal["local", "s3", "s3_compatible", "gcs", "abs"]
LAKE_KINDS: tuple[str, ...] = get_args(LakeKind)


class Datalake(Entry):
    storage: LakeKind
    retention_window_days: int | None = Field(default=None, ge=1)
    local: LocalLake | None = None
    s3: S3Lake | None = None
    s3_compatible: S3CompatibleLake | None = None
    gcs: GcsLake | None = None
    abs: AbsLake | None = None

    @model_validator(mode="after")
    def _one_block(self) -> "Datalake":
        _exactly_one_block(self, "storage", LAKE_KINDS)
        return self


# ---------------------------------------------------------------------------- providers, products


_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,7}\b")  # the pattern Dagster checks owners with


def _owner(value: str) -> str:
    if _EMAIL.fullmatch(value) or (value.startswith("team:") and len(value) > len("team:")):
        return value
    raise ValueError(f"owner '{value}' must be an email address or a team name prefixed with 'team:' (team:data)")


Owner = Annotated[str, AfterValidator(_owner)]
"""An asset owner as Dagster takes it: ``someone@example.com`` or ``team:name``."""


class Provider(Entry):
    datalake_id: Id
    products: list[EnvStr] = Field(min_length=1)
    owners: list[Owner] = []


class Product(Entry):
    destinations: list[Id] = []


# ---------------------------------------------------------------------------- sources


class _Connection(Block):
    use_ssh_tunnel: bool = False
    ssh_tunnel: SshTunnel | None = None
    disable_ssl: bool = False
    connection_timeout_in_seconds: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _tunnel(self) -> "_Connection":
        if self.use_ssh_tunnel and self.ssh_tunnel is None:
            raise ValueError("use_ssh_tunnel is true but the ssh_tunnel block is missing")
        return self


class PostgresSource(_Connection):
    host: EnvStr
    port: Port = 5432
    database: EnvStr
    schema_: EnvStr | None = Field(
        default=None,
        alias="schema",
        description="The default schema: where `table` datasets without a source_table_namespace are read, and "
        "the search_path of `sql` datasets' queries (only this schema, then pg_catalog).",
    )
    auth_method: Literal["password_auth"] = "password_auth"
    password_auth: PasswordAuth


_REDSHIFT_HOST = re.compile(
    r"(?P<name>[a-z0-9-]+)\.(?P<account>[a-z0-9]+)\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)"
    r"\.(?P<kind>redshift|redshift-serverless)\.amazonaws\.com(?:\.cn)?\.?",
    re.IGNORECASE,
)
"""Redshift's own endpoint names: ``<cluster>.<id>.<region>.redshift.amazonaws.com`` and
``<workgroup>.<account>.<region>.redshift-serverless.amazonaws.com``."""

_IAM_AUTH = ("aws_iam_role", "aws_access_keys")
_AUTH_BLOCKS = ("password_auth", "aws_iam_role", "aws_access_keys")


class RedshiftSource(_Connection):
    """A provisioned Redshift cluster.

    ``password_auth`` logs in with a database user's password. IAM auth asks Redshift's
    GetClusterCredentials for a temporary password of ``username`` on ``cluster`` in ``region``, as
    the IAM identity of ``aws_iam_role`` (a role assumed from this machine's AWS credentials) or of
    ``aws_access_keys`` (an IAM user's keys). ``cluster`` and ``region`` default to those in a
    standard endpoint host (``<cluster>.<id>.<region>.redshift.amazonaws.com``).
    """

    host: EnvStr
    port: Port = 5439
    database: EnvStr
    schema_: EnvStr | None = Field(
        default=None,
        alias="schema",
        description="The default schema: for `table` datasets without a source_table_namespace, and the "
        "search_path of `sql` datasets' queries.",
    )
    cluster: EnvStr | None = None
    region: EnvStr | None = None
    workgroup: EnvStr | None = None
    username: EnvStr | None = None
    auth_method: Literal["aws_access_keys", "aws_iam_role", "password_auth"] = "password_auth"
    aws_access_keys: RedshiftAccessKeys | None = None
    aws_iam_role: AwsIamRole | None = None
    password_auth: PasswordAuth | None = None

    _serverless: ClassVar[bool] = False

    def _endpoint_part(self, part: str) -> str | None:
        match = _REDSHIFT_HOST.fullmatch(self.host)
        if match is None or (match["kind"].lower() == "redshift-serverless") != self._serverless:
            return None
        return match[part].lower()

    @property
    def aws_region(self) -> str | None:
        """``region``, else the one in the endpoint host."""
        return self.region or self._endpoint_part("region")

    @property
    def cluster_identifier(self) -> str | None:
        """``cluster``, else the one in the endpoint host."""
        return self.cluster or self._endpoint_part("name")

    @property
    def workgroup_name(self) -> str | None:
        """``workgroup``, else the one in the endpoint host (Redshift Serverless)."""
        return self.workgroup or self._endpoint_part("name")

    @model_validator(mode="after")
    def _tunnel(self) -> "RedshiftSource":  # (replaces _Connection's check: tunnels are refused here)
        _refuse(self, self._problems())
        return self

    def _problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        block = "redshift_serverless" if self._serverless else "redshift"
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.use_ssh_tunnel:
            problems.append(
                (
                    ("use_ssh_tunnel",),
                    "SSH tunnels are supported for postgres sources only so far; set "
                    "use_ssh_tunnel: false and let this machine reach the endpoint directly",
                )
            )
        if self.ssh_tunnel is not None:
            problems.append(
                (
                    ("ssh_tunnel",),
                    "SSH tunnels are supported for postgres sources only so far; remove the ssh_tunnel block",
                )
            )
        method = self.auth_method
        if getattr(self, method) is None:
            example = {
                "password_auth": "password_auth: {username, password}",
                "aws_iam_role": "aws_iam_role: {aws_iam_role_arn: arn:aws:iam::...}",
                "aws_access_keys": "aws_access_keys: {access_id, secret_key}",
            }[method]
            problems.append(((method,), f"auth_method is {method} but the {method} block is missing; add `{example}`"))
        for other in _AUTH_BLOCKS:
            if other != method and getattr(self, other) is not None:
                problems.append(
                    (
                        (other,),
                        f"auth_method is {method}, so this block would not be used; remove it, "
                        f"or set auth_method: {other}",
                    )
                )
        if self.aws_access_keys is not None and self.aws_access_keys.password is not None:
            problems.append(
                (
                    ("aws_access_keys", "password"),
                    "not used: with aws_access_keys the login password is a temporary one from Redshift; "
                    "remove it, or use auth_method: password_auth with password_auth {username, password}",
                )
            )
        if self._serverless:
            if self.cluster:
                problems.append(
                    (
                        ("cluster",),
                        "clusters are provisioned Redshift; Redshift Serverless is reached "
                        "through its workgroup: remove cluster (set workgroup), or use vendor: redshift",
                    )
                )
        elif self.workgroup:
            problems.append(
                (
                    ("workgroup",),
                    "workgroups belong to Redshift Serverless; remove workgroup (a "
                    "provisioned cluster is named by cluster), or use vendor: redshift_serverless",
                )
            )
        named = "workgroup" if self._serverless else "cluster"
        if method == "password_auth":
            for field in ("region", named):
                if getattr(self, field):
                    problems.append(
                        (
                            (field,),
                            f"used only by IAM auth (auth_method: aws_iam_role or aws_access_keys) "
                            "to request a temporary password; password_auth connects to host directly: "
                            f"remove {field}, or switch auth_method",
                        )
                    )
            if self.username and self.password_auth and self.username != self.password_auth.username:
                problems.append(
                    (
                        ("username",),
                        f"differs from password_auth.username "
                        f"('{self.password_auth.username}'), which is the login with password_auth; "
                        "remove username",
                    )
                )
            return problems
        where = f"auth_method {method}"
        if self._serverless:
            if self.username:
                problems.append(
                    (
                        ("username",),
                        "Redshift Serverless IAM logins are the IAM identity's own database "
                        "user (GetCredentials takes no user name); remove username, or use password_auth",
                    )
                )
            if not self.workgroup_name:
                problems.append(
                    (
                        ("workgroup",),
                        f"{where} needs the workgroup name to request credentials; set "
                        f"workgroup (host '{self.host}' is not a <workgroup>.<account>.<region>"
                        ".redshift-serverless.amazonaws.com endpoint it could be read from)",
                    )
                )
        else:
            if not self.username:
                problems.append(
                    (
                        ("username",),
                        f"{where} needs the database user to log in as (GetClusterCredentials' DbUser); set username",
                    )
                )
            if not self.cluster_identifier:
                problems.append(
                    (
                        ("cluster",),
                        f"{where} needs the cluster identifier to request credentials; set "
                        f"cluster (host '{self.host}' is not a <cluster>.<id>.<region>.redshift.amazonaws.com "
                        "endpoint it could be read from)",
                    )
                )
        if not self.aws_region:
            problems.append(
                (
                    ("region",),
                    f"{where} needs the AWS region of the {named}; set region (host "
                    f"'{self.host}' is not a standard {block} endpoint it could be read from)",
                )
            )
        return problems


class RedshiftServerlessSource(RedshiftSource):
    """A Redshift Serverless workgroup. IAM auth asks GetCredentials for a temporary login of the IAM
    identity on ``workgroup`` in ``region`` (both default to those in a standard endpoint host,
    ``<workgroup>.<account>.<region>.redshift-serverless.amazonaws.com``)."""

    port: Port = 5439
    _serverless: ClassVar[bool] = True


class SnowflakeSource(Block):
    host: EnvStr
    port: Port = 443
    database: EnvStr
    schema_: EnvStr | None = Field(default=None, alias="schema")
    username: EnvStr
    warehouse: EnvStr | None = None
    role: EnvStr | None = None
    auth_method: Literal["public_key_auth", "password_auth"] = "public_key_auth"
    public_key_auth: PublicKeyAuth | None = None
    password_auth: PasswordAuth | None = None
    connection_timeout_in_seconds: int = Field(default=30, ge=1)


class BigQuerySource(Block):
    project_id: EnvStr
    region: EnvStr | None = None
    auth_method: Literal[
        "gcp_service_account_role", "federated_gcp_service_account_role", "gcp_service_account_key"
    ] = "gcp_service_account_key"
    gcp_service_account_role: GcpServiceAccountRole | None = None
    federated_gcp_service_account_role: GcpServiceAccountRole | None = None
    gcp_service_account_key: GcpServiceAccountKey | None = None


class _NoTunnel(Block):
    """Prequel's API has ``use_ssh_tunnel``/``ssh_tunnel`` on bucket sources too; here a bucket is read
    over HTTPS from this machine, so ``use_ssh_tunnel: false`` (what Prequel returns) is accepted and
    anything that asks for a tunnel is refused."""

    use_ssh_tunnel: bool = False
    ssh_tunnel: dict[str, Any] | None = None

    @field_validator("use_ssh_tunnel")
    @classmethod
    def _no_tunnel(cls, value: bool) -> bool:
        if value:
            raise ValueError(_NO_TUNNEL + "remove use_ssh_tunnel (or set it to false)")
        return value

    @field_validator("ssh_tunnel")
    @classmethod
    def _no_tunnel_block(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            raise ValueError(_NO_TUNNEL + "remove the ssh_tunnel block")
        return value


_NO_TUNNEL = (
    "SSH tunnels apply to database sources (postgres); a bucket is read directly over HTTPS from this "
    "machine, so a tunnel would not be used: "
)


class S3Source(_NoTunnel):
    bucket_name: EnvStr
    region: EnvStr = "us-east-1"
    bucket_host: EnvStr | None = None
    auth_method: Literal["aws_iam_role", "aws_access_keys", "default_credentials"] = "default_credentials"
    aws_iam_role: AwsIamRole | None = None
    aws_access_keys: AwsAccessKeys | None = None


class S3CompatibleSource(_NoTunnel):
    host: EnvStr
    port: Port | None = None
    bucket_name: EnvStr
    region: EnvStr = "us-east-1"
    disable_ssl: bool = False
    aws_access_keys: AwsAccessKeys


class GcsSource(Block):
    bucket_name: EnvStr
    region: EnvStr | None = Field(
        default=None,
        description="The bucket's location, as Prequel's API records it: accepted for compatibility and shown with "
        "the source; reads do not need it (a GCS bucket is addressed by name alone) and it changes nothing.",
    )
    auth_method: Literal[
        "gcp_service_account_role", "federated_gcp_service_account_role", "gcs_hmac_keys", "gcp_service_account_key"
    ] = "gcp_service_account_key"  # the one that reads with a key of the config (gcs_hmac_keys is refused)
    gcp_service_account_role: GcpServiceAccountRole | None = None
    federated_gcp_service_account_role: GcpServiceAccountRole | None = None
    gcs_hmac_keys: GcsHmacKeys | None = None
    gcp_service_account_key: GcpServiceAccountKey | None = None
    endpoint: EnvStr | None = None  # an emulator or private endpoint (not a Prequel field)


class AbsSource(Block):
    bucket_name: EnvStr
    storage_account_name: EnvStr
    auth_method: Literal["azure_service_shared_access_signature"] = "azure_service_shared_access_signature"
    azure_service_shared_access_signature: AzureSas
    endpoint: EnvStr | None = None  # Azurite or a private endpoint (not a Prequel field)


class SftpSource(Block):
    host: EnvStr
    port: Port = 22
    username: EnvStr
    auth_method: Literal["public_key_auth", "password_auth"] = "public_key_auth"
    public_key_auth: PublicKeyAuth | None = None
    password_auth: dict[str, Secret] | None = None


class LocalFilesSource(Block):
    """A folder on the machine that runs the extract (or a mounted volume), its path relative to the
    config file: read by glob datasets, like a bucket."""

    path: EnvStr


class SqliteSource(Block):
    """The embedded default: a SQLite file, its path relative to the config file."""

    path: EnvStr


class ImportApiSource(Block):
    """Stitch's Import API: the provider pushes records (``/v2/import/batch``) with the source's access
    tokens (``prequel-dagster push tokens create SOURCE``); each ``table_name`` lands in the lake."""

    display_name: str | None = None


SourceVendor = Literal[
    "postgres",
    "redshift",
    "redshift_serverless",
    "snowflake",
    "bigquery",
    "s3",
    "s3_compatible",
    "gcs",
    "abs",
    "sftp",
    "local",
    "sqlite",
    "import_api",
]
SOURCE_VENDORS: tuple[str, ...] = get_args(SourceVendor)
FILE_SOURCE_VENDORS: tuple[str, ...] = ("s3", "s3_compatible", "gcs", "abs", "sftp", "local")
"""Vendors whose datasets are files, read with ``method: glob``."""
PUSH_SOURCE_VENDORS: tuple[str, ...] = ("import_api",)
"""Vendors whose data is pushed to us: nothing to connect to or read."""


class Source(Entry):
    vendor: SourceVendor
    provider_id: Id
    postgres: PostgresSource | None = None
    redshift: RedshiftSource | None = None
    redshift_serverless: RedshiftServerlessSource | None = None
    snowflake: SnowflakeSource | None = None
    bigquery: BigQuerySource | None = None
    s3: S3Source | None = None
    s3_compatible: S3CompatibleSource | None = None
    gcs: GcsSource | None = None
    abs: AbsSource | None = None
    sftp: SftpSource | None = None
    local: LocalFilesSource | None = None
    sqlite: SqliteSource | None = None
    import_api: ImportApiSource | None = None

    @model_validator(mode="after")
    def _one_block(self) -> "Source":
        _exactly_one_block(self, "vendor", SOURCE_VENDORS)
        return self

    @property
    def settings(self) -> Block:
        """The vendor block (``self.postgres`` for ``vendor: postgres``)."""
        return getattr(self, self.vendor)


# ---------------------------------------------------------------------------- datasets


class TableMethod(Block):
    source_table_namespace: EnvStr | None = None
    source_table_name: EnvStr


class SqlMethod(Block):
    query: str


def glob_pattern_problem(pattern: str) -> str | None:
    """Why a glob pattern could reach outside its source's folder or bucket, with the fix; None if it cannot."""
    if pattern.startswith(("/", "\\")):
        return (
            f"is absolute; patterns are relative to the source's folder, bucket or SFTP login folder: "
            f"write {pattern.lstrip('/' + chr(92))!r}"
        )
    if ".." in re.split(r"[/\\]", pattern):
        return (
            "has a '..' segment, which would reach outside the source's folder or bucket (another "
            "provider's files); write it relative to the source, or give that folder its own source"
        )
    return None


def _confined(pattern: str) -> str:
    problem = glob_pattern_problem(pattern)
    if problem:
        raise ValueError(f"pattern {pattern!r} {problem}")
    return pattern


class GlobMethod(Block):
    pattern: Annotated[EnvStr, AfterValidator(_confined)]
    file_format: Literal["csv", "json", "parquet"] = "parquet"


class PushMethod(Block):
    """A table pushed to an ``import_api`` source (Stitch's ``table_name``): its staged batches are
    committed into the dataset by each extract, the highest ``sequence`` winning per key."""

    table_name: Annotated[str, Field(min_length=1, max_length=255)]


class Dimension(Block):
    primary_key_column: str
    last_modified_column: str | None = None
    is_deleted_column: str | None = None
    detect_hard_deletes: bool = Field(
        default=False,
        description="Compare the source's keys with the lake's after each extract; keys gone from the source "
        "become deletes (delivered in deleted_records).",
    )
    max_full_read_rows: int = Field(
        default=10_000_000,
        ge=1,
        description="Volume guard for dimensions without last_modified_column (read in full and compared row by "
        "row every time): a larger table fails the extract with a clear message instead of running for hours.",
    )


class Fact(Block):
    primary_key_column: str
    created_at_column: str


PartitionGranularity = Literal["hourly", "daily", "weekly", "monthly"]


def _partition_start(value: Any) -> Any:
    """A date (YAML reads an unquoted ``2025-01-01`` as one) or its ISO text, kept as ``YYYY-MM-DD``."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        raise ValueError(
            f'must be a date, not a date and time ({value.isoformat()}); write start: "{value.date().isoformat()}" '
            "(partitions begin at that day's midnight in timezone)"
        )
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            raise ValueError(
                f"'{value}' is not a date; write the first partition's day as YYYY-MM-DD, such as \"2025-01-01\""
            ) from None
    return value


def _timezone(value: str) -> str:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"'{value}' is not a known time zone; use an IANA name such as UTC, Europe/Paris or America/New_York"
        ) from None
    return value


class Partitions(Block):
    """Time partitions of a fact dataset: each partition is one window of ``created_at_column``
    (``[start, end)`` in ``timezone``); its extract reads only that window, and a backfill re-extracts
    (and, with ``resend``, re-delivers) any range of them."""

    granularity: PartitionGranularity
    start: Annotated[str, BeforeValidator(_partition_start)] = Field(
        description="The first partition's day (YYYY-MM-DD); weekly partitions begin on the first Sunday from it."
    )
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"


MAX_FREQUENCY_MINUTES = 525_600  # a year


def _frequency(minutes: int) -> int:
    if not 1 <= minutes <= MAX_FREQUENCY_MINUTES:
        raise ValueError(
            f"must be a number of minutes from 1 to {MAX_FREQUENCY_MINUTES} (a year); frequencies of a day "
            "(1440) or more are scheduled daily"
        )
    return minutes


class Dataset(Entry):
    source_id: Id
    method: Literal["table", "sql", "glob", "push"] = "table"
    table: TableMethod | None = None
    sql: SqlMethod | None = None
    glob: GlobMethod | None = None
    push: PushMethod | None = None
    type: Literal["dimension", "fact"]
    dimension: Dimension | None = None
    fact: Fact | None = None
    frequency_minutes: Annotated[int, AfterValidator(_frequency)] = 60
    lookback_seconds: int | None = Field(
        default=None,
        ge=0,
        le=366 * 86400,
        description="Re-read window before the cursor; default 30 s for postgres, 5 min otherwise.",
    )
    description: str | None = None
    partitions: Partitions | None = Field(
        default=None,
        description="Time partitions by created_at_column (fact datasets): {granularity, start, timezone}.",
    )
    attributes: dict[int, str | dict[str, str]] = Field(
        default_factory=dict,
        description="Attributes this dataset fills for data streams: {<attribute id>: <expression>}, or for an object "
        "attribute {<attribute id>: {<property>: <expression>}}, in the expression language of mappings.",
    )

    @model_validator(mode="after")
    def _blocks(self) -> "Dataset":
        _exactly_one_block(self, "method", ("table", "sql", "glob", "push"))
        _exactly_one_block(self, "type", ("dimension", "fact"))
        if self.partitions is not None:
            _refuse(self, self._partition_problems())
        return self

    def _partition_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        if self.type != "fact":
            return [
                (
                    ("partitions",),
                    "time partitions need a fact dataset (its created_at_column puts each row in one window); "
                    "remove partitions (a dimension is re-synced with the extract's resync option), or make the "
                    "dataset type: fact with fact: {primary_key_column, created_at_column}",
                )
            ]
        if self.method == "glob":
            return [
                (
                    ("partitions",),
                    "glob datasets are read by file, not by time window; remove partitions (re-read files with the "
                    "extract's resync option), or read the data with a table, sql or push dataset",
                )
            ]
        return []

    @property
    def primary_key(self) -> str:
        return (self.dimension or self.fact).primary_key_column  # type: ignore[union-attr]

    @property
    def cursor_column(self) -> str | None:
        """The column that makes reads incremental: last_modified for dimensions, created_at for facts."""
        return self.fact.created_at_column if self.fact else self.dimension.last_modified_column  # type: ignore[union-attr]

    @property
    def is_deleted_column(self) -> str | None:
        return self.dimension.is_deleted_column if self.dimension else None


# ---------------------------------------------------------------------------- destinations


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]


class RequestTemplate(Block):
    method: HttpMethod = "POST"
    uri: EnvStr
    headers: dict[str, Secret] = {}
    body: str | None = None


class WebhookBatch(Block):
    request_template: RequestTemplate
    format: Literal["json"] = "json"
    max_records_per_batch: int = Field(default=1000, ge=1)
    max_bytes_per_batch: int = Field(default=5_000_000, ge=1024)
    gzip: bool = False
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_attempts: int = Field(
        default=8, ge=1, description="Tries per request before its records go to the dead letter."
    )
    retry_initial_backoff_seconds: float = Field(default=1.0, ge=0)
    retry_max_backoff_seconds: float = Field(default=60.0, ge=0)
    max_failed_batches_in_a_row: int = Field(
        default=3,
        ge=1,
        description="Batches in a row that spend their retries before the load stops (the rest stay pending).",
    )


class WebhookRecord(Block):
    request_template: RequestTemplate
    max_concurrency: int | None = Field(default=None, ge=1)
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    max_attempts: int = Field(default=8, ge=1)
    retry_initial_backoff_seconds: float = Field(default=1.0, ge=0)
    retry_max_backoff_seconds: float = Field(default=60.0, ge=0)
    max_failed_batches_in_a_row: int = Field(default=3, ge=1)


class Signing(Block):
    """Sign every request (``X-Prequel-Webhook-Signature``) with this RSA private key (PEM, from the environment)."""

    private_key: Secret


class Destination(Entry):
    type: Literal["webhook_batch", "webhook_record"]
    record_schema: dict[str, Any]
    max_records_per_minute: int = Field(default=3000, ge=1, le=10**9)
    max_concurrency: int = Field(default=1, ge=1)
    signing: Signing | None = None
    webhook_batch: WebhookBatch | None = None
    webhook_record: WebhookRecord | None = None

    @model_validator(mode="after")
    def _one_block(self) -> "Destination":
        _exactly_one_block(self, "type", ("webhook_batch", "webhook_record"))
        if self.record_schema.get("type", "object") != "object":
            raise ValueError("record_schema must describe an object (`type: object`)")
        if self.webhook_batch is not None and self.webhook_batch.request_template.body is not None:
            raise ValueError(
                "webhook_batch.request_template.body is not supported: a batch's body is the Batch API envelope; "
                "remove it, or use type: webhook_record for a custom body per record"
            )
        return self

    @property
    def concurrency(self) -> int:
        """Concurrent requests: ``webhook_record.max_concurrency`` if set, else ``max_concurrency``."""
        if self.webhook_record is not None and self.webhook_record.max_concurrency is not None:
            return self.webhook_record.max_concurrency
        return self.max_concurrency

    @property
    def webhook(self) -> WebhookBatch | WebhookRecord:
        return self.webhook_batch or self.webhook_record  # type: ignore[return-value]


# ---------------------------------------------------------------------------- streams


class ColumnRef(Block):
    name: str


class Expression(Block):
    expr: str


class Mapping(Block):
    target_field: str
    field_type: Literal["field", "expression"]
    column: ColumnRef | None = None
    expression: Expression | None = None

    @model_validator(mode="after")
    def _one_block(self) -> "Mapping":
        block = "column" if self.field_type == "field" else "expression"
        if getattr(self, block) is None:
            example = "column: {name: <source column>}" if block == "column" else 'expression: {expr: "<expression>"}'
            raise ValueError(f"field_type is '{self.field_type}' but the '{block}' block is missing; add `{example}`")
        other = "expression" if block == "column" else "column"
        if getattr(self, other) is not None:
            raise ValueError(f"field_type is '{self.field_type}' but an '{other}' block is also set; remove it")
        return self


class Stream(Entry):
    dataset_id: Id
    destination_id: Id
    mappings: list[Mapping] = Field(min_length=1)
    is_enabled: bool = True
    description: str | None = None
    dead_letter_check: Literal["warn", "error"] = Field(
        default="warn", description="Severity of the Dagster check that fails while the stream has dead letters."
    )


# ---------------------------------------------------------------------------- notifications


NotificationVendor = Literal["generic_post", "generic_get", "slack", "pagerduty", "datadog"]
NOTIFICATION_VENDORS: tuple[str, ...] = get_args(NotificationVendor)
NotificationEventType = Literal[
    "extract.failed", "load.failed", "dead_letters.grew", "check.failed", "freshness.missed"
]
NOTIFICATION_EVENT_TYPES: tuple[str, ...] = get_args(NotificationEventType)
SLACK_WEBHOOK_PREFIX = "https://hooks.slack.com/services/"
_URL_VENDORS = ("generic_post", "generic_get", "slack")
_KEY_VENDORS = {"pagerduty": "the Events API v2 integration's routing key", "datadog": "a Datadog API key"}


def slack_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Slack incoming webhook (``https://hooks.slack.com/services/...``); None if it is."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "is not a URL"
    rest = parts.path[len("/services/") :] if parts.path.startswith("/services/") else ""
    if (
        parts.scheme != "https"
        or parts.hostname != "hooks.slack.com"
        or port is not None
        or parts.username is not None
        or not rest.strip("/")
        or not url.startswith(SLACK_WEBHOOK_PREFIX)
    ):
        return (
            f"must be a Slack incoming webhook, {SLACK_WEBHOOK_PREFIX}T.../B.../...: copy it from the Slack "
            "app's Incoming Webhooks page"
        )
    return None


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not an absolute http(s) URL with a host; None if it is."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return "is not a URL; write it as https://host/path"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host, such as https://alerts.example.com/prequel"
    if any(c in url for c in "\r\n\t ") or any(ord(c) < 32 for c in url):
        return "must not contain spaces or control characters; percent-encode them"
    if parts.fragment or url.endswith("#"):
        return "has a #fragment, which is never sent to the server; remove it"
    return None


class Notification(Entry):
    """A failure subscription (Prequel's ``webhook``): one vendor, a scope (one provider, or every
    provider when ``provider_id`` is unset) and the event types it listens to."""

    vendor: NotificationVendor
    url: EnvStr | None = Field(
        default=None,
        description="Where to send: required for generic_post, generic_get and slack (a "
        "https://hooks.slack.com/services/... URL); for pagerduty and datadog it replaces their public "
        "endpoint (the Datadog EU site, a proxy).",
    )
    api_key: Secret | None = Field(
        default=None,
        description="pagerduty: the routing (integration) key; datadog: the API key; generic_*: sent as the "
        "X-API-KEY header when set. Write-only.",
    )
    provider_id: Id | None = Field(
        default=None, description="Only this provider's events; unset: every provider's (the company's key only)."
    )
    events: list[NotificationEventType] = Field(
        default_factory=lambda: list(NOTIFICATION_EVENT_TYPES),  # type: ignore[arg-type]
        description="The event types to send (default: all of them).",
    )
    is_enabled: bool = True
    signing: Signing | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and isinstance(data.get("id"), str):
            data = {**data, "name": data["id"]}
        return data

    @model_validator(mode="after")
    def _vendor_fields(self) -> "Notification":
        _refuse(self, self._problems())
        return self

    def _problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        vendor = self.vendor
        if vendor in _URL_VENDORS and not self.url:
            example = (
                SLACK_WEBHOOK_PREFIX + "T000/B000/XXXX" if vendor == "slack" else "https://alerts.example.com/prequel"
            )
            problems.append((("url",), f"vendor is {vendor} but url is missing; add `url: {example}`"))
        if self.url:
            problem = slack_url_problem(self.url) if vendor == "slack" else http_url_problem(self.url)
            if problem:
                problems.append((("url",), problem))
        if vendor in _KEY_VENDORS and (self.api_key is None or not self.api_key.template):
            problems.append(
                (
                    ("api_key",),
                    f"vendor is {vendor} but api_key is missing; add `api_key: ${{{vendor.upper()}_API_KEY}}` "
                    f"({_KEY_VENDORS[vendor]})",
                )
            )
        if vendor == "slack" and self.api_key is not None:
            problems.append(
                (("api_key",), "a Slack incoming webhook takes no api_key (its URL is the credential); remove it")
            )
        if not self.events:
            problems.append(
                (
                    ("events",),
                    f"lists no event type; list some of {', '.join(NOTIFICATION_EVENT_TYPES)} (or leave events "
                    "out for all of them), or set is_enabled: false",
                )
            )
        seen: set[str] = set()
        for i, event in enumerate(self.events):
            if event in seen:
                problems.append((("events", i), f"'{event}' is listed twice; remove one"))
            seen.add(event)
        return problems

    def listens_to(self, event_type: str, provider_id: str | None) -> bool:
        """Whether this subscription gets an event of this type for this provider."""
        return (
            self.is_enabled
            and event_type in self.events
            and (self.provider_id is None or self.provider_id == provider_id)
        )


# ---------------------------------------------------------------------------- data streams (issue 14)

from .data_streams import (  # noqa: E402  (they build on the entries above)
    DATA_STREAMS_NAMESPACE,
    AttributeDefinition,
    DataStream,
    data_stream_chain,
    data_stream_dataset,
)

# ---------------------------------------------------------------------------- the whole file


class PrequelConfig(Block):
    """Everything one ``prequel.yaml`` declares."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datalakes: list[Datalake] = []
    providers: list[Provider] = []
    products: list[Product] = []
    sources: list[Source] = []
    datasets: list[Dataset] = []
    destinations: list[Destination] = []
    streams: list[Stream] = []
    notifications: list[Notification] = []
    attributes: list[AttributeDefinition] = []
    data_streams: list[DataStream] = []

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _origin: str = PrivateAttr(default="<config>")
    _indexes: dict[str, tuple[list[Any], dict[str, Any]]] = PrivateAttr(default_factory=dict)

    @property
    def base_dir(self) -> Path:
        """Directory relative paths in the config (sqlite files, local lakes) are resolved against."""
        return self._base_dir

    @property
    def origin(self) -> str:
        return self._origin

    def resolve_path(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self._base_dir / p).resolve()

    # Lookups by id (KeyError if absent); the loader has checked every reference exists.
    def datalake(self, id: str) -> Datalake:
        return self._by_id("datalakes", id)

    def provider(self, id: str) -> Provider:
        return self._by_id("providers", id)

    def source(self, id: str) -> Source:
        return self._by_id("sources", id)

    def dataset(self, id: str) -> Dataset:
        """A provider dataset, or the dataset a data stream's commits make (what a stream may deliver)."""
        try:
            return self._by_id("datasets", id)  # type: ignore[no-any-return]
        except KeyError:
            if self.is_data_stream(id):
                return data_stream_dataset(self.data_stream(id))
            raise

    def data_stream(self, id: str) -> DataStream:
        return self._by_id("data_streams", id)  # type: ignore[no-any-return]

    def is_data_stream(self, id: str) -> bool:
        try:
            self._by_id("data_streams", id)
        except KeyError:
            return False
        return True

    def attribute(self, id: int) -> AttributeDefinition:
        return self._by_id("attributes", id)  # type: ignore[arg-type,no-any-return]  # (integer ids)

    def destination(self, id: str) -> Destination:
        return self._by_id("destinations", id)

    def stream(self, id: str) -> Stream:
        return self._by_id("streams", id)

    def notification(self, id: str) -> Notification:
        return self._by_id("notifications", id)

    def provider_of_dataset(self, dataset: Dataset) -> Provider:
        return self.chain(dataset.id).provider

    def chain(self, dataset_id: str) -> "DatasetChain":
        """The dataset with what it hangs from: its source, the source's provider, the provider's datalake."""
        dataset = self.dataset(dataset_id)
        if dataset.source_id == DATA_STREAMS_NAMESPACE:
            return data_stream_chain(self, self.data_stream(dataset_id), dataset)
        source = self.source(dataset.source_id)
        provider = self.provider(source.provider_id)
        return DatasetChain(dataset, source, provider, self.datalake(provider.datalake_id))

    def streams_of_dataset(self, dataset_id: str) -> list[Stream]:
        return [s for s in self.streams if s.dataset_id == dataset_id]

    def _by_id(self, kind: str, id: str) -> Any:
        """A dict per kind, built on first use (thousands of providers: no scan per lookup)."""
        entries = getattr(self, kind)
        # (not self._indexes: pydantic's __getattr__ for private attributes costs more than the lookup)
        indexes: dict[str, tuple[list[Any], dict[str, Any]]] = self.__pydantic_private__["_indexes"]  # type: ignore[index]
        built = indexes.get(kind)
        if built is None or built[0] is not entries:  # (a model_copy shares this dict but not the lists)
            built = indexes[kind] = (entries, {})
            for entry in reversed(entries):
                built[1][entry.id] = entry  # the first one wins, as a scan would
        return built[1][id]


@functools.lru_cache(maxsize=1 << 16)
def sanitize_name(text: str) -> str:
    """Dagster op and group names allow only ``[A-Za-z0-9_]`` (memoized: the cross-checks ask for
    every op name of the config, and the API runs them on each change)."""
    return _NOT_NAME.sub("_", text)


_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


@dataclass(frozen=True)
class DatasetChain:
    """One lookup for dataset -> source -> provider -> datalake (see :meth:`PrequelConfig.chain`)."""

    dataset: Dataset
    source: Source
    provider: Provider
    datalake: Datalake
