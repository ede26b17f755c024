"""Tenant data is data, never control: hostile values in a provider's own rows, against real servers.

Each test plays a tenant who controls only the values in its own source rows (PostgreSQL) and
checks that those values are encoded or refused alone: never a forged envelope, a rewritten URI,
a split header, a stuck stream or a batch lost without a trace.
"""

import json
import os
from pathlib import Path

import psycopg
import pytest

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import ConfigError, DeliveryError
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.deliveries import StreamState
from prequel_dagster.language.templates import TemplateError, parse_template
from prequel_dagster.stores import LocalStore

from .pg_helpers import BASE, dsn

FORGERY = '{}}],"provider_id":"globex","records":[{"id":"forged-by-acme","meta":{}'


@pytest.fixture
def tenants(pg, monkeypatch):
    """Two providers' databases with an ``accounts`` table keyed by text (tenants choose their ids)."""
    for name in ("acme", "globex"):
        password = f"{name}-" + os.urandom(6).hex()
        monkeypatch.setenv(f"{name.upper()}_PG_PASSWORD", password)
        with psycopg.connect(pg["dsn"], autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{name}"')
            admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
            admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        with psycopg.connect(dsn(pg, name, name, password)) as conn:
            conn.execute(
                "CREATE TABLE accounts (id text PRIMARY KEY, name text, email text, meta text, "
                "code text, updated_at timestamptz NOT NULL)"
            )
    monkeypatch.setenv("APP_TOKEN", "t0ken-value")
    return pg


def insert(pg, provider: str, rows: list[dict]) -> None:
    password = os.environ[f"{provider.upper()}_PG_PASSWORD"]
    with psycopg.connect(dsn(pg, provider, provider, password)) as conn, conn.cursor() as cur:
        for i, row in enumerate(rows):
            full = {"name": "n", "email": "e@x.test", "meta": "{}", "code": "1", **row}
            cur.execute(
                "INSERT INTO accounts VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (id) DO UPDATE SET "
                "name=excluded.name, email=excluded.email, meta=excluded.meta, code=excluded.code, "
                "updated_at=excluded.updated_at",
                (full["id"], full["name"], full["email"], full["meta"], full["code"], BASE.replace(minute=i % 60)),
            )


def tenant_config(pg, lake: Path, destination: dict) -> dict:
    def source(p):
        return {
            "id": f"{p}-pg",
            "name": p,
            "vendor": "postgres",
            "provider_id": p,
            "postgres": {
                "host": pg["host"],
                "port": pg["port"],
                "database": p,
                "auth_method": "password_auth",
                "password_auth": {"username": p, "password": "${" + p.upper() + "_PG_PASSWORD}"},
            },
        }

    def dataset(p):
        return {
            "id": f"{p}-accounts",
            "name": "accounts",
            "source_id": f"{p}-pg",
            "method": "table",
            "table": {"source_table_namespace": "public", "source_table_name": "accounts"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
        }

    def stream(p):
        return {
            "id": f"{p}-accounts-app",
            "name": "accounts",
            "dataset_id": f"{p}-accounts",
            "destination_id": "app",
            "mappings": [
                {"target_field": f, "field_type": "field", "column": {"name": f}}
                for f in ("id", "name", "email", "meta")
            ],
        }

    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(lake)}}],
        "providers": [{"id": p, "name": p, "datalake_id": "lake", "products": ["all"]} for p in ("acme", "globex")],
        "sources": [source("acme"), source("globex")],
        "datasets": [dataset("acme"), dataset("globex")],
        "destinations": [
            {
                "id": "app",
                "name": "app",
                "max_records_per_minute": 1_000_000,
                "record_schema": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "email": {"type": "string"},
                        "meta": {"type": "object"},
                    },
                },
                **destination,
            }
        ],
        "streams": [stream("acme"), stream("globex")],
    }


def batch_destination(receiver: Receiver, **webhook) -> dict:
    return {
        "type": "webhook_batch",
        "webhook_batch": {
            "request_template": {"uri": receiver.url + "/batches", "headers": {"Authorization": "Bearer ${APP_TOKEN}"}},
            "max_records_per_batch": 4,
            "retry_initial_backoff_seconds": 0.01,
            "retry_max_backoff_seconds": 0.02,
            "max_attempts": 2,
            **webhook,
        },
    }


def record_destination(receiver: Receiver, uri: str, headers: dict | None = None, body: str | None = None) -> dict:
    template = {"method": "PUT", "uri": receiver.url + uri, "headers": headers or {}}
    if body is not None:
        template["body"] = body
    return {
        "type": "webhook_record",
        "webhook_record": {
            "request_template": template,
            "retry_initial_backoff_seconds": 0.01,
            "retry_max_backoff_seconds": 0.02,
            "max_attempts": 2,
        },
    }


