"""Two providers, each with its own PostgreSQL database and users table, and a config to import them."""

import datetime as dt
from typing import Any

import psycopg

BASE = dt.datetime(2026, 11, 1, 12, 0, 0, tzinfo=dt.UTC)


def create_provider_db(pg: dict, name: str, *, users: int, domain: str, password: str) -> None:
    """A database ``name`` owned by a login role ``name`` with ``password``, holding ``users`` rows."""
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    with psycopg.connect(dsn(pg, name, name, password)) as conn:
        conn.execute(
            """CREATE TABLE public.users (
                 id bigint PRIMARY KEY, email text NOT NULL, first_name text, last_name text,
                 balance numeric(12,2), updated_at timestamptz NOT NULL, is_deleted boolean NOT NULL DEFAULT false)"""
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO users VALUES (%s,%s,%s,%s,%s,%s,false)",
                [
                    (i, f"u{i}@{domain}", f"First{i}", f"Last{i}", f"{i}.50", BASE + dt.timedelta(seconds=i))
                    for i in range(1, users + 1)
                ],
            )


def dsn(pg: dict, database: str, user: str, password: str) -> str:
    return f"postgresql://{user}:{password}@{pg['host']}:{pg['port']}/{database}"


def execute(pg: dict, database: str, password: str, sql: str, params: Any = None) -> None:
    with psycopg.connect(dsn(pg, database, database, password)) as conn:
        conn.execute(sql, params)


def two_provider_config(pg: dict, lake: str, receiver_url: str, **destination_overrides: Any) -> dict:
    def source(provider: str) -> dict:
        return {
            "id": f"{provider}-pg",
            "name": f"{provider}-postgres",
            "vendor": "postgres",
            "provider_id": provider,
            "postgres": {
                "host": pg["host"],
                "port": pg["port"],
                "database": provider,
                "auth_method": "password_auth",
                "password_auth": {"username": provider, "password": "${" + provider.upper() + "_PG_PASSWORD}"},
            },
        }

    def dataset(provider: str) -> dict:
        return {
            "id": f"{provider}-users",
            "name": "users",
            "source_id": f"{provider}-pg",
            "method": "table",
            "table": {"source_table_namespace": "public", "source_table_name": "users"},
            "type": "dimension",
            "dimension": {
                "primary_key_column": "id",
                "last_modified_column": "updated_at",
                "is_deleted_column": "is_deleted",
            },
            "frequency_minutes": 60,
        }

    def stream(provider: str) -> dict:
        return {
            "id": f"{provider}-users-app",
            "name": "users-stream",
            "dataset_id": f"{provider}-users",
            "destination_id": "app",
            "mappings": [
                {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}},
                {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
                {
                    "target_field": "full_name",
                    "field_type": "expression",
                    "expression": {"expr": 'first_name + " " + last_name'},
                },
                {"target_field": "balance", "field_type": "field", "column": {"name": "balance"}},
            ],
        }

    webhook = {
        "request_template": {"uri": receiver_url + "/batches", "headers": {"Authorization": "Bearer ${APP_TOKEN}"}},
        "max_records_per_batch": 20,
        "retry_initial_backoff_seconds": 0.05,
        "retry_max_backoff_seconds": 0.2,
    }
    webhook.update(destination_overrides)
    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": lake}}],
        "providers": [
            {"id": "acme", "name": "Acme Corp", "datalake_id": "lake", "products": ["all"]},
            {"id": "globex", "name": "Globex", "datalake_id": "lake", "products": ["all"]},
        ],
        "sources": [source("acme"), source("globex")],
        "datasets": [dataset("acme"), dataset("globex")],
        "destinations": [
            {
                "id": "app",
                "name": "app-users",
                "type": "webhook_batch",
                "max_records_per_minute": 1_000_000,
                "record_schema": {
                    "type": "object",
                    "required": ["id", "email"],
                    "properties": {
                        "id": {"type": "string"},
                        "email": {"type": "string"},
                        "full_name": {"type": "string"},
                        "balance": {"type": "number"},
                    },
                },
                "webhook_batch": webhook,
            }
        ],
        "streams": [stream("acme"), stream("globex")],
    }
