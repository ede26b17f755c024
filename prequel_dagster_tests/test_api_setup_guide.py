"""Prequel's setup guide end to end through the API alone, against a running Dagster webserver.

datalake → provider → source (a real PostgreSQL) → dataset → extract (a Dagster run) → destination
(the reference receiver) → product → stream → random-sample → test-transform → load (a Dagster run)
→ the records at the receiver; the definitions follow each change without a restart.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from prequel_dagster.api.dagster_link import DagsterLink
from prequel_dagster.api.server import build_app
from prequel_dagster.catalog.store import Catalog

from .api_helpers import api_server, client, data
from .pg_helpers import create_provider_db
from .servers import free_port

USERS = 40
PASSWORD = "guide-pg-s3cret-9b1f"
FOLLOW_SECONDS = 30


def _wait(what: str, check, timeout: float, every: float = 0.5):
    deadline = time.time() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(every)


@pytest.fixture
def stack(tmp_path: Path, pg, receiver, monkeypatch):
    """The API and a Dagster webserver sharing one catalog (the code location reads it, the API writes it)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        "telemetry: {enabled: false}\n"
        "run_coordinator: {module: dagster._core.run_coordinator, class: DefaultRunCoordinator}\n"
        "run_launcher: {module: prequel_dagster.run_launcher, class: PreloadedRunLauncher}\n"
    )
    (tmp_path / "workspace.yaml").write_text(
        "load_from:\n  - python_module: {module_name: prequel_dagster.definitions, location_name: prequel_dagster}\n"
    )
    env = {
        "PREQUEL_CATALOG_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
        "PREQUEL_CATALOG_KEY": Fernet.generate_key().decode(),
        "DAGSTER_HOME": str(home),
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PREQUEL_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    create_provider_db(pg, "guide", users=USERS, domain="guide.example", password=PASSWORD)

    catalog = Catalog.open()  # before the webserver: its definitions read the catalog from the start
    assert catalog is not None
    _, company_key = catalog.create_key(label="guide")
    catalog.close()

    port = free_port()
    log = open(tmp_path / "webserver.log", "w")
    webserver = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "dagster-webserver"), "-w", "workspace.yaml"]
        + ["-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    dagster_url = f"http://127.0.0.1:{port}"
    link = DagsterLink(dagster_url)
    try:
        _wait("the webserver", lambda: _answers(link), 120)
        app = build_app(dagster_url=dagster_url, poll_seconds=2)
        with api_server(app) as base:
            yield {"api": client(base, company_key), "link": link, "tmp": tmp_path, "pg": pg, "receiver": receiver}
    finally:
        webserver.terminate()
        try:
            webserver.wait(20)
        except subprocess.TimeoutExpired:
            webserver.kill()
        link.close()
        log.close()


def _answers(link: DagsterLink) -> bool:
    try:
        link.asset_keys()
    except Exception:
        return False
    return True


def _job(api, kind: str, id: str, timeout: float = 180) -> dict:
    def finished():
        job = data(api.get(f"/import/{kind}s/{id}"))[kind]
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return _wait(f"{kind} {id}", finished, timeout, every=1)


def test_the_setup_guide_through_the_api_alone(stack):
    api, link, pg, receiver = stack["api"], stack["link"], stack["pg"], stack["receiver"]
    assert data(api.get("/"))

    # Phase 1: the environment
    lake = data(
        api.post(
            "/import/datalakes",
            json={
                "datalake": {
                    "name": "primary-datalake",
                    "storage": "local",
                    "local": {"path": str(stack["tmp"] / "lake")},
                }
            },
        )
    )["datalake"]

    # Phase 2: a provider, its source and dataset, and an extract to validate them
    provider = data(
        api.post(
            "/import/providers",
            json={"provider": {"name": "Acme Corp", "id": "acme", "datalake_id": lake["id"], "products": ["all"]}},
        )
    )["provider"]
    source = data(
        api.post(
            "/import/sources",
            json={
                "source": {
                    "name": "acme-postgres",
                    "vendor": "postgres",
                    "provider_id": provider["id"],
                    "postgres": {
                        "host": pg["host"],
                        "port": pg["port"],
                        "database": "guide",
                        "auth_method": "password_auth",
                        "password_auth": {"username": "guide", "password": PASSWORD},
                    },
                }
            },
        )
    )["source"]
    assert PASSWORD not in str(source)
    probe = data(api.post(f"/import/sources/{source['id']}/test-source"))
    assert probe["code"] == "OK", probe
    dataset = data(
        api.post(
            "/import/datasets",
            json={
                "dataset": {
                    "source_id": source["id"],
                    "method": "table",
                    "table": {"source_table_namespace": "public", "source_table_name": "users"},
                    "type": "dimension",
                    "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
                    "frequency_minutes": 60,
                }
            },
        )
    )["dataset"]
    dataset_key = ("prequel", "acme", dataset["id"])
    started = time.time()
    _wait("the dataset's asset", lambda: dataset_key in link.asset_keys(), FOLLOW_SECONDS)
    followed = time.time() - started
    assert followed < FOLLOW_SECONDS

    extract = data(api.post(f"/import/datasets/{dataset['id']}/extract"), 201)["extract"]
    assert extract["dataset_id"] == dataset["id"] and extract["status"] in ("pending", "running")
    done = _job(api, "extract", extract["id"])
    assert done["status"] == "succeeded", done
    assert done["run_id"] and done["records_processed"] == USERS and done["records_new_inserted"] == USERS
    assert done["started_at"] and done["ended_at"]
    listed = data(api.get("/import/extracts", params={"dataset_id": dataset["id"]}))["extracts"]
    assert [e["id"] for e in listed] == [extract["id"]]

    # Phase 3: a destination at the receiver, a product, a stream, a transform test, a load
    destination = data(
        api.post(
            "/import/destinations",
            json={
                "destination": {
                    "name": "primary-destination",
                    "type": "webhook_batch",
                    "record_schema": {
                        "type": "object",
                        "required": ["id", "email"],
                        "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
                    },
                    "webhook_batch": {"request_template": {"uri": receiver.url, "method": "POST"}},
                }
            },
        )
    )["destination"]
    data(
        api.post("/import/products", json={"product": {"name": "primary-product", "destinations": [destination["id"]]}})
    )
    stream = data(
        api.post(
            "/import/streams",
            json={
                "stream": {
                    "name": "users-stream",
                    "dataset_id": dataset["id"],
                    "destination_id": destination["id"],
                    "mappings": [
                        {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}},
                        {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
                    ],
                }
            },
        )
    )["stream"]
    sample = data(api.post(f"/import/datasets/{dataset['id']}/random-sample", json={"sample_size": 5}))
    assert len(sample["records"]) == 5 and {c["name"] for c in sample["schema"]} >= {"id", "email"}
    record_ids = [str(r["id"]) for r in sample["records"]]
    tested = data(api.post(f"/import/streams/{stream['id']}/test-transform", json={"record_ids": record_ids}))
    assert sorted(r["id"] for r in tested["records"]) == sorted(record_ids)
    assert tested["violations"] == [None] * 5 and [c["name"] for c in tested["schema"]] == ["id", "email"]

    stream_key = ("prequel", "acme", "streams", stream["id"])
    _wait("the stream's asset", lambda: stream_key in link.asset_keys(), FOLLOW_SECONDS)
    load = data(api.post(f"/import/streams/{stream['id']}/load", json={}))["load"]
    finished = _job(api, "load", load["id"])
    assert finished["status"] == "succeeded", finished
    assert finished["records_loaded"] == USERS and finished["records_errored"] == 0
    received = receiver.store.records(stream_id=stream["id"])
    assert sorted(int(r["record"]["id"]) for r in received) == list(range(1, USERS + 1))

    lineage = data(api.get(f"/import/datasets/{dataset['id']}/records/{record_ids[0]}"))["record"]
    assert lineage["extract"]["data"]["email"] == f"u{record_ids[0]}@guide.example"
    assert lineage["load"]["last_loaded_at"]

    # The definitions follow a delete too, and nothing in Dagster's storage holds the source's password.
    data(api.delete(f"/import/streams/{stream['id']}"))
    _wait("the stream's asset to go", lambda: stream_key not in link.asset_keys(), FOLLOW_SECONDS)
    for path in (stack["tmp"] / "dagster_home").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    for name in ("catalog.db", "catalog.db-wal"):
        path = stack["tmp"] / name
        if path.exists():
            assert PASSWORD.encode() not in path.read_bytes()
    assert PASSWORD not in (stack["tmp"] / "webserver.log").read_text()
