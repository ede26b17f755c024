"""The management API's resources over HTTP (a real uvicorn server, the reference receiver, PostgreSQL):
the setup guide's and the seeds' bodies as written, ids, keys and their scoping against a hostile tenant,
secrets, tenant strings as data, malformed bodies, pagination, the YAML config beside the catalog,
referenced deletes, a PostgreSQL catalog, the OpenAPI document and the key commands of the CLI."""

import contextlib
import copy
import io
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psycopg
import pytest
import sqlalchemy as sa
import yaml
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet

import prequel_dagster.catalog.store as catalog_store
from prequel_dagster.api.app import create_app
from prequel_dagster.api.server import check_destination
from prequel_dagster.api.service import Service
from prequel_dagster.catalog.store import Catalog

from .api_helpers import api_server, client, data, error

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PASSWORD = "pg-Pa55-Zq8rT1"
TOKEN = "Bearer s3cr3t-token"
MASK = "********"

# ---------------------------------------------------------------------- the setup guide's bodies (seed 004), verbatim

GUIDE_DATALAKE = """{
    "datalake": {
      "name": "primary-datalake",
      "storage": "s3",
      "s3": {
        "bucket_name": "<your-bucket>",
        "bucket_region": "us-east-1",
        "prefix": "prequel-import",
        "auth_method": "aws_iam_role",
        "aws_iam_role": {
          "aws_iam_role_arn": "<your-role-arn>"
        }
      }
    }
  }"""
GUIDE_PROVIDER = """{
    "provider": {
      "name": "Acme Corp",
      "id": "acme",
      "datalake_id": "<DATALAKE_ID>",
      "products": ["all"]
    }
  }"""
GUIDE_SOURCE = """{
    "source": {
      "name": "acme-postgres",
      "vendor": "postgres",
      "provider_id": "<PROVIDER_ID>",
      "postgres": {
        "host": "db.acme.example.com",
        "port": 5432,
        "database": "production",
        "auth_method": "password_auth",
        "password_auth": {
          "username": "prequel",
          "password": "<password>"
        }
      }
    }
  }"""
GUIDE_DATASET = """{
    "dataset": {
      "source_id": "<SOURCE_ID>",
      "method": "table",
      "table": {
        "source_table_namespace": "public",
        "source_table_name": "users"
      },
      "type": "dimension",
      "dimension": {
        "primary_key_column": "id",
        "last_modified_column": "updated_at"
      },
      "frequency_minutes": 60
    }
  }"""
GUIDE_DESTINATION = """{
    "destination": {
      "name": "primary-destination",
      "type": "webhook_record",
      "record_schema": { "type": "object", "required": ["id"], "properties": { "id": { "type": "string" } } },
      "webhook_record": {
        "request_template": {
          "uri": "https://your-app.example.com/prequel/records",
          "method": "POST"
        }
      }
    }
  }"""
GUIDE_PRODUCT = """{
    "product": {
      "name": "primary-product",
      "destinations": ["<DESTINATION_ID>"]
    }
  }"""
GUIDE_STREAM = """{
    "stream": {
      "name": "users-stream",
      "dataset_id": "<DATASET_ID>",
      "destination_id": "<DESTINATION_ID>",
      "mappings": [
        { "target_field": "id", "field_type": "field", "column": { "name": "id" } }
      ]
    }
  }"""
GUIDE = [GUIDE_DATALAKE, GUIDE_PROVIDER, GUIDE_SOURCE, GUIDE_DATASET, GUIDE_DESTINATION, GUIDE_PRODUCT, GUIDE_STREAM]


def guide(text: str, **values: str) -> dict[str, Any]:
    """A guide body with its ``<PLACEHOLDER>`` strings replaced (``DATASET_ID=...``; ``password``...)."""
    defaults = {"your-bucket": "prequel-import-bucket", "your-role-arn": "arn:aws:iam::123456789012:role/prequel"}
    for name, value in {**defaults, **values}.items():
        text = text.replace(f"<{name}>", value)
    assert "<" not in text, text
    return json.loads(text)


def seed_text(number: str) -> str:
    found = sorted(SEEDS.glob(f"{number}_*.txt"))
    if not found:
        pytest.skip(f"the seed {number}_*.txt is not in {SEEDS}")
    return found[0].read_text()


def seed_openapi() -> dict[str, Any]:
    """Seed 000's OpenAPI document (the YAML block of POST /import/streams)."""
    text = seed_text("000")
    block = re.search(r"````yaml[^\n]*\n(.*?)````", text, re.S)
    assert block is not None
    return yaml.safe_load(block.group(1))


def seed_source_request() -> dict[str, Any]:
    """Seed 001's request body (the curl ``--data``)."""
    text = seed_text("001")
    body = re.search(r"--data '\n(.*?)\n'", text, re.S)
    assert body is not None
    return json.loads(body.group(1))


def schema_validator(doc: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """``schema`` checked with the seed's components (``$ref: '#/components/...'``), formats asserted."""

    def plain(value: Any) -> Any:  # the seed's "$id" beside a "$ref" would move the ref's base URI off the document
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k not in ("$id", "$schema")}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    root = {**plain(schema), "components": plain(doc["components"])}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


# ---------------------------------------------------------------------- the app under test


@dataclass
class Api:
    url: str
    catalog: Catalog
    service: Service
    key: str
    tmp: Path

    def client(self, key: str | None = "company") -> httpx.Client:
        return client(self.url, self.key if key == "company" else key)


@contextlib.contextmanager
def running(tmp: Path, yaml_path: Path | None = None, url: str | None = None) -> Iterator[Api]:
    catalog = Catalog.open(url or f"sqlite:///{tmp}/catalog.db")
    assert catalog is not None
    service = Service(catalog, yaml_path, check_destination=check_destination)
    _, key = catalog.create_key(provider_id=None, label="company")
    try:
        with api_server(create_app(service=service)) as base:
            yield Api(base, catalog, service, key, tmp)
    finally:
        catalog.close()