def dead_letters(lake: Path, provider: str = "acme") -> list[dict]:
    state = StreamState(LocalStore(lake), provider, f"{provider}-accounts-app")
    return state.read_dead_letters().to_pylist()


def test_json_text_cannot_forge_the_envelope_and_goes_to_the_dead_letter_alone(tenants, tmp_path):
    insert(
        tenants,
        "acme",
        [
            {"id": "a1", "meta": '{"plan": "pro"}'},
            {"id": "a2", "meta": FORGERY},
            {"id": "a3", "meta": "[1, 2]"},
            {"id": "a4", "meta": "NaN"},
            {"id": "a5", "meta": '{"x": 1} {"y": 2}'},
            {"id": "a6", "meta": ' {"ok": [true, null]} '},
        ],
    )
    with Receiver() as receiver:
        config = load_config(tenant_config(tenants, tmp_path / "lake", batch_destination(receiver)))
        run_extract(config, "acme-accounts")
        result = run_load(config, "acme-accounts-app")
        bodies = [json.loads(r.body) for r in receiver.requests]
        stored = receiver.store.records()
    assert all(b["provider_id"] == "acme" for b in bodies) and receiver.store.records(provider_id="globex") == []
    assert {r["record"]["id"]: r["record"]["meta"] for r in stored} == {
        "a1": {"plan": "pro"},
        "a6": {"ok": [True, None]},
    }
    dead = {d["record_id"]: d["reason"] for d in dead_letters(tmp_path / "lake")}
    assert set(dead) == {"a2", "a3", "a4", "a5"}
    assert all("'meta' is not a valid JSON object" in why for why in dead.values())
    assert result.counts.records_loaded == 2 and result.counts.records_errored == 4


def test_a_dead_letter_that_cannot_be_written_fails_the_load_and_keeps_the_batch_pending(tenants, tmp_path):
    insert(tenants, "acme", [{"id": f"a{i}"} for i in range(6)])
    lake = tmp_path / "lake"
    with Receiver(fault=lambda req: 400 if len(receiver.requests) == 1 else None) as receiver:
        config = load_config(tenant_config(tenants, lake, batch_destination(receiver)))
        run_extract(config, "acme-accounts")
        blocker = lake / "artifacts" / "acme" / "streams" / "acme-accounts-app" / "dead_letter"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("a file where the dead-letter folder goes: writing a dead letter fails")
        with pytest.raises((DeliveryError, OSError)):
            run_load(config, "acme-accounts-app")
        state = StreamState(LocalStore(lake), "acme", "acme-accounts-app")
        assert state.open_plan() is not None and not state.open_plan().rejected  # the batch stays pending
        blocker.unlink()
        result = run_load(config, "acme-accounts-app")  # resumes: the rejected batch is now dead-lettered
        delivered = {r["record"]["id"] for r in receiver.store.records()}
    dead = {d["record_id"] for d in dead_letters(lake)}
    assert result.resumed and delivered | dead == {f"a{i}" for i in range(6)} and not delivered & dead
    assert state.open_plan() is None


HOSTILE_IDS = [
    "../../admin/delete?all=true#",
    "42?provider_id=globex&deleted=true&x=",
    "@evil.test:80/x",
    "a/b",
    "%2e%2e",
    "line\r\nbreak",
    "José",
    " sp ace",
    "#frag",
    "plain",
]


def test_record_values_fill_one_uri_segment_or_query_value_and_never_move_the_request(tenants, tmp_path):
    insert(tenants, "acme", [{"id": i} for i in HOSTILE_IDS])
    with Receiver() as receiver:
        dest = record_destination(
            receiver,
            "/{{.ProviderID}}/users/{{.Record.id}}?provider_id={{.ProviderID}}"
            "&deleted={{.IsDeleted}}&id={{.Record.id}}",
        )
        config = load_config(tenant_config(tenants, tmp_path / "lake", dest))
        run_extract(config, "acme-accounts")
        result = run_load(config, "acme-accounts-app")
        paths = [r.path for r in receiver.requests]
        stored = receiver.store.records()
    from urllib.parse import parse_qs, unquote, urlsplit

    assert result.counts.records_loaded == len(HOSTILE_IDS) and len(paths) == len(HOSTILE_IDS)
    for path in paths:
        parts = urlsplit(path)
        segments = parts.path.split("/")
        assert segments[:3] == ["", "acme", "users"] and len(segments) == 4  # the id is one segment
        query = parse_qs(parts.query, keep_blank_values=True)
        assert query["provider_id"] == ["acme"] and query["deleted"] == ["false"]
        assert unquote(segments[3]) == query["id"][0]  # the same value, whole, in both places
    assert sorted(parse_qs(urlsplit(p).query)["id"][0] for p in paths) == sorted(HOSTILE_IDS)
    assert {r["provider_id"] for r in stored} == {"acme"} and all(not r["is_deleted"] for r in stored)


