"""Redshift, Snowflake and BigQuery through their SQLAlchemy dialects: the queries each is sent
(identifiers quoted by the dialect, the cursor bound as a parameter) and the connection settings
each is given. No vendor server runs here, so these check what we send, not the answers."""

import datetime as dt

import pytest
import sqlalchemy as sa
from snowflake.sqlalchemy.snowdialect import SnowflakeDialect
from sqlalchemy_bigquery import BigQueryDialect
from sqlalchemy_redshift.dialect import RedshiftDialect_psycopg2

from prequel_dagster.config import load_config
from prequel_dagster.sources.sql import engine_spec, select_changed, select_query

BOUND = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
DIALECTS = {"redshift": RedshiftDialect_psycopg2(), "snowflake": SnowflakeDialect(), "bigquery": BigQueryDialect()}


def odd_table(schema: str | None = "Sales Data") -> sa.Table:
    return sa.Table(
        "Order Lines",
        sa.MetaData(),
        sa.Column("ID", sa.BigInteger, primary_key=True),
        sa.Column("updated at", sa.DateTime(timezone=True)),
        sa.Column('say "hi"', sa.Text),
        schema=schema,
    )


@pytest.mark.parametrize("vendor", sorted(DIALECTS))
def test_incremental_table_reads_quote_identifiers_and_bind_the_cursor(vendor):
    dialect = DIALECTS[vendor]
    compiled = select_changed(odd_table(), "updated at", BOUND).compile(dialect=dialect)
    text = str(compiled)
    quote = "`" if vendor == "bigquery" else '"'
    assert f"{quote}updated at{quote} >=" in text and f"{quote}Order Lines{quote}" in text
    assert "2026" not in text  # the bound travels as a parameter, never pasted into SQL
    assert BOUND in compiled.params.values()
    assert "WHERE" not in str(select_changed(odd_table(), "updated at", None).compile(dialect=dialect))


@pytest.mark.parametrize("vendor", sorted(DIALECTS))
def test_sql_datasets_wrap_the_query_and_quote_the_cursor_column(vendor):
    dialect = DIALECTS[vendor]
    stmt = select_query(dialect, "select * from orders;", "Updated At", BOUND)
    compiled = stmt.compile(dialect=dialect)
    quote = "`" if vendor == "bigquery" else '"'
    assert str(compiled).startswith("SELECT * FROM (select * from orders) AS prequel_source WHERE ")
    assert f"{quote}Updated At{quote} >=" in str(compiled) and BOUND in compiled.params.values()


def source_config(tmp_path, vendor, block):
    return load_config(
        {
            "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}],
            "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
            "sources": [{"id": "acme-db", "name": "db", "vendor": vendor, "provider_id": "acme", vendor: block}],
        },
        base_dir=str(tmp_path),
    )


def test_connection_settings_are_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", "s3cret")
    for vendor in ("redshift", "redshift_serverless"):
        for disable_ssl, sslmode in ((True, "disable"), (False, "require")):
            config = source_config(
                tmp_path,
                vendor,
                {
                    "host": "cluster.example.com",
                    "database": "sales",
                    "disable_ssl": disable_ssl,
                    "connection_timeout_in_seconds": 7,
                    "auth_method": "password_auth",
                    "password_auth": {"username": "u", "password": "${DB_PASSWORD}"},
                },
            )
            url, kwargs = engine_spec(config.source("acme-db"), config)
            assert url.drivername == "redshift+psycopg2" and url.port == 5439 and url.password == "s3cret"
            assert kwargs["connect_args"]["sslmode"] == sslmode and kwargs["connect_args"]["connect_timeout"] == 7

    config = source_config(
        tmp_path,
        "snowflake",
        {
            "host": "ab12345.eu-west-1.snowflakecomputing.com",
            "database": "SALES",
            "schema": "PUBLIC",
            "username": "u",
            "warehouse": "LOAD_WH",
            "role": "READER",
            "connection_timeout_in_seconds": 9,
            "auth_method": "password_auth",
            "password_auth": {"username": "u", "password": "${DB_PASSWORD}"},
        },
    )
    url, kwargs = engine_spec(config.source("acme-db"), config)
    assert url.host == "ab12345.eu-west-1" and url.database == "SALES/PUBLIC"
    assert dict(url.query) == {"warehouse": "LOAD_WH", "role": "READER"}
    assert kwargs["connect_args"]["login_timeout"] == 9

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    monkeypatch.setenv(
        "SF_KEY",
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    config = source_config(
        tmp_path,
        "snowflake",
        {
            "host": "ab12345",
            "database": "SALES",
            "username": "u",
            "auth_method": "public_key_auth",
            "public_key_auth": {"private_key": "${SF_KEY}"},
        },
    )
    url, kwargs = engine_spec(config.source("acme-db"), config)
    assert url.password is None and kwargs["connect_args"]["private_key"].startswith(b"0\x82")

    monkeypatch.setenv("BQ_KEY", '{"type": "service_account", "project_id": "p"}')
    config = source_config(
        tmp_path,
        "bigquery",
        {
            "project_id": "acme-analytics",
            "region": "EU",
            "auth_method": "gcp_service_account_key",
            "gcp_service_account_key": {"service_account_key": "${BQ_KEY}"},
        },
    )
    url, kwargs = engine_spec(config.source("acme-db"), config)
    assert url == "bigquery://acme-analytics" and kwargs == {
        "credentials_info": {"type": "service_account", "project_id": "p"},
        "location": "EU",
    }