@pytest.fixture
def catalog_key(monkeypatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("PREQUEL_CATALOG_KEY", key)
    monkeypatch.delenv("PREQUEL_CATALOG_URL", raising=False)
    monkeypatch.delenv("PREQUEL_CONFIG", raising=False)
    return key


@pytest.fixture
def api(tmp_path, catalog_key) -> Iterator[Api]:
    with running(tmp_path) as found:
        yield found


def created(response: httpx.Response, kind: str) -> dict[str, Any]:
    return data(response)[kind]


def pipeline(c: httpx.Client, receiver_url: str, provider: str = "acme", lake: str | None = None) -> dict[str, Any]:
    """The guide's resources in its order (datalake and product only once); every response."""
    out: dict[str, Any] = {}
    if lake is None:
        out["datalake"] = created(c.post("/import/datalakes", json=guide(GUIDE_DATALAKE)), "datalake")
        lake = out["datalake"]["id"]
    body = guide(GUIDE_PROVIDER, DATALAKE_ID=lake)
    body["provider"].update(id=provider, name=f"{provider} corp")
    out["provider"] = created(c.post("/import/providers", json=body), "provider")
    body = guide(GUIDE_SOURCE, PROVIDER_ID=provider, password=PASSWORD)
    out["source"] = created(c.post("/import/sources", json=body), "source")
    body = guide(GUIDE_DATASET, SOURCE_ID=out["source"]["id"])
    out["dataset"] = created(c.post("/import/datasets", json=body), "dataset")
    out["destination"] = created(c.post("/import/destinations", json=destination_body(receiver_url)), "destination")
    out["stream_request"] = guide(
        GUIDE_STREAM, DATASET_ID=out["dataset"]["id"], DESTINATION_ID=out["destination"]["id"]
    )
    response = c.post("/import/streams", json=out["stream_request"])
    out["stream_response"] = response.json()
    out["stream"] = created(response, "stream")
    return out


def destination_body(receiver_url: str, **headers: str) -> dict[str, Any]:
    """The guide's destination, its uri on the receiver (creation checks that it answers)."""
    body = guide(GUIDE_DESTINATION)
    template = body["destination"]["webhook_record"]["request_template"]
    template["uri"] = receiver_url + "/prequel/records"
    if headers:
        template["headers"] = headers
    return body


def without_id(message: str, id: str) -> str:
    return message.replace(id, "<ID>")


# ---------------------------------------------------------------------- 1. the guide's and the seeds' bodies


def check_source(found: dict[str, Any], sent: dict[str, Any]) -> None:
    """A source response: every field seed 001's response shows for postgres, never the password."""
    for field in ("id", "provider_id", "name", "is_reachable", "created_at", "updated_at"):
        assert field in found, (field, found)
    assert isinstance(found["is_reachable"], bool)
    pg = found["postgres"]
    for field in ("is_valid", "host", "port", "database", "username", "connection_timeout_in_seconds"):
        assert field in pg, (field, found)
    assert isinstance(pg["is_valid"], bool) and isinstance(pg["connection_timeout_in_seconds"], int)
    for field in ("host", "port", "database"):
        assert pg[field] == sent["postgres"][field]
    assert pg["username"] == sent["postgres"]["password_auth"]["username"]
    assert found["provider_id"] == sent["provider_id"] and found["name"] == sent["name"]
    assert sent["postgres"]["password_auth"]["password"] not in json.dumps(found)
    assert "password" not in json.dumps(found).replace("password_auth", "")


def test_guide_bodies_are_accepted_as_written(api, receiver):
    if SEEDS.is_dir():  # the bodies above are the guide's, character for character
        guide_text = seed_text("004")
        for body in GUIDE:
            assert body in guide_text, body
    with api.client() as c:
        made = pipeline(c, receiver.url)
        datalake, provider = made["datalake"], made["provider"]
        assert datalake["s3"] == {
            "bucket_name": "prequel-import-bucket",
            "bucket_region": "us-east-1",
            "prefix": "prequel-import",
            "auth_method": "aws_iam_role",
            "aws_iam_role": {"aws_iam_role_arn": "arn:aws:iam::123456789012:role/prequel"},
        }
        assert provider["id"] == "acme" and provider["datalake_id"] == datalake["id"]
        assert provider["products"] == ["all"]
        check_source(made["source"], guide(GUIDE_SOURCE, PROVIDER_ID="acme", password=PASSWORD)["source"])
        dataset = made["dataset"]
        assert dataset["source_id"] == made["source"]["id"] and dataset["frequency_minutes"] == 60
        assert dataset["table"] == {"source_table_namespace": "public", "source_table_name": "users"}
        assert dataset["dimension"] == {"primary_key_column": "id", "last_modified_column": "updated_at"}
        destination = made["destination"]
        assert destination["type"] == "webhook_record" and destination["record_schema"]["required"] == ["id"]
        assert destination["webhook_record"]["request_template"]["uri"] == receiver.url + "/prequel/records"
        product = created(
            c.post("/import/products", json=guide(GUIDE_PRODUCT, DESTINATION_ID=destination["id"])), "product"
        )
        assert product["name"] == "primary-product" and product["destinations"] == [destination["id"]]
        stream = made["stream"]
        assert (stream["dataset_id"], stream["destination_id"]) == (dataset["id"], destination["id"])
        assert stream["mappings"] == made["stream_request"]["stream"]["mappings"]
        for kind, found in (
            *((k, made[k]) for k in ("datalake", "provider", "source", "dataset")),
            ("product", product),
        ):
            assert data(c.get(f"/import/{kind}s/{found['id']}"))[kind] == found, kind
        for kind in ("destination", "stream"):
            assert data(c.get(f"/import/{kind}s/{made[kind]['id']}"))[kind] == made[kind], kind


def test_seed_stream_schema_and_seed_source_body(api, receiver):
    doc = seed_openapi()
    with api.client() as c:
        made = pipeline(c, receiver.url)

        # The stream: the guide's request is a CreateStreamRequest, every answer a GetStreamResponse in the envelope.
        schemas = doc["paths"]["/import/streams"]["post"]
        request_schema = schemas["requestBody"]["content"]["application/json"]["schema"]
        schema_validator(doc, request_schema).validate(made["stream_request"])
        response_schema = schemas["responses"]["200"]["content"]["application/json"]["schema"]
        checker = schema_validator(doc, response_schema)
        checker.validate(made["stream_response"])
        checker.validate(c.get(f"/import/streams/{made['stream']['id']}").json())
        patched = c.patch(f"/import/streams/{made['stream']['id']}", json={"stream": {"is_enabled": False}})
        checker.validate(patched.json())
        assert patched.json()["data"]["stream"]["is_enabled"] is False
        for stream in data(c.get("/import/streams"))["streams"]:
            checker.validate({"status": "success", "data": {"stream": stream}, "message": "listed"})
        stretched = copy.deepcopy(made["stream_response"])  # (the check is real: one more key fails it)
        stretched["data"]["stream"]["is_valid"] = True
        assert not checker.is_valid(stretched)
        error_schema = schema_validator(doc, {"$ref": "#/components/schemas/ErrorResponse"})
        error_schema.validate(c.post("/import/streams", json={"stream": {}}).json())

        # The source: seed 001's request body, vendor postgres and its placeholders filled in.
        seed = seed_source_request()
        assert seed["source"]["vendor"] == "<unknown>"
        text = json.dumps(seed)
        for placeholder, value in {
            "host": "db2.acme.example.com",
            "database": "analytics",
            "auth_method": "password_auth",
            "username": "reader",
            "password": "seed-Pa55word",
            "schema": "public",
            "provider_id": "acme",
            "name": "acme-analytics",
        }.items():
            text = text.replace(f'"{placeholder}": "<string>"', f'"{placeholder}": "{value}"', 1)
        assert "<string>" not in text
        body = json.loads(text)
        body["source"]["vendor"] = "postgres"
        # As written it asks for an SSH tunnel and names no bastion: refused, naming the missing block.
        message = error(c.post("/import/sources", json=body), 400)
        assert "source.postgres" in message and "ssh_tunnel" in message, message
        tunnel = {"ssh_tunnel_host": "bastion.acme.example.com", "ssh_tunnel_username": "tunnel"}
        body["source"]["postgres"]["ssh_tunnel"] = tunnel
        found = created(c.post("/import/sources", json=body), "source")
        check_source(found, body["source"])
        pg = found["postgres"]
        assert (pg["schema"], pg["use_ssh_tunnel"], pg["disable_ssl"]) == ("public", True, True)
        assert pg["ssh_tunnel"]["ssh_public_key"].startswith("ssh-ed25519 ")  # made by the server, shown
        assert "PRIVATE KEY" not in json.dumps(found)
        assert data(c.get(f"/import/sources/{found['id']}"))["source"] == found


# ---------------------------------------------------------------------- 2. ids


def test_ids_are_the_servers_except_providers(api, receiver):
    with api.client() as c:
        made = pipeline(c, receiver.url)
        product = created(
            c.post("/import/products", json=guide(GUIDE_PRODUCT, DESTINATION_ID=made["destination"]["id"])), "product"
        )
        for found in (*(made[k] for k in ("datalake", "source", "dataset", "destination", "stream")), product):
            assert UUID.match(found["id"]), found
        assert made["provider"]["id"] == "acme"
        ids = [made[k]["id"] for k in ("datalake", "source", "dataset", "destination", "stream")]
        assert len(set(ids)) == len(ids)

        again = guide(GUIDE_PROVIDER, DATALAKE_ID=made["datalake"]["id"])
        again["provider"]["name"] = "another acme"
        message = error(c.post("/import/providers", json=again), 409)
        assert "acme" in message
        assert data(c.get("/import/providers/acme"))["provider"]["name"] == "acme corp"

        body = guide(GUIDE_SOURCE, PROVIDER_ID="acme", password=PASSWORD)
        body["source"]["id"] = "my-source"
        assert "source.id" in error(c.post("/import/sources", json=body), 400)
        assert error(c.get("/import/sources/my-source"), 404)
        for kind, sample in (
            ("datalakes", guide(GUIDE_DATALAKE)),
            ("datasets", guide(GUIDE_DATASET, SOURCE_ID=made["source"]["id"])),
            ("destinations", destination_body(receiver.url)),
            ("products", guide(GUIDE_PRODUCT, DESTINATION_ID=made["destination"]["id"])),
            ("streams", made["stream_request"]),
        ):
            singular = kind[:-1]
            sent = copy.deepcopy(sample)
            sent[singular]["id"] = str(uuid.uuid4())
            assert f"{singular}.id" in error(c.post(f"/import/{kind}", json=sent), 400), kind
            error(c.get(f"/import/{kind}/{sent[singular]['id']}"), 404)
        stream = made["stream"]["id"]
        assert "stream.id" in error(c.patch(f"/import/streams/{stream}", json={"stream": {"id": "other"}}), 400)
        assert data(c.patch(f"/import/streams/{stream}", json={"stream": {"id": stream}}))["stream"]["id"] == stream
        nameless = guide(GUIDE_PROVIDER, DATALAKE_ID=made["datalake"]["id"])
        del nameless["provider"]["id"]
        assert "provider.id" in error(c.post("/import/providers", json=nameless), 400)


# ---------------------------------------------------------------------- 3. authentication


def test_api_keys_authenticate(api):
    base = api.url
    with httpx.Client(base_url=base, timeout=30) as c:
        assert "API key" in error(c.get("/"), 401)
        assert error(c.get("/import/providers"), 401)
        assert error(c.post("/import/providers", json={"provider": {}}), 401)
        assert error(c.get("/", headers={"X-API-KEY": "pqd_nope_" + "x" * 40}), 401)
        assert error(c.get("/", headers={"X-API-KEY": api.key + "x"}), 401)
        assert error(c.get("/", headers={"Authorization": "Basic " + api.key}), 401)
        assert data(c.get("/", headers={"x-api-key": api.key}))
        assert data(c.get("/", headers={"X-Api-Key": api.key}))
        assert data(c.get("/", headers={"Authorization": f"Bearer {api.key}"}))
        assert data(c.get("/import/providers", headers={"Authorization": f"Bearer {api.key}"}))["providers"] == []

        key, text = api.catalog.create_key(provider_id=None, label="to revoke")
        assert data(c.get("/", headers={"X-API-KEY": text}))
        assert api.catalog.revoke_key(key.id)
        assert error(c.get("/", headers={"X-API-KEY": text}), 401)
        assert error(c.get("/import/providers", headers={"Authorization": f"Bearer {text}"}), 401)
        assert data(c.get("/", headers={"X-API-KEY": api.key}))  # the others still work
        assert all(text not in row for row in map(repr, api.catalog.keys()))


# ---------------------------------------------------------------------- 4. a provider's key against another's entries


def test_provider_keys_are_scoped_against_a_hostile_tenant(api, receiver):
    with api.client() as company:
        acme = pipeline(company, receiver.url, "acme")
        globex = pipeline(company, receiver.url, "globex", lake=acme["datalake"]["id"])
        kinds = {"source": "sources", "dataset": "datasets", "stream": "streams"}
        before = {k: company.get(f"/import/{kinds[k]}/{acme[k]['id']}").json() for k in kinds}
        _, globex_key = api.catalog.create_key(provider_id="globex")
        patches = {
            "source": {"name": "pwned", "postgres": {"host": "evil.example.com"}},
            "dataset": {"frequency_minutes": 1},
            "stream": {"name": "pwned", "is_enabled": False},
        }
        with api.client(globex_key) as hostile:
            for singular, kind in kinds.items():
                theirs, nobody = acme[singular]["id"], str(uuid.uuid4())
                for method, body in (("GET", None), ("PATCH", {singular: patches[singular]}), ("DELETE", None)):
                    answers = [
                        without_id(error(hostile.request(method, f"/import/{kind}/{id}", json=body), 404), id)
                        for id in (theirs, nobody)
                    ]
                    assert answers[0] == answers[1], (method, kind, answers)
                listed = data(hostile.get(f"/import/{kind}"))[kind]
                assert [e["id"] for e in listed] == [globex[singular]["id"]], (kind, listed)
                mine = data(hostile.get(f"/import/{kind}/{globex[singular]['id']}"))[singular]
                assert mine["id"] == globex[singular]["id"]
            assert [p["id"] for p in data(hostile.get("/import/providers"))["providers"]] == ["globex"]
            assert error(hostile.get("/import/providers/acme"), 404) == error(
                hostile.get("/import/providers/nobody"), 404
            ).replace("nobody", "acme")

            # References to acme's entries read as references to entries that do not exist.
            def refused(kind: str, body: dict[str, Any], field: str, theirs: str) -> None:
                nobody = "no-such-" + uuid.uuid4().hex[:8]
                singular = kind[:-1]
                answers = []
                for ref in (theirs, nobody):
                    sent = copy.deepcopy(body)
                    sent[singular][field] = ref
                    answers.append(without_id(error(hostile.post(f"/import/{kind}", json=sent), 400), ref))
                assert answers[0] == answers[1], (kind, answers)
                assert f"{singular}.{field}" in answers[0], answers

            source = guide(GUIDE_SOURCE, PROVIDER_ID="globex", password=PASSWORD)
            refused("sources", source, "provider_id", "acme")
            refused("datasets", guide(GUIDE_DATASET, SOURCE_ID="x"), "source_id", acme["source"]["id"])
            stream = guide(GUIDE_STREAM, DATASET_ID="x", DESTINATION_ID=globex["destination"]["id"])
            refused("streams", stream, "dataset_id", acme["dataset"]["id"])
            # ... while the same bodies with its own references are accepted.
            assert created(hostile.post("/import/sources", json=source), "source")["provider_id"] == "globex"

            # The company's resources: a provider's key creates none.
            for kind, body in (
                ("datalakes", guide(GUIDE_DATALAKE)),
                ("products", guide(GUIDE_PRODUCT, DESTINATION_ID=globex["destination"]["id"])),
                ("destinations", destination_body(receiver.url)),
                ("providers", guide(GUIDE_PROVIDER, DATALAKE_ID=acme["datalake"]["id"])),
            ):
                if kind == "providers":
                    body["provider"]["id"] = "initech"
                error(hostile.post(f"/import/{kind}", json=body), 403)
            assert data(hostile.get("/import/datalakes"))["datalakes"] == []
            lake = acme["datalake"]["id"]
            assert without_id(error(hostile.get(f"/import/datalakes/{lake}"), 404), lake) == without_id(
                error(hostile.get(f"/import/datalakes/{(nobody := str(uuid.uuid4()))}"), 404), nobody
            )
            error(hostile.patch(f"/import/datalakes/{lake}", json={"datalake": {"name": "x"}}), 404)
            error(hostile.delete(f"/import/datalakes/{lake}"), 404)
            error(hostile.delete("/import/providers/acme"), 404)

            # Its own entries cannot be moved onto acme's, nor its provider widened, nor local files read.
            mine = globex["source"]["id"]
            answers = [
                error(hostile.patch(f"/import/sources/{mine}", json={"source": {"provider_id": ref}}), 400)
                for ref in ("acme", "nobody")
            ]
            assert answers[0] == answers[1] and "source.provider_id" in answers[0], answers
            answers = [
                error(
                    hostile.patch(f"/import/streams/{globex['stream']['id']}", json={"stream": {"dataset_id": r}}), 400
                )
                for r in (acme["dataset"]["id"], str(uuid.uuid4()))
            ]
            assert answers[0] == answers[1] and "stream.dataset_id" in answers[0], answers
            error(hostile.patch("/import/providers/globex", json={"provider": {"products": ["all", "crm"]}}), 403)
            error(hostile.delete("/import/providers/globex"), 403)
            local = {
                "source": {"name": "files", "vendor": "sqlite", "provider_id": "globex", "sqlite": {"path": "/etc"}}
            }
            assert "source.vendor" in error(hostile.post("/import/sources", json=local), 400)
            patch = {"source": {"vendor": "local", "local": {"path": "/"}, "postgres": None}}
            error(hostile.patch(f"/import/sources/{mine}", json=patch), 400)
            # The company's destinations: readable through its products, never changed.
            dest = globex["destination"]["id"]
            assert data(hostile.get(f"/import/destinations/{dest}"))["destination"]["id"] == dest
            error(hostile.patch(f"/import/destinations/{dest}", json={"destination": {"name": "x"}}), 404)
            error(hostile.delete(f"/import/destinations/{dest}"), 404)
            assert data(hostile.get("/import/products"))["products"] == []

        # A provider restricted to one product sees only that product's destination.
        other = created(company.post("/import/destinations", json=destination_body(receiver.url)), "destination")
        crm = created(
            company.post("/import/products", json=guide(GUIDE_PRODUCT, DESTINATION_ID=other["id"])), "product"
        )
        initech = guide(GUIDE_PROVIDER, DATALAKE_ID=acme["datalake"]["id"])
        initech["provider"].update(id="initech", name="Initech", products=[crm["name"]])
        data(company.post("/import/providers", json=initech))
        source = created(
            company.post("/import/sources", json=guide(GUIDE_SOURCE, PROVIDER_ID="initech", password="p")), "source"
        )
        dataset = created(
            company.post("/import/datasets", json=guide(GUIDE_DATASET, SOURCE_ID=source["id"])), "dataset"
        )
        _, initech_key = api.catalog.create_key(provider_id="initech")
        with api.client(initech_key) as restricted:
            assert [d["id"] for d in data(restricted.get("/import/destinations"))["destinations"]] == [other["id"]]
            theirs, nobody = acme["destination"]["id"], str(uuid.uuid4())
            assert without_id(error(restricted.get(f"/import/destinations/{theirs}"), 404), theirs) == without_id(
                error(restricted.get(f"/import/destinations/{nobody}"), 404), nobody
            )
            answers = []
            for ref in (theirs, nobody):
                body = guide(GUIDE_STREAM, DATASET_ID=dataset["id"], DESTINATION_ID=ref)
                answers.append(without_id(error(restricted.post("/import/streams", json=body), 400), ref))
            assert answers[0] == answers[1] and "stream.destination_id" in answers[0], answers
            body = guide(GUIDE_STREAM, DATASET_ID=dataset["id"], DESTINATION_ID=other["id"])
            assert created(restricted.post("/import/streams", json=body), "stream")["destination_id"] == other["id"]

        after = {k: company.get(f"/import/{kinds[k]}/{acme[k]['id']}").json() for k in kinds}
        assert after == before
        assert data(company.get("/import/providers/acme"))["provider"] == acme["provider"]
        assert data(company.get(f"/import/datalakes/{lake}"))["datalake"] == acme["datalake"]
        assert {p["id"] for p in data(company.get("/import/providers"))["providers"]} == {"acme", "globex", "initech"}


# ---------------------------------------------------------------------- 5. secrets


def test_secrets_are_write_only_and_sealed_at_rest(api, receiver):
    secrets = (PASSWORD, TOKEN, "s3cr3t-token")
    bodies: list[str] = []

    def seen(response: httpx.Response) -> Any:
        bodies.append(response.text)
        return response

    with api.client() as c:
        lake = created(seen(c.post("/import/datalakes", json=guide(GUIDE_DATALAKE))), "datalake")["id"]
        seen(c.post("/import/providers", json=guide(GUIDE_PROVIDER, DATALAKE_ID=lake)))
        body = guide(GUIDE_SOURCE, PROVIDER_ID="acme", password=PASSWORD)
        source = created(seen(c.post("/import/sources", json=body)), "source")
        sid = source["id"]
        destination = created(
            seen(c.post("/import/destinations", json=destination_body(receiver.url, Authorization=TOKEN))),
            "destination",
        )
        did = destination["id"]
        assert destination["webhook_record"]["request_template"]["headers"] == {"Authorization": MASK}
        fetched = data(seen(c.get(f"/import/destinations/{did}")))["destination"]
        assert fetched["webhook_record"]["request_template"]["headers"] == {"Authorization": MASK}
        seen(c.get(f"/import/sources/{sid}"))
        seen(c.get("/import/sources"))
        seen(c.get("/import/destinations"))

        # A PATCH without the password keeps it.
        patched = data(seen(c.patch(f"/import/sources/{sid}", json={"source": {"postgres": {"host": "db3.example"}}})))
        assert patched["source"]["postgres"]["host"] == "db3.example"
        stored = api.service.config().source(sid).postgres.password_auth
        assert stored.password.reveal() == PASSWORD and stored.username == "prequel"

        # The destination's block sent back as GET shows it (masked header and all) keeps the header.
        block = copy.deepcopy(fetched["webhook_record"])
        block["request_template"]["method"] = "PUT"
        seen(c.patch(f"/import/destinations/{did}", json={"destination": {"webhook_record": block}}))
        template = api.service.config().destination(did).webhook_record.request_template
        assert template.method == "PUT"
        assert template.headers["Authorization"].reveal() == TOKEN
        seen(c.patch(f"/import/destinations/{did}", json={"destination": {"name": "renamed"}}))
        template = api.service.config().destination(did).webhook_record.request_template
        assert template.headers["Authorization"].reveal() == TOKEN
        seen(c.get(f"/import/destinations/{did}"))
        seen(c.get("/import/destinations"))

        # The stored bodies hold sealed values only (the API's own view, and the raw rows).
        for entry in api.catalog.entries():
            text = json.dumps(entry.body)
            assert not any(s in text for s in secrets), entry

    assert len(bodies) == 13
    for text in bodies:
        assert not any(s in text for s in secrets), text
    files = [p for p in (api.tmp / "catalog.db", api.tmp / "catalog.db-wal") if p.exists()]
    assert api.tmp / "catalog.db" in files
    raw = b"".join(p.read_bytes() for p in files)
    assert b"db3.example" in raw  # (the writes are in these files)
    for s in secrets:
        assert s.encode() not in raw, s


# ---------------------------------------------------------------------- 6. tenant values are data


def test_tenant_strings_are_never_read_as_environment_references(api, catalog_key, receiver):
    with api.client() as c:
        lake = created(c.post("/import/datalakes", json=guide(GUIDE_DATALAKE)), "datalake")["id"]
        data(c.post("/import/providers", json=guide(GUIDE_PROVIDER, DATALAKE_ID=lake)))
        body = guide(GUIDE_SOURCE, PROVIDER_ID="acme", password="${PREQUEL_CATALOG_KEY}")
        body["source"]["postgres"]["host"] = "${HOME}"
        body["source"]["postgres"]["password_auth"]["username"] = "${USER:-root}"
        sid = created(c.post("/import/sources", json=body), "source")["id"]
        found = data(c.get(f"/import/sources/{sid}"))["source"]
        assert found["postgres"]["host"] == "${HOME}"
        assert found["postgres"]["username"] == "${USER:-root}"
        assert catalog_key not in json.dumps(found)
        model = api.service.config().source(sid).postgres
        assert model.host == "${HOME}"
        assert model.password_auth.password.reveal() == "${PREQUEL_CATALOG_KEY}"
        # A header of a destination too: a template of the tenant's, never the server's environment.
        did = created(
            c.post("/import/destinations", json=destination_body(receiver.url, X=r"${PREQUEL_CATALOG_KEY}")),
            "destination",
        )["id"]
        header = api.service.config().destination(did).webhook_record.request_template.headers["X"]
        assert header.reveal() == "${PREQUEL_CATALOG_KEY}"


# ---------------------------------------------------------------------- 7. malformed bodies

FUZZ_VALUES: list[Any] = [None, 12, "x", [], {}, True, "${HOME}", "a" * 10000]


def leaves(value: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path


def replaced(body: Any, path: tuple, value: Any) -> Any:
    out = copy.deepcopy(body)
    target = out
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return out


def test_malformed_bodies_are_400_naming_the_field(api, receiver):
    with api.client() as c:
        made = pipeline(c, receiver.url)
        source = guide(GUIDE_SOURCE, PROVIDER_ID="acme", password=PASSWORD)
        stream = made["stream_request"]

        def bad(path: str, body: Any = None, *, content: bytes | None = None, method: str = "POST") -> str:
            if content is None:
                return error(c.request(method, path, json=body), 400)
            return error(c.request(method, path, content=content, headers={"Content-Type": "application/json"}), 400)

        assert "not JSON" in bad("/import/streams", content=b"{not json")
        assert "not JSON" in bad("/import/streams", content=b"\xff\xfe")
        assert '"stream"' in bad("/import/streams", content=b"")
        assert '"stream"' in bad("/import/streams", [stream["stream"]])
        assert '"stream"' in bad("/import/streams", "stream")
        assert '"stream"' in bad("/import/streams", {"streams": stream["stream"]})
        assert '"stream"' in bad("/import/streams", {"source": source["source"]})
        assert "extra" in bad("/import/streams", {**stream, "extra": 1})
        assert "stream" in bad("/import/streams", {"stream": [stream["stream"]]})
        assert "stream.foo" in bad("/import/streams", {"stream": {**stream["stream"], "foo": 1}})
        hots = replaced(source, ("source", "postgres", "hots"), "db.example")
        assert "source.postgres.hots" in bad("/import/sources", hots)
        assert "source.postgres.port" in bad("/import/sources", replaced(source, ("source", "postgres", "port"), "abc"))
        nameless = copy.deepcopy(stream)
        del nameless["stream"]["name"]
        assert "stream.name" in bad("/import/streams", nameless)
        mapping = replaced(stream, ("stream", "mappings", 0, "column"), {"nmae": "id"})
        assert "stream.mappings[0].column" in bad("/import/streams", mapping)
        sid = made["source"]["id"]
        assert "source.postgres.port" in bad(
            f"/import/sources/{sid}", {"source": {"postgres": {"port": "abc"}}}, method="PATCH"
        )
        assert '"source"' in bad(f"/import/sources/{sid}", [1], method="PATCH")
        assert "source.postgres.host" in bad(
            f"/import/sources/{sid}", {"source": {"postgres": {"host": None}}}, method="PATCH"
        )
        assert "postgres" in bad(f"/import/sources/{sid}", {"source": {"postgres": None}}, method="PATCH")
        assert "source.created_at" in bad(f"/import/sources/{sid}", {"source": {"created_at": "x"}}, method="PATCH")
        assert data(c.get(f"/import/sources/{sid}"))["source"] == made["source"]
        error(c.put(f"/import/sources/{sid}", json=source), 405)
        error(c.post(f"/import/sources/{sid}", json=source), 405)
        error(c.get("/import/nothing-here"), 404)

        # Sealed values are the catalog's own: a sealed token copied from elsewhere is refused, wherever it is.
        token = api.catalog.box.encrypt("someone else's password")
        sealed = {"$sealed": token}
        for path in (("source", "postgres", "password_auth", "password"), ("source", "name"), ("source", "postgres")):
            assert "$sealed" in bad("/import/sources", replaced(source, path, sealed))
        assert "$sealed" in bad(
            f"/import/sources/{sid}", {"source": {"postgres": {"password_auth": {"password": sealed}}}}, method="PATCH"
        )
        assert "$sealed" in bad("/import/streams", replaced(stream, ("stream", "mappings", 0, "column"), sealed))
        assert api.service.config().source(sid).postgres.password_auth.password.reveal() == PASSWORD

        # Every leaf replaced in turn by each odd value: 200 or a 400 envelope, never a 5xx.
        statuses: dict[int, int] = {}
        targets = (
            ("POST", "/import/sources", source),
            ("POST", "/import/streams", stream),
            ("PATCH", f"/import/sources/{sid}", source),
            ("PATCH", f"/import/streams/{made['stream']['id']}", stream),
        )
        for method, url, body in targets:
            for path in leaves(body):
                for value in FUZZ_VALUES:
                    response = c.request(method, url, json=replaced(body, path, value))
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    assert response.status_code in (200, 400), (path, value, response.status_code, response.text)
                    if response.status_code == 400:
                        assert error(response, 400).strip(), (path, value)
                    else:
                        data(response)
        assert statuses[400] > 100 and statuses[200] > 10, statuses
        assert data(c.get("/"))


# ---------------------------------------------------------------------- 8. pagination


def test_pagination(api):
    with api.client() as c:
        lake = created(c.post("/import/datalakes", json=guide(GUIDE_DATALAKE)), "datalake")["id"]
        ids = []
        for n in range(25):
            body = guide(GUIDE_PROVIDER, DATALAKE_ID=lake)
            body["provider"].update(id=f"p{n:02d}", name=f"provider {n}")
            ids.append(created(c.post("/import/providers", json=body), "provider")["id"])

        pages = []
        page = data(c.get("/import/providers", params={"page_size": 10}))
        while True:
            pages.append(page)
            if not page["has_next"]:
                assert "next_url" not in page
                break
            assert page["next_url"].startswith(api.url + "/import/providers?")
            page = data(c.get(page["next_url"]))
        assert [len(p["providers"]) for p in pages] == [10, 10, 5]
        assert [p["has_next"] for p in pages] == [True, True, False]
        assert [e["id"] for p in pages for e in p["providers"]] == ids

        everything = data(c.get("/import/providers", params={"page_size": 100}))
        assert [e["id"] for e in everything["providers"]] == ids and everything["has_next"] is False
        default = data(c.get("/import/providers"))
        assert len(default["providers"]) == 10 and default["has_next"] is True

        desc = []
        url: str | None = "/import/providers?order=desc&page_size=10"
        while url:
            page = data(c.get(url))
            desc += [e["id"] for e in page["providers"]]
            url = page.get("next_url")
        assert desc == ids[::-1]

        for params in ({"page_size": 0}, {"page_size": 101}, {"page_size": "x"}, {"page_size": -1}, {"order": "up"}):
            error(c.get("/import/providers", params=params), 400)
        for cursor in ("garbage", "%%%", "Zm9v", "!!", "a" * 5000):
            assert "cursor" in error(c.get("/import/providers", params={"cursor": cursor}), 400)


# ---------------------------------------------------------------------- 9. the YAML config beside the catalog

YAML_CONFIG = """
datalakes:
  - {id: lake, name: yaml-lake, storage: local, local: {path: lake}}
providers:
  - {id: yamlco, name: Yaml Co, datalake_id: lake, products: [all]}
sources:
  - {id: yamlco-db, name: yamlco-sqlite, vendor: sqlite, provider_id: yamlco, sqlite: {path: yamlco.db}}
"""


def test_yaml_entries_are_read_only_beside_the_catalog(tmp_path, catalog_key):
    config = tmp_path / "prequel.yaml"
    config.write_text(YAML_CONFIG)
    with running(tmp_path, yaml_path=config) as api, api.client() as c:
        response = c.get("/import/providers/yamlco")
        assert data(response)["provider"]["name"] == "Yaml Co"
        assert response.headers["X-Prequel-Read-Only"] == "true"
        assert data(c.get("/import/sources/yamlco-db"))["source"]["sqlite"] == {"path": "yamlco.db", "is_valid": True}
        assert [p["id"] for p in data(c.get("/import/providers"))["providers"]] == ["yamlco"]

        message = error(c.patch("/import/providers/yamlco", json={"provider": {"name": "renamed"}}), 400)
        assert str(config) in message, message
        message = error(c.delete("/import/providers/yamlco"), 400)
        assert str(config) in message, message
        assert str(config) in error(c.delete("/import/datalakes/lake"), 400)
        duplicate = {"provider": {"id": "yamlco", "name": "dup", "datalake_id": "lake", "products": ["all"]}}
        assert "yamlco" in error(c.post("/import/providers", json=duplicate), 409)
        assert data(c.get("/import/providers/yamlco"))["provider"]["name"] == "Yaml Co"
        catco = {"provider": {"id": "catco", "name": "Cat Co", "datalake_id": "lake", "products": ["all"]}}
        assert created(c.post("/import/providers", json=catco), "provider")["datalake_id"] == "lake"

        body = guide(GUIDE_SOURCE, PROVIDER_ID="yamlco", password=PASSWORD)
        sid = created(c.post("/import/sources", json=body), "source")["id"]
        response = c.get(f"/import/sources/{sid}")
        assert data(response)["source"]["provider_id"] == "yamlco"
        assert "X-Prequel-Read-Only" not in response.headers
        renamed = data(c.patch(f"/import/sources/{sid}", json={"source": {"name": "renamed"}}))["source"]
        assert renamed["name"] == "renamed"
        assert {s["id"] for s in data(c.get("/import/sources"))["sources"]} == {"yamlco-db", sid}
        assert {p["id"] for p in data(c.get("/import/providers"))["providers"]} == {"yamlco", "catco"}
        # A key scoped to the YAML provider sees its YAML entries and its catalog ones.
        _, yamlco_key = api.catalog.create_key(provider_id="yamlco")
        with api.client(yamlco_key) as scoped:
            assert {s["id"] for s in data(scoped.get("/import/sources"))["sources"]} == {"yamlco-db", sid}
        data(c.delete(f"/import/sources/{sid}"))
        error(c.get(f"/import/sources/{sid}"), 404)
        assert config.read_text() == YAML_CONFIG


def test_yaml_entries_list_before_catalog_entries_created_after_the_file(tmp_path, catalog_key):
    config = tmp_path / "prequel.yaml"
    config.write_text(YAML_CONFIG)
    with running(tmp_path, yaml_path=config) as api, api.client() as c:
        now = time.time()
        if now % 1 > 0.8:  # (the file's time and the new entry's in one second: wait for the next one)
            time.sleep(1.01 - now % 1)
            now = time.time()
        os.utime(config, (now, now))
        catco = {"provider": {"id": "catco", "name": "Cat Co", "datalake_id": "lake", "products": ["all"]}}
        made = created(c.post("/import/providers", json=catco), "provider")
        yamlco = data(c.get("/import/providers/yamlco"))["provider"]
        assert made["created_at"][:19] == yamlco["created_at"][:19]  # (the same second)
        listed = data(c.get("/import/providers"))["providers"]
        assert [p["id"] for p in listed] == ["yamlco", "catco"], [(p["id"], p["created_at"]) for p in listed]


# ---------------------------------------------------------------------- 10. deletes of referenced entries


def test_deletes_are_refused_while_referenced(api, receiver):
    with api.client() as c:
        made = pipeline(c, receiver.url)
        dataset, stream = made["dataset"]["id"], made["stream"]["id"]
        message = error(c.delete(f"/import/datasets/{dataset}"), 400)
        assert stream in message and "stream" in message, message
        assert data(c.get(f"/import/datasets/{dataset}"))["dataset"]["id"] == dataset
        message = error(c.delete(f"/import/sources/{made['source']['id']}"), 400)
        assert dataset in message, message
        message = error(c.delete("/import/providers/acme"), 400)
        assert made["source"]["id"] in message, message

        data(c.delete(f"/import/streams/{stream}"))
        error(c.get(f"/import/streams/{stream}"), 404)
        error(c.delete(f"/import/streams/{stream}"), 404)
        data(c.delete(f"/import/datasets/{dataset}"))
        error(c.get(f"/import/datasets/{dataset}"), 404)

        other = created(c.post("/import/destinations", json=destination_body(receiver.url)), "destination")["id"]
        product = created(c.post("/import/products", json=guide(GUIDE_PRODUCT, DESTINATION_ID=other)), "product")
        message = error(c.delete(f"/import/destinations/{other}"), 400)
        assert product["id"] in message and "product" in message, message
        data(c.patch(f"/import/products/{product['id']}", json={"product": {"destinations": []}}))
        data(c.delete(f"/import/destinations/{other}"))
        data(c.delete(f"/import/destinations/{made['destination']['id']}"))


def test_destination_creation_checks_the_endpoint(api, receiver):
    from .servers import free_port

    dead = f"http://127.0.0.1:{free_port()}/prequel/records"
    with api.client() as c:
        body = destination_body(receiver.url)
        body["destination"]["webhook_record"]["request_template"]["uri"] = dead
        message = error(c.post("/import/destinations", json=body), 400)
        assert "not reachable" in message and "skip_validation" in message, message
        assert data(c.get("/import/destinations"))["destinations"] == []
        found = created(c.post("/import/destinations", params={"skip_validation": "true"}, json=body), "destination")
        assert found["webhook_record"]["request_template"]["uri"] == dead
        live = created(c.post("/import/destinations", json=destination_body(receiver.url)), "destination")["id"]
        moved = {"destination": {"webhook_record": {"request_template": {"uri": dead}}}}
        assert "not reachable" in error(c.patch(f"/import/destinations/{live}", json=moved), 400)
        assert receiver.url in json.dumps(data(c.get(f"/import/destinations/{live}")))


def test_a_deleted_providers_key_sees_nothing(api, receiver):
    """Deleting a provider revokes its keys (401); a key for a provider that never existed reads empty
    lists and 404s, never a 500."""
    with api.client() as c:
        made = pipeline(c, receiver.url, "acme")
        _, acme_key = api.catalog.create_key(provider_id="acme")
        _, ghost_key = api.catalog.create_key(provider_id="ghost")  # (the catalog does not check the provider)
        for kind in ("streams", "datasets", "sources"):
            data(c.delete(f"/import/{kind}/{made[kind[:-1]]['id']}"))
        data(c.delete("/import/providers/acme"))
    with api.client(acme_key) as k:
        error(k.get("/import/sources"), 401)
    for key in (ghost_key,):
        for kind in ("datalakes", "providers", "products", "sources", "datasets", "destinations", "streams"):
            with api.client(key) as k:  # (a fresh connection each: a 500 would close it)
                assert data(k.get(f"/import/{kind}"))[kind] == [], kind
        with api.client(key) as k:
            error(k.get(f"/import/destinations/{made['destination']['id']}"), 404)
        with api.client(key) as k:
            error(k.get("/import/providers/acme"), 404)
        with api.client(key) as k:
            body = guide(GUIDE_SOURCE, PROVIDER_ID="acme", password=PASSWORD)
            assert "source.provider_id" in error(k.post("/import/sources", json=body), 400)


def test_deeply_nested_bodies_are_400(api, receiver):
    def text(body: dict[str, Any], depth: int) -> str:
        return json.dumps(body).replace('"NESTED"', "[" * depth + "]" * depth)

    template = {"request_template": {"uri": receiver.url + "/prequel/records"}}
    destination = {"name": "d", "type": "webhook_record", "webhook_record": template}
    bodies = [
        ("sources", text({"source": {"name": "NESTED"}}, 400)),
        ("sources", text({"source": {"name": "NESTED"}}, 1000)),
        (
            "destinations",
            text({"destination": {**destination, "record_schema": {"type": "object", "x": "NESTED"}}}, 260),
        ),
    ]
    statuses = []
    for kind, raw in bodies:
        with api.client() as c:  # (a fresh connection each: uvicorn closes one after a 500)
            response = c.post(f"/import/{kind}", content=raw.encode(), headers={"Content-Type": "application/json"})
            statuses.append(response.status_code)
            if response.status_code == 400:
                assert error(response, 400)
    assert statuses == [400, 400, 400], statuses


# ---------------------------------------------------------------------- 11. a catalog on PostgreSQL


def test_catalog_on_postgresql(pg, tmp_path, catalog_key, receiver):
    name = "catalog_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{name}"
    try:
        with running(tmp_path, url=url) as api, api.client() as c:
            with api.catalog.engine.connect() as conn:
                head = ScriptDirectory(str(Path(catalog_store.__file__).parent / "migrations")).get_current_head()
                assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
                tables = set(sa.inspect(conn).get_table_names())
                assert {"catalog_entries", "catalog_api_keys", "push_sources", "push_tokens"} <= tables
            revisions = [api.catalog.revision()]
            made = pipeline(c, receiver.url)
            revisions.append(api.catalog.revision())
            sid = made["source"]["id"]
            assert data(c.get(f"/import/sources/{sid}"))["source"] == made["source"]
            patched = data(c.patch(f"/import/sources/{sid}", json={"source": {"name": "on-pg"}}))["source"]
            assert patched["name"] == "on-pg" and patched["updated_at"] > patched["created_at"]
            revisions.append(api.catalog.revision())
            assert api.service.config().source(sid).postgres.password_auth.password.reveal() == PASSWORD
            data(c.delete(f"/import/streams/{made['stream']['id']}"))
            revisions.append(api.catalog.revision())
            error(c.get(f"/import/streams/{made['stream']['id']}"), 404)
            assert [e["id"] for e in data(c.get("/import/providers"))["providers"]] == ["acme"]
            assert revisions == sorted(set(revisions)), revisions
            assert revisions[1] - revisions[0] == 6  # one per entry written
            as_of = {rev: api.catalog.entries(rev, kinds=("sources",)) for rev in revisions[1:3]}
            assert [e.body["name"] for e in as_of[revisions[1]]] == ["acme-postgres"]
            assert [e.body["name"] for e in as_of[revisions[2]]] == ["on-pg"]
            assert api.catalog.entries(revisions[2], kinds=("streams",)) and not api.catalog.entries(kinds=("streams",))
            _, acme_key = api.catalog.create_key(provider_id="acme")
            with api.client(acme_key) as acme:
                assert [s["id"] for s in data(acme.get("/import/sources"))["sources"]] == [sid]
                error(acme.post("/import/datalakes", json=guide(GUIDE_DATALAKE)), 403)
            with api.catalog.engine.connect() as conn:
                bodies = conn.execute(sa.text("SELECT body FROM catalog_entries")).scalars().all()
            assert bodies and not any(PASSWORD in b for b in bodies)
            error(c.post("/import/providers", json={"provider": made["provider"]}), 400)  # (a GET body: created_at...)
        # Opened again: the same entries, the same revision.
        again = Catalog.open(url)
        assert again is not None
        try:
            assert again.revision() == revisions[-1]
            assert {e.id for e in again.entries(kinds=("sources",))} == {sid}
        finally:
            again.close()
    finally:
        with psycopg.connect(pg["dsn"], autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------- 12. the OpenAPI document


def test_openapi_document(api):
    with httpx.Client(base_url=api.url, timeout=30) as c:
        response = c.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    schemas = doc["components"]["schemas"]
    for name in (
        "CreateStreamRequest",
        "StreamOptions",
        "StreamResource",
        "GetStreamResponse",
        "MappingOptions",
        "ErrorResponse",
        "CreateSourceRequest",
    ):
        assert name in schemas, name
    assert doc["components"]["securitySchemes"]["ApiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-API-KEY"}
    assert {"ApiKeyAuth": []} in doc["security"]
    assert schemas["CreateStreamRequest"]["additionalProperties"] is False
    assert schemas["StreamResource"]["additionalProperties"] is False
    assert "id" not in schemas["StreamOptions"]["properties"]
    assert "id" in schemas["ProviderOptions"]["properties"]
    post = doc["paths"]["/import/streams"]["post"]
    assert post["operationId"] == "create-import-stream"
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/CreateStreamRequest"
    if SEEDS.is_dir():  # the seed's resource schema, as Prequel publishes it
        seed = seed_openapi()["components"]["schemas"]
        assert schemas["StreamResource"]["required"] == seed["StreamResource"]["required"]
        assert set(schemas["StreamResource"]["properties"]) == set(seed["StreamResource"]["properties"])
        assert schemas["ErrorResponse"]["required"] == seed["ErrorResponse"]["required"]


# ---------------------------------------------------------------------- 13. the CLI's key commands


def run_cli(*args: str) -> tuple[int, str]:
    from prequel_dagster.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(args))
    return status, out.getvalue()


def test_cli_api_keys(tmp_path, monkeypatch, catalog_key, receiver):
    url = f"sqlite:///{tmp_path}/catalog.db"
    monkeypatch.setenv("PREQUEL_CATALOG_URL", url)
    monkeypatch.chdir(tmp_path)  # (no ./prequel.yaml: acme is the catalog's)
    with running(tmp_path, url=url) as api:
        with api.client() as c:
            pipeline(c, receiver.url, "acme")
            pipeline(c, receiver.url, "globex", lake=data(c.get("/import/datalakes"))["datalakes"][0]["id"])

        status, out = run_cli("api", "keys", "create", "--provider", "acme", "--label", "acme's app")
        assert status == 0, out
        key = out.rstrip("\n").splitlines()[-1]
        assert re.fullmatch(r"pqd_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key), out
        (made,) = [k for k in api.catalog.keys() if k.label == "acme's app"]
        assert made.provider_id == "acme" and made.id in out

        with api.client(key) as acme:
            assert data(acme.get("/"))
            assert [p["id"] for p in data(acme.get("/import/providers"))["providers"]] == ["acme"]
            assert [s["provider_id"] for s in data(acme.get("/import/sources"))["sources"]] == ["acme"]
            error(acme.post("/import/datalakes", json=guide(GUIDE_DATALAKE)), 403)

        status, out = run_cli("api", "keys", "create")
        assert status == 0
        company = out.rstrip("\n").splitlines()[-1]
        with api.client(company) as c:
            assert {p["id"] for p in data(c.get("/import/providers"))["providers"]} == {"acme", "globex"}

        assert run_cli("api", "keys", "create", "--provider", "initech")[0] == 2
        assert len(api.catalog.keys()) == 3  # the fixture's, acme's and the company's second

        status, out = run_cli("api", "keys", "list")
        assert status == 0
        for k in api.catalog.keys():
            assert k.id in out
        assert key not in out and company not in out and api.key not in out
        assert key.rsplit("_", 1)[1] not in out and "pqd_" not in out

        status, out = run_cli("api", "keys", "revoke", made.id)
        assert status == 0 and made.id in out
        with api.client(key) as acme:
            error(acme.get("/"), 401)
            error(acme.get("/import/sources"), 401)
        status, out = run_cli("api", "keys", "list")
        assert "revoked" in next(line for line in out.splitlines() if line.startswith(made.id))
        assert run_cli("api", "keys", "revoke", made.id)[0] == 2  # already revoked
        with api.client(company) as c:
            assert data(c.get("/"))
