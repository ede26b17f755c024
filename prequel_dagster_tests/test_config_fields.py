"""Every accepted field does something, or is refused when the config loads with its path and the fix.

* ``postgres.schema`` is the default namespace of ``table`` datasets and the ``search_path`` of ``sql``
  datasets (on the real PostgreSQL, through the ADBC reader and the SQLAlchemy one);
* Redshift IAM auth logs in with a temporary password from ``GetClusterCredentials`` /
  ``GetCredentials`` (AWS is stubbed with botocore's Stubber: no AWS on this machine), and the
  fields it needs (``cluster``, ``region``, ``workgroup``, ``username``) are refused where unused;
* ``snowflake.port`` reaches the connector; ``gcs.region`` is documented as informational;
* SSH tunnels on bucket sources are refused; Prequel's ``aws_iam_role: {aws_iam_role: arn}`` spelling;
* ``prequel-dagster validate`` reports field and cross-reference errors in one pass, and exits 1
  when there is no config to check.
"""

import copy
import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore.stub import Stubber

from prequel_dagster.config import ConfigError, load_config
from prequel_dagster.config.errors import SourceError
from prequel_dagster.config.models import GcsSource
from prequel_dagster.config.secrets import redact
from prequel_dagster.engine import run_extract
from prequel_dagster.sources import sql as sql_source
from prequel_dagster.sources.sql import SqlReader, engine_spec
from prequel_dagster.stores.s3 import s3_credentials

from .pg_helpers import dsn

