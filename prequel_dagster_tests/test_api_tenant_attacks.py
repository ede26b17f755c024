"""A provider's key as an attacker would use it: the API machine's identity, files and local services,
another tenant's records through the test endpoints, keys that outlive their provider, and a catalog
changed by another API process between the checks and the write."""

import sqlite3

import pytest
from cryptography.fernet import Fernet

from prequel_dagster.api.actions import Actions
from prequel_dagster.api.app import create_app
from prequel_dagster.api.dagster_link import DagsterLink, Launcher, Reloader
from prequel_dagster.api.service import ApiError, Principal, Service
from prequel_dagster.catalog.entries import validate_entry
from prequel_dagster.catalog.store import Catalog
from prequel_dagster.config.secrets import redact

from .api_helpers import api_server, client, data, error
from .servers import free_port

COMPANY = Principal("company", None)
SCHEMA = {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}


def _tenant(service: Service, tmp, provider: str) -> dict:
    db = tmp / f"{provider}.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        conn.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"u{i}@{provider}.example") for i in range(1, 4)])
    service.create(COMPANY, "providers", {"id": provider, "name": provider, "datalake_id": "lake", "products": ["p"]})
    source = service.create(
        COMPANY, "sources", {"name": "db", "vendor": "sqlite", "provider_id": provider, "sqlite": {"path": str(db)}}
    )
    dataset = service.create(
        COMPANY,
        "datasets",
        {
            "source_id": source["id"],
            "table": {"source_table_name": "users"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id"},
        },
    )
    stream = service.create(
        COMPANY,
        "streams",
        {
            "name": "users",
            "dataset_id": dataset["id"],
            "destination_id": "app",
            "mappings": [{"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}}],
        },
    )
    return {"source": source["id"], "dataset": dataset["id"], "stream": stream["id"]}


@pytest.fixture
def stack(tmp_path, monkeypatch, receiver):
    monkeypatch.setenv("PREQUEL_CATALOG_KEY", Fernet.generate_key().decode())
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = Catalog.open(url)
    assert catalog is not None
    lake = {"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(tmp_path / "lake")}}
    catalog.create("datalakes", "lake", None, lake)
    for dest in ("app", "secret-dest"):
        catalog.create(
            "destinations",
            dest,
            None,
            {
                "id": dest,
                "name": dest,
                "type": "webhook_batch",
                "record_schema": SCHEMA,
                "webhook_batch": {"request_template": {"uri": receiver.url}},
            },
        )
    catalog.create("products", "p", None, {"id": "p", "name": "p", "destinations": ["app"]})
    service = Service(catalog)
    link = DagsterLink(f"http://127.0.0.1:{free_port()}", timeout=2)
    reloader = Reloader(link, poll_seconds=60)
    launcher = Launcher(link, reloader, wait_seconds=2, check_seconds=0.2)
    actions = Actions(service, link, reloader=reloader, launcher=launcher)
    tenants = {p: _tenant(service, tmp_path, p) for p in ("acme", "globex")}
    from prequel_dagster.engine import run_extract

    for p in ("acme", "globex"):
        run_extract(service.config(), tenants[p]["dataset"])
    _, acme_key = catalog.create_key("acme")
    _, company_key = catalog.create_key()
    try:
        with api_server(create_app(service=service, actions=actions)) as base:
            yield {
                "acme": client(base, acme_key),
                "company": client(base, company_key),
                "tenants": tenants,
                "service": service,
                "catalog": catalog,
                "url": url,
                "tmp": tmp_path,
            }
    finally:
        launcher.stop(5)
        reloader.stop(5)
        link.close()
        catalog.close()


MACHINE_SOURCES = [
    ("s3", {"bucket_name": "company-lake"}, "source.s3.auth_method"),  # default_credentials
    ("s3", {"bucket_name": "b", "auth_method": "aws_iam_role", "aws_iam_role": {"aws_iam_role_arn": "arn:x"}}, "auth_method"),
    ("gcs", {"bucket_name": "b", "auth_method": "gcp_service_account_role", "gcp_service_account_role": {"service_account_email": "a@b"}}, "auth_method"),
    ("postgres", {"host": "/var/run/postgresql", "database": "dagster", "password_auth": {"username": "x", "password": "y"}}, "source.postgres.host"),
    ("postgres", {"host": "127.0.0.1", "database": "d", "password_auth": {"username": "x", "password": "y"}}, "source.postgres.host"),
    ("postgres", {"host": "localhost", "database": "d", "password_auth": {"username": "x", "password": "y"}}, "source.postgres.host"),
    ("postgres", {"host": "169.254.169.254", "database": "d", "password_auth": {"username": "x", "password": "y"}}, "source.postgres.host"),
    ("postgres", {"host": "db.acme.example", "database": "d", "password_auth": {"username": "", "password": ""}}, "password_auth"),
    ("sqlite", {"path": "/etc/passwd"}, "source.vendor"),
]  # fmt: skip


@pytest.mark.parametrize(("vendor", "block", "named"), MACHINE_SOURCES)
def test_a_providers_key_cannot_borrow_the_machines_identity_files_or_services(stack, vendor, block, named):
    body = {"source": {"name": "x", "vendor": vendor, "provider_id": "acme", vendor: block}}
    assert named in error(stack["acme"].post("/import/sources", json=body), 400)
    assert named in error(stack["acme"].post("/import/test-source", json=body), 400)
    own = stack["tenants"]["acme"]["source"]
    if vendor != "sqlite":  # (a vendor cannot be changed at all)
        patch = {"source": {"vendor": vendor, vendor: block, "sqlite": None}}
        assert "vendor" in error(stack["acme"].patch(f"/import/sources/{own}", json=patch), 400)
        assert "vendor" in error(stack["acme"].post(f"/import/sources/{own}/test-source", json=patch), 400)
    if vendor in ("s3", "postgres") and named != "password_auth":  # the company may (its own machine)
        made = stack["company"].post("/import/sources", params={}, json=body)
        assert made.status_code == 200, made.text


def test_test_endpoints_never_reach_another_tenants_records(stack):
    acme, tenants = stack["acme"], stack["tenants"]
    own, other = tenants["acme"], tenants["globex"]
    fake = "00000000-0000-4000-8000-000000000000"
    patched = acme.post(
        f"/import/streams/{own['stream']}/test-transform",
        json={"record_ids": ["1"], "stream": {"dataset_id": other["dataset"]}},
    )
    assert "stream.dataset_id" in error(patched, 400)
    assert "cannot be changed" in error(
        acme.post(
            f"/import/streams/{own['stream']}/test-transform",
            json={"record_ids": ["1"], "stream": {"destination_id": "secret-dest"}},
        ),
        400,
    )
    error(acme.post(f"/import/streams/{own['stream']}/test-transform", json={"record_ids": ["1"], "stream": "x"}), 400)
    ok = data(acme.post(f"/import/streams/{own['stream']}/test-transform", json={"record_ids": ["1"]}))
    assert ok["records"] == [{"id": "1"}]

    def test_stream(dataset_id: str, destination_id: str, mappings: list) -> str:
        body = {"name": "t", "dataset_id": dataset_id, "destination_id": destination_id, "mappings": mappings}
        return error(acme.post("/import/test-stream", json={"record_ids": ["1"], "stream": body}), 400)

    unmapped = [{"target_field": "email", "field_type": "field", "column": {"name": "email"}}]  # id is required
    mapped = [{"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}}]
    for mappings in (mapped, unmapped):
        theirs = test_stream(other["dataset"], "app", mappings).replace(other["dataset"], "<id>")
        missing = test_stream(fake, "app", mappings).replace(fake, "<id>")
        assert theirs == missing, (theirs, missing)
        outside = test_stream(own["dataset"], "secret-dest", mappings).replace("secret-dest", "<id>")
        nowhere = test_stream(own["dataset"], "no-such-dest", mappings).replace("no-such-dest", "<id>")
        assert outside == nowhere, (outside, nowhere)
    assert "u1@globex" not in str(ok)


def test_sealed_values_are_refused_in_test_source(stack):
    own = stack["tenants"]["acme"]["source"]
    body = {"source": {"sqlite": {"path": {"$sealed": "gAAAAA"}}}}
    assert "$sealed" in error(stack["acme"].post(f"/import/sources/{own}/test-source", json=body), 400)


def test_deleting_a_provider_revokes_its_keys(stack):
    company, catalog = stack["company"], stack["catalog"]
    data(
        company.post(
            "/import/providers",
            json={"provider": {"id": "temp", "name": "t", "datalake_id": "lake", "products": ["all"]}},
        )
    )
    _, temp_key = catalog.create_key("temp")
    with client(str(company.base_url), temp_key) as temp:
        data(temp.get("/import/providers/temp"))
        data(company.delete("/import/providers/temp"))
        data(
            company.post(
                "/import/providers",
                json={"provider": {"id": "temp", "name": "t2", "datalake_id": "lake", "products": ["all"]}},
            )
        )
        error(temp.get("/import/providers/temp"), 401)


def test_a_change_checked_against_a_catalog_another_process_changed_is_checked_again(stack):
    first, tenants = stack["service"], stack["tenants"]
    other_process = Service(Catalog.open(stack["url"]))  # type: ignore[arg-type]
    first.config()
    made = other_process.create(
        COMPANY,
        "sources",
        {"name": "db2", "vendor": "sqlite", "provider_id": "acme", "sqlite": {"path": str(stack["tmp"] / "acme.db")}},
    )
    dataset = {
        "source_id": made["id"],
        "table": {"source_table_name": "users"},
        "type": "dimension",
        "dimension": {"primary_key_column": "id"},
    }
    # ``first`` has not seen the new source; its write notices the catalog moved and checks again
    assert first.create(COMPANY, "datasets", dataset)["source_id"] == made["id"]
    gone = tenants["globex"]["source"]
    # the other process deletes a source (its stream and dataset first); ``first`` still holds it
    config = other_process.config()
    for stream in [s for s in config.streams if config.dataset(s.dataset_id).source_id == gone]:
        other_process.delete(COMPANY, "streams", stream.id)
    other_process.delete(COMPANY, "datasets", tenants["globex"]["dataset"])
    other_process.delete(COMPANY, "sources", gone)
    with pytest.raises(ApiError) as refused:
        first.create(COMPANY, "datasets", {**dataset, "source_id": gone})
    assert f"no source with id '{gone}'" in str(refused.value)
    other_process.catalog.close()


def test_yaml_values_are_shown_as_written_and_catalog_secrets_register_only_when_used(tmp_path, monkeypatch):
    monkeypatch.setenv("PREQUEL_CATALOG_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("HOOK_TOKEN_FOR_TEST", "tok-9f2c41d7e8")
    config = tmp_path / "prequel.yaml"
    config.write_text(
        "datalakes: [{id: lake, name: lake, storage: local, local: {path: lake}}]\n"
        "destinations:\n"
        "  - id: hook\n    name: hook\n    type: webhook_batch\n"
        "    record_schema: {type: object, properties: {id: {type: string}}}\n"
        '    webhook_batch: {request_template: {uri: "https://hooks.example.com/in?token=${HOOK_TOKEN_FOR_TEST}"}}\n'
    )
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert catalog is not None
    service = Service(catalog, config)
    shown = service.get(COMPANY, "destinations", "hook")
    assert "tok-9f2c41d7e8" not in str(shown) and "${HOOK_TOKEN_FOR_TEST}" in str(shown)
    catalog.close()

    value = "tenant-chosen-pw-3b1d"
    validate_entry(
        "sources",
        {
            "id": "s",
            "name": "s",
            "vendor": "postgres",
            "provider_id": "p",
            "postgres": {"host": "h", "database": "d", "password_auth": {"username": "u", "password": value}},
        },
    )
    assert redact(f"x {value} y") == f"x {value} y"  # a rejected or unused tenant value is not registered


def test_the_webhook_public_key_is_the_signing_keys_pair(stack, receiver):
    from cryptography.hazmat.primitives import serialization

    from prequel_dagster.delivery.signing import generate_key_pair

    assert "signing" in error(stack["company"].get("/public/signatures/webhook-public-key"), 404)
    private, public = generate_key_pair(2048)
    body = {
        "destination": {
            "name": "signed",
            "type": "webhook_batch",
            "record_schema": SCHEMA,
            "webhook_batch": {"request_template": {"uri": receiver.url}},
            "signing": {"private_key": private.decode()},
        }
    }
    made = data(stack["company"].post("/import/destinations", json=body))["destination"]
    assert "PRIVATE KEY" not in str(made)
    shown = data(stack["company"].get("/public/signatures/webhook-public-key"))["public_key"]
    assert serialization.load_pem_public_key(shown.encode()).public_numbers() == (
        serialization.load_pem_public_key(public).public_numbers()
    )
