"""Three providers' PostgreSQL users tables (globex with its own column names) and a data stream over them."""

import os
from typing import Any

from .pg_helpers import create_provider_db, execute, two_provider_config

PROVIDERS = ("acme", "globex", "initech")
USERS = {"acme": 12, "globex": 8, "initech": 5}


def setup_databases(pg: dict, monkeypatch: Any) -> dict[str, str]:
    secrets = {p: f"{p}-" + os.urandom(6).hex() for p in PROVIDERS}
    for p, pw in secrets.items():
        monkeypatch.setenv(f"{p.upper()}_PG_PASSWORD", pw)
        create_provider_db(pg, p, users=USERS[p], domain=f"{p}.test", password=pw)
    monkeypatch.setenv("APP_TOKEN", "tok-" + os.urandom(8).hex())
    # globex names its columns its own way: the attributes map them
    execute(pg, "globex", secrets["globex"], "ALTER TABLE users RENAME COLUMN email TO mail")
    execute(pg, "globex", secrets["globex"], "ALTER TABLE users RENAME COLUMN first_name TO given_name")
    return secrets


def data_stream_config(
    pg: dict, lake: str, receiver_url: str, *, data_rules: dict | None = None, **stream: Any
) -> dict:
    config = two_provider_config(pg, lake, receiver_url, max_records_per_batch=5)
    base_source, base_dataset = config["sources"][0], config["datasets"][0]
    source = {
        **base_source,
        "id": "initech-pg",
        "provider_id": "initech",
        "postgres": {
            **base_source["postgres"],
            "database": "initech",
            "password_auth": {"username": "initech", "password": "${INITECH_PG_PASSWORD}"},
        },
    }
    config["providers"].append({"id": "initech", "name": "Initech", "datalake_id": "lake", "products": ["all"]})
    config["sources"].append(source)
    config["datasets"].append({**base_dataset, "id": "initech-users", "source_id": "initech-pg"})
    fills = {
        "acme-users": {1: "email", 2: {"first": "first_name", "last": "last_name"}},
        "globex-users": {1: "mail", 2: {"first": "given_name", "last": "last_name"}},
        "initech-users": {1: "email", 2: {"first": "first_name", "last": "last_name"}},
    }
    for d in config["datasets"]:
        d["attributes"] = fills[d["id"]]
    config["attributes"] = [
        {"id": 1, "name": "email", "schema": {"type": "string", "format": "email"}},
        {
            "id": 2,
            "name": "person",
            "schema": {"type": "object", "properties": {"first": {"type": "string"}, "last": {"type": "string"}}},
        },
    ]
    config["streams"] = []  # the providers' own streams are not what these tests look at
    rules = data_rules or {
        "column_sets": None,
        "attributes": [
            {"attribute_id": 1, "fields": [{"field": "email", "filter": None, "exported": True}], "optional": False},
            {"attribute_id": 2, "fields": [{"field": "first", "filter": None, "exported": True}], "optional": True},
        ],
        "deduplication": {
            "period": "P60D",
            "column_references": None,
            "attribute_references": [{"attribute_id": 1, "column_names": ["email"]}],
        },
        "frequency_filter": None,
    }
    config["data_streams"] = [
        {
            "id": "people",
            "name": "People",
            "slug": "people",
            "data_rules": rules,
            "auth_rules": {"company_constraint": {"type": "inclusion", "company_ids": ["acme", "globex"]}},
            "offers": [
                {
                    "id": "0488d937-b716-4df2-841c-8a63026c268d",
                    "channel": "data_streams_market",
                    "licensing": {"period": "P30D", "license": {"name": "Data Purchase Agreement"}},
                    "pricing": {"type": "per_record", "micro_cents_usd": 500000},
                    "shops": None,
                }
            ],
            **stream,
        }
    ]
    config["destinations"][0]["record_schema"] = {
        "type": "object",
        "required": ["id", "email"],
        "properties": {
            "id": {"type": "string"},
            "email": {"type": "string"},
            "first": {"type": ["string", "null"]},
            "provider": {"type": "string"},
        },
    }
    config["streams"] = [
        {
            "id": "people-app",
            "name": "people to the app",
            "dataset_id": "people",
            "destination_id": "app",
            "mappings": [
                {"target_field": "id", "field_type": "field", "column": {"name": "_record_id"}},
                {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
                {"target_field": "first", "field_type": "field", "column": {"name": "first"}},
                {"target_field": "provider", "field_type": "field", "column": {"name": "_provider_id"}},
            ],
        }
    ]
    return config