LAKE = {"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}
PROVIDER = {"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}


def with_source(vendor: str, block: dict, **extra) -> dict:
    return {
        "datalakes": [LAKE],
        "providers": [PROVIDER],
        "sources": [{"id": "acme-db", "name": "db", "vendor": vendor, "provider_id": "acme", vendor: block}],
        **extra,
    }


def issues_of(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    return [str(i) for i in info.value.issues]


# ---------------------------------------------------------------------------- postgres.schema


PASSWORD = "schemas-" + os.urandom(4).hex()


@pytest.fixture
def schemas_db(pg, monkeypatch):
    """Database ``schemas``: ``"Sales Data".orders`` (3 rows) and ``public.orders`` (1 row)."""
    monkeypatch.setenv("SCHEMAS_PG_PASSWORD", PASSWORD)
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS schemas WITH (FORCE)")
        admin.execute("DROP ROLE IF EXISTS schemas")
        admin.execute(f"CREATE ROLE schemas LOGIN PASSWORD '{PASSWORD}'")
        admin.execute("CREATE DATABASE schemas OWNER schemas")
    with psycopg.connect(dsn(pg, "schemas", "schemas", PASSWORD), autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Sales Data"')
        for table, rows in (('"Sales Data".orders', 3), ("public.orders", 1)):
            conn.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, place text, updated_at timestamptz NOT NULL)")
            place = table.split(".")[0].strip('"')
            conn.execute(f"INSERT INTO {table} SELECT i, %s, now() FROM generate_series(1, %s) i", (place, rows))
    return pg


def schemas_config(pg, tmp_path, schema: str | None = "Sales Data") -> dict:
    block = {
        "host": pg["host"],
        "port": pg["port"],
        "database": "schemas",
        "disable_ssl": True,
        "auth_method": "password_auth",
        "password_auth": {"username": "schemas", "password": "${SCHEMAS_PG_PASSWORD}"},
    }
    if schema is not None:
        block["schema"] = schema

    def dataset(id: str, **method) -> dict:
        return {
            "id": id,
            "name": id,
            "source_id": "acme-db",
            **method,
            "type": "dimension",
            "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
        }

    return with_source(
        "postgres",
        block,
        datasets=[
            dataset("by-default", method="table", table={"source_table_name": "orders"}),
            dataset("by-query", method="sql", sql={"query": "select id, place, updated_at from orders"}),
            dataset(
                "by-namespace",
                method="table",
                table={"source_table_namespace": "public", "source_table_name": "orders"},
            ),
        ],
    ) | {"datalakes": [dict(LAKE, local={"path": str(tmp_path / "lake")})]}


def test_postgres_schema_is_where_table_and_sql_datasets_read(schemas_db, tmp_path):
    config = load_config(schemas_config(schemas_db, tmp_path), base_dir=str(tmp_path))
    assert run_extract(config, "by-default").counts.records_new_inserted == 3  # "Sales Data".orders
    assert run_extract(config, "by-query").counts.records_new_inserted == 3  # search_path "Sales Data"
    assert run_extract(config, "by-namespace").counts.records_new_inserted == 1  # an explicit namespace wins
    # without schema: public, as before
    plain = load_config(schemas_config(schemas_db, tmp_path / "plain", schema=None), base_dir=str(tmp_path))
    assert run_extract(plain, "by-default").counts.records_new_inserted == 1
    assert run_extract(plain, "by-query").counts.records_new_inserted == 1


def test_the_sqlalchemy_reader_honours_the_schema_too(schemas_db, tmp_path):
    """Redshift's path (SQLAlchemy): default namespace on reflection, search_path set on connect."""
    config = load_config(schemas_config(schemas_db, tmp_path), base_dir=str(tmp_path))
    source = config.source("acme-db")

    def places(dataset_id: str) -> list[str]:
        batches = list(SqlReader(source, config.dataset(dataset_id), config).read())
        return [p for b in batches for p in b.column("place").to_pylist()]

    assert places("by-default") == ["Sales Data"] * 3
    assert places("by-query") == ["Sales Data"] * 3
    assert places("by-namespace") == ["public"]


def test_a_missing_table_names_the_source_schema(schemas_db, tmp_path):
    raw = schemas_config(schemas_db, tmp_path, schema="nowhere")
    config = load_config(raw, base_dir=str(tmp_path))
    with pytest.raises(SourceError, match="check the source's schema and table.source_table_name"):
        list(SqlReader(config.source("acme-db"), config.dataset("by-default"), config).read())
    with pytest.raises(SourceError, match="acme-db") as info:
        run_extract(config, "by-query")
    assert "orders" in str(info.value)


def test_redshift_search_path_is_quoted_by_its_dialect():
    from sqlalchemy_redshift.dialect import RedshiftDialect_psycopg2

    from prequel_dagster.sources.sql import search_path_statement

    dialect = RedshiftDialect_psycopg2()
    assert search_path_statement(dialect, "sales") == "SET search_path TO sales"
    assert search_path_statement(dialect, 'Sales "Data"') == 'SET search_path TO "Sales ""Data"""'


# ---------------------------------------------------------------------------- Redshift IAM auth


EXPIRES = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
ROLE = "arn:aws:iam::123456789012:role/prequel-reader"
CLUSTER_HOST = "acme-cluster.c1a2b3c4d5e6.eu-west-1.redshift.amazonaws.com"
SERVERLESS_HOST = "acme-wg.123456789012.us-east-2.redshift-serverless.amazonaws.com"


def stubbed(service: str, region: str) -> tuple:
    client = boto3.client(service, region_name=region, aws_access_key_id="stub", aws_secret_access_key="stub")
    return client, Stubber(client)


@pytest.fixture
def aws(monkeypatch):
    """The AWS clients ``redshift_iam_login`` makes, stubbed; ``made`` records (service, region, credentials)."""
    clients: dict[str, tuple] = {}
    made: list[tuple] = []

    def client_for(service, region, credentials, timeout):
        made.append((service, region, dict(credentials)))
        return clients[service][0]

    monkeypatch.setattr(sql_source, "_aws_client", client_for)

    def add(service: str, region: str) -> Stubber:
        clients[service] = stubbed(service, region)
        return clients[service][1]

    add.made = made  # type: ignore[attr-defined]
    yield add
    for _, stub in clients.values():
        stub.assert_no_pending_responses()


def test_redshift_iam_with_access_keys_logs_in_with_cluster_credentials(tmp_path, monkeypatch, aws):
    monkeypatch.setenv("RS_SECRET", "the-secret-key")
    config = load_config(
        with_source(
            "redshift",
            {
                "host": "rs.internal.acme",
                "database": "sales",
                "cluster": "acme-cluster",
                "region": "eu-west-1",
                "username": "prequel",
                "auth_method": "aws_access_keys",
                "disable_ssl": False,
                "aws_access_keys": {"access_id": "AKIAEXAMPLEKEY12345", "secret_key": "${RS_SECRET}"},
            },
        )
    )
    redshift = aws("redshift", "eu-west-1")
    redshift.add_response(
        "get_cluster_credentials",
        {"DbUser": "IAM:prequel", "DbPassword": "temporary-password-1", "Expiration": EXPIRES},
        expected_params={
            "DbUser": "prequel",
            "DbName": "sales",
            "ClusterIdentifier": "acme-cluster",
            "DurationSeconds": 3600,
            "AutoCreate": False,
        },
    )
    with redshift:
        url, kwargs = engine_spec(config.source("acme-db"), config)
    assert (url.drivername, url.username, url.password) == ("redshift+psycopg2", "IAM:prequel", "temporary-password-1")
    assert (url.host, url.port, url.database) == ("rs.internal.acme", 5439, "sales")
    assert kwargs["connect_args"]["sslmode"] == "require"
    assert aws.made == [
        ("redshift", "eu-west-1", {"access_key": "AKIAEXAMPLEKEY12345", "secret_key": "the-secret-key"})
    ]
    assert redact("password temporary-password-1") == "password ***"  # masked in every message


def test_redshift_iam_role_in_prequels_spelling_with_cluster_and_region_from_the_host(aws):
    config = load_config(
        with_source(
            "redshift",
            {
                "host": CLUSTER_HOST,
                "database": "sales",
                "username": "prequel",
                "auth_method": "aws_iam_role",
                "aws_iam_role": {"aws_iam_role": ROLE},
            },
        )
    )
    sts = aws("sts", "eu-west-1")
    sts.add_response(
        "assume_role",
        {
            "Credentials": {
                "AccessKeyId": "ASIAROLEKEY123456789",
                "SecretAccessKey": "role-secret",
                "SessionToken": "role-token",
                "Expiration": EXPIRES,
            }
        },
        expected_params={"RoleArn": ROLE, "RoleSessionName": "prequel-dagster"},
    )
    redshift = aws("redshift", "eu-west-1")
    redshift.add_response(
        "get_cluster_credentials",
        {"DbUser": "IAM:prequel", "DbPassword": "temporary-password-2", "Expiration": EXPIRES},
        expected_params={
            "DbUser": "prequel",
            "DbName": "sales",
            "ClusterIdentifier": "acme-cluster",
            "DurationSeconds": 3600,
            "AutoCreate": False,
        },
    )
    with sts, redshift:
        url, _ = engine_spec(config.source("acme-db"), config)
    assert (url.username, url.password, url.host) == ("IAM:prequel", "temporary-password-2", CLUSTER_HOST)
    # the role is assumed with this machine's credentials, then Redshift is asked as the role
    assert aws.made == [
        ("sts", "eu-west-1", {}),
        (
            "redshift",
            "eu-west-1",
            {"access_key": "ASIAROLEKEY123456789", "secret_key": "role-secret", "session_token": "role-token"},
        ),
    ]


def test_redshift_serverless_iam_logs_in_with_workgroup_credentials(monkeypatch, aws):
    monkeypatch.setenv("RS_SECRET", "the-secret-key")
    config = load_config(
        with_source(
            "redshift_serverless",
            {
                "host": SERVERLESS_HOST,
                "database": "dev",
                "auth_method": "aws_access_keys",
                "disable_ssl": True,
                "aws_access_keys": {"access_id": "AKIAEXAMPLEKEY12345", "secret_key": "${RS_SECRET}"},
            },
        )
    )
    serverless = aws("redshift-serverless", "us-east-2")
    serverless.add_response(
        "get_credentials",
        {"dbUser": "IAM:reader", "dbPassword": "temporary-password-3", "expiration": EXPIRES},
        expected_params={"workgroupName": "acme-wg", "dbName": "dev", "durationSeconds": 3600},
    )
    with serverless:
        url, kwargs = engine_spec(config.source("acme-db"), config)
    assert (url.username, url.password, url.host, url.database) == (
        "IAM:reader",
        "temporary-password-3",
        SERVERLESS_HOST,
        "dev",
    )
    assert kwargs["connect_args"]["sslmode"] == "disable"
    assert aws.made[0][:2] == ("redshift-serverless", "us-east-2")


@pytest.mark.parametrize(
    "code, fix",
    [
        ("ClusterNotFound", "check cluster (the cluster identifier) and region"),
        (
            "AccessDenied",
            "allow the IAM user of aws_access_keys redshift:GetClusterCredentials on "
            "dbuser:acme-cluster/prequel and dbname:acme-cluster/sales",
        ),
        ("InvalidClientTokenId", "AWS refused the keys: check aws_access_keys.access_id and secret_key"),
    ],
)
def test_redshift_iam_failures_name_the_source_and_the_fix(aws, code, fix):
    config = load_config(
        with_source(
            "redshift",
            {
                "host": CLUSTER_HOST,
                "database": "sales",
                "username": "prequel",
                "auth_method": "aws_access_keys",
                "aws_access_keys": {"access_id": "AKIAEXAMPLEKEY12345", "secret_key": "not-a-real-secret"},
            },
        )
    )
    redshift = aws("redshift", "eu-west-1")
    redshift.add_client_error("get_cluster_credentials", service_error_code=code, service_message="nope")
    with redshift, pytest.raises(SourceError) as info:
        engine_spec(config.source("acme-db"), config)
    message = str(info.value)
    assert message.startswith(
        "source 'acme-db': cannot get a temporary Redshift password for cluster "
        f"'acme-cluster' in eu-west-1 ({code}: nope)"
    )
    assert message.endswith(fix) and "not-a-real-secret" not in message


def test_a_role_that_cannot_be_assumed_names_the_source(aws):
    config = load_config(
        with_source(
            "redshift_serverless",
            {
                "host": SERVERLESS_HOST,
                "database": "dev",
                "auth_method": "aws_iam_role",
                "aws_iam_role": {"aws_iam_role_arn": ROLE},
            },
        )
    )
    sts = aws("sts", "us-east-2")
    sts.add_client_error("assume_role", service_error_code="AccessDenied", service_message="not trusted")
    with sts, pytest.raises(SourceError, match=f"source 'acme-db': cannot assume aws_iam_role {ROLE}.*trust policy"):
        engine_spec(config.source("acme-db"), config)


def test_redshift_fields_that_would_be_ignored_are_refused_at_load():
    issues = issues_of(
        with_source(
            "redshift",
            {
                "host": "rs.internal.acme",
                "database": "d",
                "workgroup": "wg",
                "use_ssh_tunnel": True,
                "auth_method": "aws_access_keys",
                "aws_access_keys": {"access_id": "a", "secret_key": "b", "password": "p"},
                "password_auth": {"username": "u", "password": "p"},
            },
        )
    )
    assert issues == [
        "sources[0].redshift.use_ssh_tunnel: SSH tunnels are supported for postgres sources only so far; set "
        "use_ssh_tunnel: false and let this machine reach the endpoint directly",
        "sources[0].redshift.password_auth: auth_method is aws_access_keys, so this block would not be used; "
        "remove it, or set auth_method: password_auth",
        "sources[0].redshift.aws_access_keys.password: not used: with aws_access_keys the login password is a "
        "temporary one from Redshift; remove it, or use auth_method: password_auth with password_auth "
        "{username, password}",
        "sources[0].redshift.workgroup: workgroups belong to Redshift Serverless; remove workgroup (a provisioned "
        "cluster is named by cluster), or use vendor: redshift_serverless",
        "sources[0].redshift.username: auth_method aws_access_keys needs the database user to log in as "
        "(GetClusterCredentials' DbUser); set username",
        "sources[0].redshift.cluster: auth_method aws_access_keys needs the cluster identifier to request "
        "credentials; set cluster (host 'rs.internal.acme' is not a <cluster>.<id>.<region>.redshift.amazonaws.com "
        "endpoint it could be read from)",
        "sources[0].redshift.region: auth_method aws_access_keys needs the AWS region of the cluster; set region "
        "(host 'rs.internal.acme' is not a standard redshift endpoint it could be read from)",
    ]
    issues = issues_of(
        with_source(
            "redshift",
            {
                "host": CLUSTER_HOST,
                "database": "d",
                "cluster": "c",
                "region": "eu-west-1",
                "username": "other",
                "password_auth": {"username": "u", "password": "p"},
            },
        )
    )
    assert issues == [
        "sources[0].redshift.region: used only by IAM auth (auth_method: aws_iam_role or aws_access_keys) to request "
        "a temporary password; password_auth connects to host directly: remove region, or switch auth_method",
        "sources[0].redshift.cluster: used only by IAM auth (auth_method: aws_iam_role or aws_access_keys) to "
        "request a temporary password; password_auth connects to host directly: remove cluster, or switch auth_method",
        "sources[0].redshift.username: differs from password_auth.username ('u'), which is the login with "
        "password_auth; remove username",
    ]
    issues = issues_of(
        with_source(
            "redshift_serverless",
            {"host": "wg.example.com", "database": "d", "cluster": "c", "username": "u", "auth_method": "aws_iam_role"},
        )
    )
    assert issues == [
        "sources[0].redshift_serverless.aws_iam_role: auth_method is aws_iam_role but the aws_iam_role block is "
        "missing; add `aws_iam_role: {aws_iam_role_arn: arn:aws:iam::...}`",
        "sources[0].redshift_serverless.cluster: clusters are provisioned Redshift; Redshift Serverless is reached "
        "through its workgroup: remove cluster (set workgroup), or use vendor: redshift",
        "sources[0].redshift_serverless.username: Redshift Serverless IAM logins are the IAM identity's own database "
        "user (GetCredentials takes no user name); remove username, or use password_auth",
        "sources[0].redshift_serverless.workgroup: auth_method aws_iam_role needs the workgroup name to request "
        "credentials; set workgroup (host 'wg.example.com' is not a <workgroup>.<account>.<region>"
        ".redshift-serverless.amazonaws.com endpoint it could be read from)",
        "sources[0].redshift_serverless.region: auth_method aws_iam_role needs the AWS region of the workgroup; set "
        "region (host 'wg.example.com' is not a standard redshift_serverless endpoint it could be read from)",
    ]
    # what Prequel's API returns for a password source (empty IAM fields, the same username) is fine
    config = load_config(
        with_source(
            "redshift",
            {
                "host": CLUSTER_HOST,
                "database": "d",
                "cluster": "",
                "region": "",
                "workgroup": "",
                "username": "u",
                "use_ssh_tunnel": False,
                "password_auth": {"username": "u", "password": "p"},
            },
        )
    )
    assert config.source("acme-db").redshift.username == "u"


# ---------------------------------------------------------------------------- snowflake.port, gcs.region


def test_snowflake_port_reaches_the_connector():
    from snowflake.sqlalchemy.snowdialect import SnowflakeDialect

    def connector_args(port: int | None, host: str = "ab12345.eu-west-1.snowflakecomputing.com") -> dict:
        block = {
            "host": host,
            "database": "SALES",
            "schema": "PUBLIC",
            "username": "u",
            "auth_method": "password_auth",
            "password_auth": {"username": "u", "password": "p"},
        }
        if port is not None:
            block["port"] = port
        config = load_config(with_source("snowflake", block))
        url, kwargs = engine_spec(config.source("acme-db"), config)
        _, opts = SnowflakeDialect().create_connect_args(url)
        return opts | kwargs["connect_args"]

    custom = connector_args(8443)
    assert (custom["host"], int(custom["port"]), custom["account"]) == (
        "ab12345.eu-west-1.snowflakecomputing.com",
        8443,
        "ab12345",
    )
    assert (custom["database"], custom["schema"]) == ("SALES", "PUBLIC")
    assert connector_args(8443, host="ab12345")["host"] == "ab12345.snowflakecomputing.com"
    default = connector_args(None)
    assert (default["host"], int(default["port"]), default["account"]) == (
        "ab12345.eu-west-1.snowflakecomputing.com",
        443,
        "ab12345",
    )


def test_gcs_source_region_is_accepted_and_documented_as_informational():
    config = load_config(
        with_source("gcs", {"bucket_name": "b", "region": "EUROPE-WEST1", "auth_method": "gcp_service_account_role"})
    )
    assert config.source("acme-db").gcs.region == "EUROPE-WEST1"
    assert "reads do not need it" in GcsSource.model_fields["region"].description


# ---------------------------------------------------------------------------- bucket sources, role spelling


S3_KEYS = {"access_key_id": "a", "secret_access_key": "s"}


@pytest.mark.parametrize(
    "vendor, block",
    [
        ("s3", {"bucket_name": "b"}),
        ("s3_compatible", {"host": "minio.acme", "bucket_name": "b", "aws_access_keys": S3_KEYS}),
    ],
)
def test_ssh_tunnels_on_bucket_sources_are_refused(vendor, block):
    tunnel = {"ssh_tunnel_host": "bastion", "ssh_tunnel_username": "u"}
    assert issues_of(with_source(vendor, block | {"use_ssh_tunnel": True, "ssh_tunnel": tunnel})) == [
        f"sources[0].{vendor}.use_ssh_tunnel: SSH tunnels apply to database sources (postgres); a bucket is read "
        "directly over HTTPS from this machine, so a tunnel would not be used: remove use_ssh_tunnel (or set it "
        "to false)",
        f"sources[0].{vendor}.ssh_tunnel: SSH tunnels apply to database sources (postgres); a bucket is read "
        "directly over HTTPS from this machine, so a tunnel would not be used: remove the ssh_tunnel block",
    ]
    assert load_config(with_source(vendor, block | {"use_ssh_tunnel": False})).source("acme-db").settings


def test_aws_iam_role_is_accepted_in_both_spellings():
    for spelling in ("aws_iam_role", "aws_iam_role_arn"):
        raw = with_source("s3", {"bucket_name": "b", "auth_method": "aws_iam_role", "aws_iam_role": {spelling: ROLE}})
        raw["datalakes"] = [
            {
                "id": "lake",
                "name": "lake",
                "storage": "s3",
                "s3": {"bucket_name": "lake", "auth_method": "aws_iam_role", "aws_iam_role": {spelling: ROLE}},
            }
        ]
        config = load_config(raw)
        assert config.source("acme-db").s3.aws_iam_role.aws_iam_role_arn == ROLE
        assert config.datalake("lake").s3.aws_iam_role.aws_iam_role_arn == ROLE
    assert issues_of(
        with_source(
            "s3",
            {
                "bucket_name": "b",
                "auth_method": "aws_iam_role",
                "aws_iam_role": {"aws_iam_role": ROLE, "aws_iam_role_arn": ROLE + "-other"},
            },
        )
    ) == [
        "sources[0].s3.aws_iam_role: both aws_iam_role and aws_iam_role_arn are set, to different roles; keep one "
        "(they are two spellings of the role ARN)"
    ]


def test_s3_credentials_assume_the_role_of_either_spelling():
    config = load_config(
        with_source(
            "s3",
            {
                "bucket_name": "b",
                "region": "eu-west-1",
                "auth_method": "aws_iam_role",
                "aws_iam_role": {"aws_iam_role": ROLE},
            },
        )
    )
    client, sts = stubbed("sts", "eu-west-1")
    sts.add_response(
        "assume_role",
        {
            "Credentials": {
                "AccessKeyId": "ASIAROLEKEY123456789",
                "SecretAccessKey": "role-secret",
                "SessionToken": "role-token",
                "Expiration": EXPIRES,
            }
        },
        expected_params={"RoleArn": ROLE, "RoleSessionName": "prequel-dagster"},
    )
    with sts:
        creds = s3_credentials(config.source("acme-db").s3, "source 'acme-db'", sts=client)
    assert creds == {"access_key": "ASIAROLEKEY123456789", "secret_key": "role-secret", "session_token": "role-token"}


# ---------------------------------------------------------------------------- validate: every error, exit codes


README_EXAMPLE = """
datalakes:
  - {id: lake, name: lake, storage: local, local: {path: lake}}
providers:
  - {id: acme, name: Acme, datalake_id: lake, products: [crm]}
products:
  - {id: crm, name: crm, destinations: [app]}
sources:
  - {id: acme-db, name: db, vendor: sqlite, provider_id: acme, sqlite: {path: acme.db}}
datasets:
  - {id: users, name: users, source_id: acme-db, table: {source_table_name: users},
     type: dimension, dimension: {primary_key_column: id}}
destinations:
  - id: app
    name: app
    type: webhook_batch
    record_schema: {type: object, properties: {id: {type: string}}}
    webhook_batch: {request_template: {uri: "http://127.0.0.1:9/app"}}
  - id: billing
    name: billing
    type: webhook_batch
    record_schema: {type: object, properties: {id: {type: string}}}
    webhook_batch: {request_template: {uri: "http://127.0.0.1:9/billing"}}
streams:
  - id: acme-users
    name: users
    dataset_id: users
    destination_id: billing
    mappings:
      - {target_field: id, field_type: field, column: {nmae: id}}
"""


def validate(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``prequel-dagster validate`` of this checkout, whatever the working directory."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run(
        [sys.executable, "-m", "prequel_dagster.cli", "validate", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )


def test_validate_reports_field_and_reference_errors_in_one_pass(tmp_path):
    path = tmp_path / "prequel.yaml"
    path.write_text(textwrap.dedent(README_EXAMPLE))
    proc = validate(str(path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"{path}: 3 config errors:",
        "  streams[0].mappings[0].column.name: Field required",
        "  streams[0].mappings[0].column.nmae: unknown key; check its spelling against the documented fields",
        "  streams[0].destination_id: destination 'billing' is not in any product of provider 'acme' (products: "
        "crm); add it to one of those products or give the provider the product 'all'",
    ]


def test_references_to_entries_with_field_errors_are_not_reported_again():
    raw = with_source(
        "sqlite",
        {"path": "a.db"},
        datasets=[
            {
                "id": "users",
                "name": "users",
                "source_id": "acme-db",
                "table": {"source_table_name": "users"},
                "type": "dimension",
            },  # no dimension block: a field error
            {
                "id": "orders",
                "name": "orders",
                "source_id": "nope",
                "table": {"source_table_name": "orders"},
                "type": "fact",
                "fact": {"primary_key_column": "id", "created_at_column": "at"},
            },
        ],
        destinations=[
            {
                "id": "app",
                "name": "app",
                "type": "webhook_record",
                "record_schema": {"type": "object"},
                "webhook_record": {"request_template": {"uri": "http://127.0.0.1:9/{{ nope }}"}},
            }
        ],
        streams=[
            {
                "id": "s",
                "name": "s",
                "dataset_id": "users",
                "destination_id": "app",
                "mappings": [{"target_field": "id", "field_type": "expression", "expression": {"expr": "id +"}}],
            },
            {"id": "t", "name": "t", "dataset_id": "gone", "destination_id": "app", "mappings": "oops"},
        ],
    )
    raw["providers"] = [dict(PROVIDER, datalake_id="missing", colour="red")]
    issues = issues_of(raw)
    assert issues[:3] == [
        "providers[0].colour: unknown key; check its spelling against the documented fields",
        "datasets[0]: type is 'dimension' but the 'dimension' block is missing; add `dimension: {...}`",
        "streams[1].mappings: Input should be a valid list",
    ]
    # the checks of the rest all ran: a provider with a field error still has its datalake checked, the
    # stream to the dataset with errors is checked for what does not need it, and nothing is said twice
    assert "providers[0].datalake_id: no datalake with id 'missing'" in issues
    assert "datasets[1].source_id: no source with id 'nope'" in issues
    assert "streams[0].mappings[0].expression.expr: unexpected 'end of expression' at column 5" in issues
    assert "streams[1].dataset_id: no dataset with id 'gone'" in issues
    assert any(i.startswith("destinations[0].webhook_record.request_template.uri:") for i in issues)
    assert not any("'users'" in i or "sources[0].provider_id" in i for i in issues)
    assert len(issues) == len(set(issues)) == 8


def test_a_kind_that_is_not_a_list_does_not_hide_the_other_errors():
    raw = with_source(
        "sqlite",
        {"path": "a.db"},
        datasets={"id": "users"},
        streams=[
            {
                "id": "s",
                "name": "s",
                "dataset_id": "users",
                "destination_id": "app",
                "mappings": [{"target_field": "id", "field_type": "field", "column": {"name": "id"}}],
            }
        ],
    )
    raw["sources"][0]["provider_id"] = "globex"
    assert issues_of(raw) == [
        "datasets: Input should be a valid list",
        "sources[0].provider_id: no provider with id 'globex'",
        "streams[0].destination_id: no destination with id 'app'",
    ]


def test_validate_without_a_config_exits_1_and_says_where_it_looked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREQUEL_CONFIG"}
    proc = validate(cwd=tmp_path, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "no config found" in proc.stderr and "PREQUEL_CONFIG is not set" in proc.stderr
    assert str(tmp_path / "prequel.yaml") in proc.stderr
    env["PREQUEL_CONFIG"] = str(tmp_path / "elsewhere.yaml")  # set, but no such file: a config error, exit 1 too
    proc = validate(cwd=tmp_path, env=env)
    assert proc.returncode == 1 and "elsewhere.yaml" in proc.stderr and "file not found" in proc.stderr


def test_a_large_config_with_errors_is_checked_in_linear_time():
    providers = 4000
    raw = {"datalakes": [LAKE], "products": [], "providers": [], "sources": [], "datasets": []}
    for i in range(providers):
        raw["providers"].append({"id": f"p{i}", "name": f"p{i}", "datalake_id": "lake", "products": ["all"]})
        raw["sources"].append(
            {"id": f"s{i}", "name": "db", "vendor": "sqlite", "provider_id": f"p{i}", "sqlite": {"path": f"{i}.db"}}
        )
        raw["datasets"].append(
            {
                "id": f"d{i}",
                "name": "users",
                "source_id": f"s{i}",
                "table": {"source_table_name": "users"},
                "type": "dimension",
                "dimension": {"primary_key_column": "id"},
            }
        )
    started = time.perf_counter()
    load_config(raw)
    valid = time.perf_counter() - started
    broken = copy.deepcopy(raw)
    for i in range(0, providers, 2):
        broken["datasets"][i]["colour"] = "red"
        broken["datasets"][i + 1]["source_id"] = "nope"
    started = time.perf_counter()
    issues = issues_of(broken)
    with_errors = time.perf_counter() - started
    assert len(issues) == providers
    print(f"valid {valid:.2f}s, with errors {with_errors:.2f}s")
    assert with_errors < 4 * valid + 1.0, (valid, with_errors)
