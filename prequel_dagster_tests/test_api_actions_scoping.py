"""A provider's key cannot trigger, test or read another provider's extracts, loads, samples or records,
and answers for them exactly as for ids that do not exist; a launch Dagster cannot take is a failed job
with its reason, never a lost one."""

import sqlite3
import time

import pytest
from cryptography.fernet import Fernet

from prequel_dagster.api.actions import Actions
from prequel_dagster.api.app import create_app
from prequel_dagster.api.dagster_link import DagsterLink, Launcher, Reloader
from prequel_dagster.api.service import Principal, Service
from prequel_dagster.catalog.store import Catalog

from .api_helpers import api_server, client, data, error
from .servers import free_port


def _tenant(service: Service, company: Principal, tmp, provider: str, receiver_url: str) -> dict:
    db = tmp / f"{provider}.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
        conn.executemany("INSERT INTO users VALUES (?, ?)", [(i, f"u{i}@{provider}.example") for i in range(1, 6)])
    service.create(company, "providers", {"id": provider, "name": provider, "datalake_id": "lake", "products": ["all"]})
    source = service.create(
        company,
        "sources",
        {"name": "db", "vendor": "sqlite", "provider_id": provider, "sqlite": {"path": str(db)}},
    )
    dataset = service.create(
        company,
        "datasets",
        {
            "source_id": source["id"],
            "table": {"source_table_name": "users"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id"},
        },
    )
    stream = service.create(
        company,
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
def api(tmp_path, monkeypatch, receiver):
    monkeypatch.setenv("PREQUEL_CATALOG_KEY", Fernet.generate_key().decode())
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert catalog is not None
    service = Service(catalog)
    link = DagsterLink(f"http://127.0.0.1:{free_port()}", timeout=2)  # nothing listens: launches fail
    reloader = Reloader(link, poll_seconds=60)
    launcher = Launcher(link, reloader, wait_seconds=2, check_seconds=0.2)
    actions = Actions(service, link, reloader=reloader, launcher=launcher)
    service.on_change = actions.changed
    company = Principal("test", None)
    # the company's resources with readable ids (through the API, ids are the server's)
    service.catalog.create(
        "datalakes",
        "lake",
        None,
        {"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(tmp_path / "lake")}},
    )
    service.catalog.create(
        "destinations",
        "app",
        None,
        {
            "id": "app",
            "name": "app",
            "type": "webhook_batch",
            "record_schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "webhook_batch": {"request_template": {"uri": receiver.url}},
        },
    )
    tenants = {p: _tenant(service, company, tmp_path, p, receiver.url) for p in ("acme", "globex")}
    _, acme_key = catalog.create_key("acme")
    app = create_app(service=service, actions=actions)
    try:
        with api_server(app) as base:
            yield client(base, acme_key), tenants
    finally:
        launcher.stop(5)
        reloader.stop(5)
        link.close()
        catalog.close()


def _same_as_missing(response, missing, real_id: str, fake_id: str) -> None:
    assert response.status_code == missing.status_code == 404
    assert error(response, 404).replace(real_id, "<id>") == error(missing, 404).replace(fake_id, "<id>")


def test_another_providers_jobs_and_records_answer_as_missing(api):
    acme, tenants = api
    other, fake = tenants["globex"], "00000000-0000-4000-8000-000000000000"
    for path in ("/import/datasets/{}/extract", "/import/datasets/{}/random-sample"):
        body = {"sample_size": 2} if "sample" in path else None
        _same_as_missing(
            acme.post(path.format(other["dataset"]), json=body),
            acme.post(path.format(fake), json=body),
            other["dataset"],
            fake,
        )
    _same_as_missing(
        acme.post(f"/import/streams/{other['stream']}/load", json={}),
        acme.post(f"/import/streams/{fake}/load", json={}),
        other["stream"],
        fake,
    )
    _same_as_missing(
        acme.post(f"/import/streams/{other['stream']}/test-transform", json={"record_ids": ["1"]}),
        acme.post(f"/import/streams/{fake}/test-transform", json={"record_ids": ["1"]}),
        other["stream"],
        fake,
    )
    _same_as_missing(
        acme.post(f"/import/sources/{other['source']}/test-source"),
        acme.post(f"/import/sources/{fake}/test-source"),
        other["source"],
        fake,
    )
    _same_as_missing(
        acme.get(f"/import/datasets/{other['dataset']}/records/1"),
        acme.get(f"/import/datasets/{fake}/records/1"),
        other["dataset"],
        fake,
    )
    _same_as_missing(
        acme.get("/import/extracts", params={"dataset_id": other["dataset"]}),
        acme.get("/import/extracts", params={"dataset_id": fake}),
        other["dataset"],
        fake,
    )
    assert data(acme.get("/import/extracts"))["extracts"] == []  # nothing of globex's shows


def test_own_extract_that_dagster_cannot_take_fails_with_its_reason(api):
    acme, tenants = api
    own = tenants["acme"]
    probe = data(acme.post(f"/import/sources/{own['source']}/test-source"))
    assert probe["code"] == "OK", probe
    made = data(acme.post(f"/import/datasets/{own['dataset']}/extract"), 201)["extract"]
    assert made["status"] == "pending" and made["run_id"] is None
    deadline = time.time() + 30
    while True:
        job = data(acme.get(f"/import/extracts/{made['id']}"))["extract"]
        if job["status"] != "pending" or time.time() > deadline:
            break
        time.sleep(0.2)
    assert job["status"] == "failed" and job["error"]["error_code"] == "LAUNCH_FAILED", job
    assert "Dagster" in job["error"]["message"] or "127.0.0.1" in job["error"]["message"]
    listed = data(acme.get("/import/extracts"))["extracts"]
    assert [e["id"] for e in listed] == [made["id"]]


def test_a_providers_key_cannot_widen_its_own_products(api):
    acme, _ = api
    before = data(acme.get("/import/providers/acme"))["provider"]
    message = error(acme.patch("/import/providers/acme", json={"provider": {"products": ["all", "extra"]}}), 403)
    assert "company" in message
    error(acme.delete("/import/providers/acme"), 403)
    assert data(acme.get("/import/providers/acme"))["provider"] == before
