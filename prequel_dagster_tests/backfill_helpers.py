"""Partitioned fact datasets for the backfill tests: each provider's PostgreSQL ``orders`` table (rows
spread over three days), a customers dimension beside it, and a config streaming both."""

import datetime as dt
import os
from typing import Any

import psycopg

from .pg_helpers import dsn

DAY0 = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
HOURS = (0, 4, 8, 12, 16, 20)  # six orders a day
DAYS = 3


def day_key(day: int) -> str:
    return (DAY0 + dt.timedelta(days=day)).strftime("%Y-%m-%d")


def window(day: int, days: int = 1) -> tuple[dt.datetime, dt.datetime]:
    return DAY0 + dt.timedelta(days=day), DAY0 + dt.timedelta(days=day + days)


def order_ids(provider: str, *days: int) -> set[str]:
    """The ids of a provider's orders created on ``days`` (as delivered: text)."""
    offset = 1000 if provider == "globex" else 0
    return {str(offset + d * 100 + i) for d in days for i in range(len(HOURS))}


def database(provider: str) -> str:
    return f"backfill_{provider}"


def create_orders_db(pg: dict, provider: str, password: str) -> None:
    """Database ``backfill_<provider>`` owned by a role of that name: ``orders`` (a fact table) and
    ``customers`` (a dimension)."""
    name = database(provider)
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    offset = 1000 if provider == "globex" else 0
    with psycopg.connect(dsn(pg, name, name, password)) as conn:
        conn.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric(10,2) NOT NULL, created_at timestamptz NOT NULL)"
        )
        conn.execute(
            "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz NOT NULL)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO orders VALUES (%s, %s, %s)",
                [
                    (offset + d * 100 + i, f"{d}{i}.50", DAY0 + dt.timedelta(days=d, hours=h))
                    for d in range(DAYS)
                    for i, h in enumerate(HOURS)
                ],
            )
            cur.executemany(
                "INSERT INTO customers VALUES (%s, %s, %s)",
                [(i, f"Customer {i}", DAY0 + dt.timedelta(minutes=i)) for i in range(1, 6)],
            )


def execute(pg: dict, provider: str, password: str, sql: str, params: Any = None) -> None:
    name = database(provider)
    with psycopg.connect(dsn(pg, name, name, password)) as conn:
        conn.execute(sql, params)


def secrets(providers: tuple[str, ...]) -> dict[str, str]:
    return {f"BACKFILL_{p.upper()}_PASSWORD": f"{p}-" + os.urandom(6).hex() for p in providers}


def orders_config(
    pg: dict, lake: str, receiver_url: str, providers: tuple[str, ...] = ("acme",), granularity: str = "daily"
) -> dict:
    """Per provider: ``<p>-orders`` (a fact dataset partitioned by day from DAY0) streamed to ``ledger``,
    and ``<p>-customers`` (an unpartitioned dimension) streamed to ``crm``."""

    def source(p: str) -> dict:
        return {
            "id": f"{p}-pg",
            "name": f"{p}-postgres",
            "vendor": "postgres",
            "provider_id": p,
            "postgres": {
                "host": pg["host"],
                "port": pg["port"],
                "database": database(p),
                "auth_method": "password_auth",
                "password_auth": {"username": database(p), "password": "${BACKFILL_" + p.upper() + "_PASSWORD}"},
            },
        }

    def orders(p: str) -> dict:
        return {
            "id": f"{p}-orders",
            "name": "orders",
            "source_id": f"{p}-pg",
            "table": {"source_table_namespace": "public", "source_table_name": "orders"},
            "type": "fact",
            "fact": {"primary_key_column": "id", "created_at_column": "created_at"},
            "partitions": {"granularity": granularity, "start": DAY0.strftime("%Y-%m-%d")},
        }

    def customers(p: str) -> dict:
        return {
            "id": f"{p}-customers",
            "name": "customers",
            "source_id": f"{p}-pg",
            "table": {"source_table_namespace": "public", "source_table_name": "customers"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
        }

    def destination(did: str, properties: dict) -> dict:
        return {
            "id": did,
            "name": did,
            "type": "webhook_batch",
            "max_records_per_minute": 1_000_000,
            "record_schema": {"type": "object", "required": ["id"], "properties": properties},
            "webhook_batch": {
                "request_template": {"uri": f"{receiver_url}/{did}"},
                "max_records_per_batch": 4,
                "retry_initial_backoff_seconds": 0.05,
            },
        }

    id_mapping = {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}}
    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": lake}}],
        "providers": [{"id": p, "name": p.title(), "datalake_id": "lake", "products": ["all"]} for p in providers],
        "sources": [source(p) for p in providers],
        "datasets": [d for p in providers for d in (orders(p), customers(p))],
        "destinations": [
            destination("ledger", {"id": {"type": "string"}, "amount": {"type": "number"}}),
            destination("crm", {"id": {"type": "string"}, "name": {"type": "string"}}),
        ],
        "streams": [
            s
            for p in providers
            for s in (
                {
                    "id": f"{p}-orders-ledger",
                    "name": "orders",
                    "dataset_id": f"{p}-orders",
                    "destination_id": "ledger",
                    "mappings": [
                        id_mapping,
                        {"target_field": "amount", "field_type": "field", "column": {"name": "amount"}},
                    ],
                },
                {
                    "id": f"{p}-customers-crm",
                    "name": "customers",
                    "dataset_id": f"{p}-customers",
                    "destination_id": "crm",
                    "mappings": [
                        id_mapping,
                        {"target_field": "name", "field_type": "field", "column": {"name": "name"}},
                    ],
                },
            )
        ],
    }