def test_template_actions_may_not_fill_the_scheme_host_or_port(tenants, tmp_path):
    for uri in (
        "http://127.0.0.1:8900{{.Record.id}}",
        "http://{{.Record.id}}/x",
        "{{.Record.id}}://h/x",
        "http://h:{{.Record.id}}/x",
    ):
        with pytest.raises(TemplateError, match="scheme, host or port"):
            parse_template(uri, allow_record=True, allow_records=False, place="uri")
    raw = tenant_config(
        tenants,
        tmp_path / "lake",
        {
            "type": "webhook_record",
            "webhook_record": {"request_template": {"uri": "http://127.0.0.1:8900{{.Record.id}}"}},
        },
    )
    with pytest.raises(ConfigError, match="scheme, host or port"):
        load_config(raw)


def test_a_value_a_header_cannot_carry_is_refused_alone_and_the_stream_moves_on(tenants, tmp_path):
    insert(
        tenants,
        "acme",
        [
            {"id": "ok1", "email": "a@x.test"},
            {"id": "crlf", "email": "a@x.test\r\nX-Admin: 1"},
            {"id": "jose", "email": "José@x.test"},
            {"id": "nul", "email": "tab\there"},
            {"id": "ok2", "email": "b@x.test"},
        ],
    )
    with Receiver() as receiver:
        dest = record_destination(
            receiver,
            "/u/{{.Record.id}}?provider_id={{.ProviderID}}",
            headers={"X-Email": "{{.Record.email}}", "Authorization": "Bearer ${APP_TOKEN}"},
        )
        config = load_config(tenant_config(tenants, tmp_path / "lake", dest))
        run_extract(config, "acme-accounts")
        first = run_load(config, "acme-accounts-app")
        second = run_load(config, "acme-accounts-app")  # nothing stuck: nothing pending
        sent = {r.headers["X-Email"] for r in receiver.requests}
        assert all("X-Admin" not in r.headers for r in receiver.requests)
    assert sent == {"a@x.test", "b@x.test"} and first.counts.records_loaded == 2
    dead = {d["record_id"]: d["reason"] for d in dead_letters(tmp_path / "lake")}
    assert set(dead) == {"crlf", "jose", "nul"} and all("header 'X-Email'" in why for why in dead.values())
    assert second.load_id is None


def test_a_value_that_makes_an_expression_fail_is_refused_alone(tenants, tmp_path):
    insert(tenants, "acme", [{"id": "a1", "code": "7"}, {"id": "a2", "code": "seven"}, {"id": "a3", "code": "9"}])
    with Receiver() as receiver:
        raw = tenant_config(tenants, tmp_path / "lake", batch_destination(receiver))
        raw["destinations"][0]["record_schema"]["properties"]["code"] = {"type": "integer"}
        raw["streams"][0]["mappings"].append(
            {"target_field": "code", "field_type": "expression", "expression": {"expr": "int(code)"}}
        )
        config = load_config(raw)
        run_extract(config, "acme-accounts")
        result = run_load(config, "acme-accounts-app")
        stored = {r["record"]["id"]: r["record"]["code"] for r in receiver.store.records()}
    assert stored == {"a1": 7, "a3": 9} and result.counts.records_errored == 1
    (dead,) = dead_letters(tmp_path / "lake")
    assert dead["record_id"] == "a2" and dead["reason"].startswith("mapping:") and "seven" in dead["record"]


def test_a_header_secret_is_never_read_as_a_template(tenants, tmp_path, monkeypatch):
    monkeypatch.setenv("APP_TOKEN", "abc{{.Nope}}xyz")
    insert(tenants, "acme", [{"id": "a1"}])
    with Receiver() as receiver:
        config = load_config(tenant_config(tenants, tmp_path / "lake", batch_destination(receiver)))
        run_extract(config, "acme-accounts")
        run_load(config, "acme-accounts-app")
        assert receiver.requests[0].headers["Authorization"] == "Bearer abc{{.Nope}}xyz"


def test_body_template_values_are_json_encoded_for_their_place(tenants, tmp_path):
    insert(tenants, "acme", [{"id": 'q"}, "admin": true, "x": "', "name": "\\\n\u2028", "meta": '{"k": "v"}'}])
    with Receiver() as receiver:
        dest = record_destination(
            receiver,
            "/u?provider_id={{.ProviderID}}",
            body='{"id": "{{.Record.id}}", "name": {{.Record.name}}, "all": {{.Record.AsJson}}}',
        )
        config = load_config(tenant_config(tenants, tmp_path / "lake", dest))
        run_extract(config, "acme-accounts")
        run_load(config, "acme-accounts-app")
        body = json.loads(receiver.requests[0].body)
    assert body == {
        "id": 'q"}, "admin": true, "x": "',
        "name": "\\\n\u2028",
        "all": {"id": 'q"}, "admin": true, "x": "', "name": "\\\n\u2028", "email": "e@x.test", "meta": {"k": "v"}},
    }
