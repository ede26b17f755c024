"""Stitch's Connect token flow and Import API on a real server: sources and tokens (at most two live,
revocation), batches staged durably in the token's provider's lake before 2xx, Stitch's status codes,
and a token that never writes another provider's lake."""

import json
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from prequel_dagster.api.app import create_app
from prequel_dagster.api.service import Service
from prequel_dagster.catalog.store import Catalog
from prequel_dagster.cli import main
from prequel_dagster.push.staging import read_staged, staged_tables
from prequel_dagster.stores import LocalStore

from .api_helpers import api_server, client
from .servers import need

SCHEMA = {
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["null", "string"]},
        "updated_at": {"type": "string", "format": "date-time"},
    }
}


def _batch(n: int = 3, *, start: int = 1, table: str = "users") -> dict:
    return {
        "table_name": table,
        "schema": SCHEMA,
        "key_names": ["id"],
        "messages": [
            {
                "action": "upsert",
                "sequence": 1000 + i,
                "data": {"id": i, "email": f"u{i}@x.example", "updated_at": "2026-12-01T10:00:00Z"},
            }
            for i in range(start, start + n)
        ],
    }


@pytest.fixture
def push(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("PREQUEL_CATALOG_KEY", Fernet.generate_key().decode())
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert catalog is not None
    for provider in ("acme", "globex"):
        lake = tmp_path / f"lake-{provider}"
        catalog.create(
            "datalakes",
            f"lake-{provider}",
            None,
            {"id": f"lake-{provider}", "name": "l", "storage": "local", "local": {"path": str(lake)}},
        )
        catalog.create(
            "providers",
            provider,
            provider,
            {"id": provider, "name": provider, "datalake_id": f"lake-{provider}", "products": ["all"]},
        )
    _, company_key = catalog.create_key()
    _, acme_key = catalog.create_key("acme")
    service = Service(catalog)
    with api_server(create_app(service=service)) as base:
        yield {
            "base": base,
            "company": company_key,
            "acme": acme_key,
            "tmp": tmp_path,
            "catalog": catalog,
            "service": service,
        }
    catalog.close()


def _connect(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _source(push, key: str, **extra) -> dict:
    with _connect(push["base"], key) as c:
        made = c.post("/v4/sources", json={"type": "import_api", "display_name": "Import API", **extra})
        assert made.status_code == 200, made.text
        return made.json()


def _token(push, source: dict) -> tuple[int, str]:
    with _connect(push["base"], push["company"]) as c:
        made = c.post(f"/v4/sources/{source['id']}/tokens")
        assert made.status_code == 200, made.text
        body = made.json()
        assert set(body) == {"id", "access_token"} and body["access_token"].startswith("at_")
        return body["id"], body["access_token"]


def _post(
    push,
    token: str | None,
    body: bytes | dict,
    *,
    path: str = "/v2/import/batch",
    content_type: str = "application/json",
):
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(push["base"] + path, content=data, headers=headers, timeout=60)


def test_connect_creates_a_source_and_rotates_its_tokens(push):
    with _connect(push["base"], push["acme"]) as c:
        card = c.get("/v4/source-types/import_api")
        assert card.status_code == 200 and card.json()["details"]["protocol"] == "import_api"
    source = _source(push, push["acme"])  # a provider's key: its own provider
    assert isinstance(source["id"], int) and source["stitch_client_id"] == source["id"]
    assert source["name"] == "import_api" and source["provider_id"] == "acme"
    company_made = _source(push, push["company"], provider_id="globex")
    assert company_made["provider_id"] == "globex"
    with _connect(push["base"], push["company"]) as c:
        assert c.post("/v4/sources", json={"type": "import_api", "display_name": "x"}).status_code == 400

    first_id, first = _token(push, source)
    second_id, second = _token(push, source)
    with _connect(push["base"], push["company"]) as c:
        third = c.post(f"/v4/sources/{source['id']}/tokens")
        assert third.status_code == 400 and third.json()["error"] == "TooManyTokens" and "revoke one" in third.text
        assert c.get(f"/v4/sources/{source['id']}/tokens").json() == [first_id, second_id]
    assert _post(push, first, _batch()).status_code == 201
    with _connect(push["base"], push["company"]) as c:
        assert c.delete(f"/v4/sources/{source['id']}/tokens/{first_id}").json()["id"] == source["id"]
        assert c.get(f"/v4/sources/{source['id']}/tokens").json() == [second_id]
    assert _post(push, first, _batch()).status_code == 401  # revoked: the next request is refused
    assert _post(push, second, _batch()).status_code == 201
    _token(push, source)  # a free slot again

    # globex's key cannot see or mint tokens for acme's source: the same 404 as a missing one
    _, globex_key = push["catalog"].create_key("globex")
    with _connect(push["base"], globex_key) as c:
        theirs = c.post(f"/v4/sources/{source['id']}/tokens")
        missing = c.post("/v4/sources/999999/tokens")
        assert theirs.status_code == missing.status_code == 404
        assert [s["id"] for s in c.get("/v4/sources").json()] == [company_made["id"]]


def test_connect_errors_come_in_connects_shape(push):
    """Stitch's Connect clients read ``{"error": <Code>, "data": {"message": ...}}``."""

    def error(answer: httpx.Response) -> tuple[int, str]:
        body = answer.json()
        assert set(body) == {"error", "data"} and isinstance(body["data"]["message"], str), body
        return answer.status_code, body["error"]

    _source(push, push["acme"])  # "Import API" -> import_api
    with _connect(push["base"], push["acme"]) as c:
        assert error(c.post("/v4/sources", json={"type": "postgres", "display_name": "p"})) == (400, "InvalidType")
        assert error(c.post("/v4/sources", json={"type": "import_api"})) == (400, "InvalidBody")
        assert error(c.post("/v4/sources", json={"type": "import_api", "display_name": "x", "oops": 1})) == (
            400,
            "InvalidBody",
        )
        assert error(c.post("/v4/sources", json={"type": "import_api", "display_name": "####"})) == (
            400,
            "InvalidDisplayName",
        )
        again = c.post("/v4/sources", json={"type": "import_api", "display_name": "import API"})
        assert error(again) == (400, "InvalidName") and "import_api" in again.json()["data"]["message"]
        assert error(c.post("/v4/sources", content=b"{not json")) == (400, "InvalidBody")
        assert error(c.get("/v4/sources/424242")) == (404, "NotFound")
        assert error(c.delete("/v4/sources/424242/tokens/1")) == (404, "NotFound")
    with _connect(push["base"], "not-a-key") as c:
        assert error(c.get("/v4/sources")) == (401, "Unauthorized")


def test_an_accepted_batch_is_in_the_tokens_provider_lake(push):
    acme, globex = (
        _source(push, push["company"], provider_id="acme"),
        _source(push, push["company"], provider_id="globex"),
    )
    _, acme_token = _token(push, acme)
    _, globex_token = _token(push, globex)
    answer = _post(push, acme_token, _batch(5))
    assert answer.status_code == 201 and answer.json() == {"status": "OK", "message": "Batch Accepted!"}
    store = LocalStore(push["tmp"] / "lake-acme")
    staged = staged_tables(store, "acme", acme["prequel_source_id"])
    assert list(staged) == ["users"] and len(staged["users"]) == 1
    table = read_staged(store, staged["users"][0])
    assert table.column("id").to_pylist() == [1, 2, 3, 4, 5]
    assert table.column("_sdc_sequence").to_pylist() == [1001, 1002, 1003, 1004, 1005]
    assert "_sdc_received_at" in table.column_names
    # globex's token, even naming acme's table and a hostile table name, writes only globex's lake
    hostile = _batch(2, table="../../acme/" + acme["prequel_source_id"] + "/users")
    assert _post(push, globex_token, hostile).status_code == 201
    assert len(staged_tables(store, "acme", acme["prequel_source_id"])["users"]) == 1
    globex_store = LocalStore(push["tmp"] / "lake-globex")
    assert list(staged_tables(globex_store, "globex", globex["prequel_source_id"])) == [hostile["table_name"]]
    assert not (push["tmp"] / "lake-globex" / "artifacts" / "acme").exists()
    # housekeeping (retention, leftovers of crashed runs) never takes an accepted batch
    from prequel_dagster.lake.housekeeping import run_housekeeping

    run_housekeeping(push["service"].config(), "lake-acme")
    assert staged_tables(store, "acme", acme["prequel_source_id"])["users"] == staged["users"]


def test_stitchs_status_codes(push):
    source = _source(push, push["company"], provider_id="acme")
    _, token = _token(push, source)
    status = httpx.get(push["base"] + "/v2/import/status", timeout=10)
    assert status.status_code == 200 and status.json()["status"] == "OK"
    assert _post(push, None, _batch()).status_code == 401
    assert _post(push, "at_nope", _batch()).status_code == 401
    assert _post(push, token, b"{not json").status_code == 400
    assert _post(push, token, _batch(), content_type="text/plain").status_code == 415
    too_many = _batch(20_001)
    assert _post(push, token, too_many).status_code == 400
    big = b'{"table_name": "t", "padding": "' + b"x" * (21 * 1024 * 1024) + b'"}'
    assert _post(push, token, big).status_code == 413
    bad = _batch(3)
    bad["messages"][1]["data"]["id"] = "not-an-integer"
    refused = _post(push, token, bad)
    assert refused.status_code == 400 and "Record 1 did not conform to schema" in refused.json()["message"]
    valid = _post(
        push,
        token,
        [
            {
                "client_id": source["stitch_client_id"],
                "table_name": "t",
                "sequence": 1,
                "action": "upsert",
                "key_names": ["id"],
                "data": {"id": 1},
            }
        ],
        path="/v2/import/validate",
    )
    assert valid.status_code == 200 and valid.json()["message"] == "Batch is valid!"
    other_client = [
        {
            "client_id": source["stitch_client_id"] + 1,
            "table_name": "t",
            "sequence": 1,
            "action": "upsert",
            "key_names": ["id"],
            "data": {"id": 1},
        }
    ]
    assert _post(push, token, other_client, path="/v2/import/push").status_code == 403
    pushed = _post(
        push,
        token,
        [
            {
                "client_id": source["stitch_client_id"],
                "table_name": "events",
                "sequence": 1,
                "action": "upsert",
                "key_names": ["id"],
                "data": {"id": 1},
            }
        ],
        path="/v2/import/push",
    )
    assert pushed.status_code == 201
    assert "events" in staged_tables(LocalStore(push["tmp"] / "lake-acme"), "acme", source["prequel_source_id"])


def test_a_lake_that_cannot_take_writes_answers_503_and_keeps_nothing(push):
    blocker = push["tmp"] / "not-a-folder"
    blocker.write_text("a file where the lake's folder would be")
    push["catalog"].update(
        "datalakes",
        "lake-acme",
        None,
        {"id": "lake-acme", "name": "l", "storage": "local", "local": {"path": str(blocker / "lake")}},
    )
    source = _source(push, push["company"], provider_id="acme")
    _, token = _token(push, source)
    assert _post(push, token, _batch()).status_code == 503


def test_deleting_the_source_revokes_its_tokens_and_tokens_come_from_the_cli(push, monkeypatch, capsys, tmp_path):
    source = _source(push, push["company"], provider_id="acme")
    _, token = _token(push, source)
    with client(push["base"], push["company"]) as c:
        assert c.delete(f"/import/sources/{source['prequel_source_id']}").status_code == 200
    assert _post(push, token, _batch()).status_code == 401

    monkeypatch.setenv("PREQUEL_CATALOG_URL", f"sqlite:///{push['tmp'] / 'catalog.db'}")
    monkeypatch.setenv("PREQUEL_CONFIG", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("PREQUEL_CONFIG")
    monkeypatch.chdir(tmp_path)
    yaml_source = _source(push, push["company"], provider_id="acme")
    assert main(["push", "tokens", "create", yaml_source["prequel_source_id"]]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert printed.startswith("at_") and _post(push, printed, _batch()).status_code == 201


def _target_stitch() -> str:
    exe = Path(__file__).resolve().parents[1] / ".venv-clients" / "bin" / "target-stitch"
    if not exe.exists():
        need("target-stitch", "bash scripts/test.sh installs it into .venv-clients")
    return str(exe)


def test_singers_target_stitch_pushes_unchanged(push):
    """Stitch's own Singer target, pointed at our URL, delivers a stream's records (schema, keys,
    table_version and activate_version included) into the provider's lake."""
    exe = _target_stitch()
    source = _source(push, push["company"], provider_id="acme")
    _, token = _token(push, source)
    config = push["tmp"] / "target-stitch.json"
    config.write_text(
        json.dumps(
            {
                "token": token,
                "client_id": source["stitch_client_id"],
                "small_batch_url": push["base"] + "/v2/import/batch",
                "big_batch_url": push["base"] + "/v2/import/batch",
                "batch_size_preferences": {},
            }
        )
    )
    schema = {"type": "object", "properties": {"id": {"type": "integer"}, "email": {"type": ["null", "string"]}}}
    lines = [
        {"type": "SCHEMA", "stream": "users", "schema": schema, "key_properties": ["id"]},
        {"type": "ACTIVATE_VERSION", "stream": "users", "version": 7},
        *(
            {"type": "RECORD", "stream": "users", "record": {"id": i, "email": f"u{i}@x.example"}, "version": 7}
            for i in range(1, 2001)
        ),
        {"type": "ACTIVATE_VERSION", "stream": "users", "version": 7},
        {"type": "STATE", "value": {"bookmark": 2000}},
    ]
    done = subprocess.run(
        [exe, "-c", str(config)],
        input="\n".join(json.dumps(line) for line in lines) + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"bookmark": 2000}  # it emits state once accepted
    store = LocalStore(push["tmp"] / "lake-acme")
    files = staged_tables(store, "acme", source["prequel_source_id"])["users"]
    ids = sorted(i for path in files for i in read_staged(store, path).column("id").to_pylist())
    assert ids == list(range(1, 2001))
    assert set(read_staged(store, files[0]).column("_sdc_table_version").to_pylist()) == {7}


def test_a_chunked_body_past_20_mb_is_refused_without_being_held(push):
    source = _source(push, push["company"], provider_id="acme")
    _, token = _token(push, source)

    def chunks():
        yield b'{"table_name": "t", "padding": "'
        for _ in range(22):
            yield b"x" * (1024 * 1024)
        yield b'"}'

    answer = httpx.post(
        push["base"] + "/v2/import/batch",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 413 and "exceeds the maximum" in answer.json()["message"]


STITCHCLIENT_SCRIPT = """
import datetime, decimal, json, sys
from stitchclient.client import Client

client_id, token, url, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
acked = []
with Client(client_id, token, override_stitch_url=url, callback_function=acked.extend,
            batch_delay_seconds=0.0) as client:
    for i in range(count):
        client.push({"action": "upsert", "table_name": "orders", "key_names": ["id"], "sequence": i,
                     "data": {"id": i, "placed_at": datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc),
                              "amount": decimal.Decimal("9.99")}}, callback_arg=i)
print(json.dumps(sorted(acked)))
"""


def test_stitchs_python_client_pushes_transit_unchanged(push):
    """Stitch's stitchclient (Transit bodies to /v2/import/push): every record its callback reports
    as accepted is in the provider's lake."""
    python = Path(_target_stitch()).parent / "python"
    source = _source(push, push["company"], provider_id="acme")
    _, token = _token(push, source)
    done = subprocess.run(
        [
            str(python),
            "-c",
            STITCHCLIENT_SCRIPT,
            str(source["stitch_client_id"]),
            token,
            push["base"] + "/v2/import/push",
            "300",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    acked = json.loads(done.stdout.strip().splitlines()[-1])
    assert acked == list(range(300))
    store = LocalStore(push["tmp"] / "lake-acme")
    files = staged_tables(store, "acme", source["prequel_source_id"])["orders"]
    tables = [read_staged(store, path) for path in files]
    assert sorted(i for t in tables for i in t.column("id").to_pylist()) == list(range(300))
    assert {v for t in tables for v in t.column("amount").to_pylist()} == {"9.99"}
    assert {v for t in tables for v in t.column("placed_at").to_pylist()} == {"2026-12-01T00:00:00Z"}


def test_a_catalog_that_fails_mid_request_answers_503_without_its_message(push, monkeypatch):
    """The Import API's requests are answered ahead of FastAPI's handlers (ImportLane): a catalog or
    config failure there is Stitch's 'send it again later', and its text stays in the log."""
    from prequel_dagster.catalog.store import CatalogError

    source = _source(push, push["acme"])
    _, token = _token(push, source)

    def down(*args, **kwargs):
        raise CatalogError("database at postgresql://admin:hunter2@db/catalog is unreachable")

    monkeypatch.setattr(push["service"], "config", down)
    answer = _post(push, token, _batch())
    assert answer.status_code == 503
    assert "send the batch again later" in answer.json()["message"] and "hunter2" not in answer.text
