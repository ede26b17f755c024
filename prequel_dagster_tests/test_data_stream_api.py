"""Narrative's data-stream API (issue 14) on a real server on loopback: the seed's example bodies
(seed 002, verbatim), GET/PUT/DELETE/list, the usage ledger, scoping of provider keys, bodies that are
not valid, YAML data streams read-only beside the catalog's, and the definitions' config."""

# ---------------------------------------------------------------------- seed 002, verbatim

SEED_REQUEST = """{
  "name": "Greg Test Datastream",
  "slug": "greg-test-1",
  "content": {
    "description": "Greg created this datastream to test changes for attributes and is not going to upload any data for it.",
    "icon": null,
    "sections": []
  },
  "tags": [
    "Testing",
    "greg",
    "data",
    "datastream",
    "test"
  ],
  "category": "Test",
  "offers": [
    {
      "id": "0488d937-b716-4df2-841c-8a63026c268d",
      "channel": "data_streams_market",
      "licensing": {
        "period": "P30D",
        "license": {
          "name": "Narrative Marketplace Data Purchase Agreement"
        }
      },
      "pricing": {
        "type": "per_record",
        "micro_cents_usd": 500000
      },
      "shops": null
    },
    {
      "id": "2ff93ef0-eb92-44ae-965e-dafbb6725fb9",
      "channel": "data_shop",
      "licensing": {
        "period": "P30D",
        "license": {
          "name": "https://app.narrative.io/legal/data-purchase-agreement"
        }
      },
      "pricing": {
        "type": "per_record",
        "micro_cents_usd": 100000
      },
      "shops": [
        "fanaticsdatashop.com"
      ]
    }
  ],
  "data_rules": {
    "column_sets": [
      {
        "dataset_id": 91,
        "fields": [
          {
            "field": "id",
            "filter": null,
            "exported": true
          },
          {
            "field": "audience",
            "filter": null,
            "exported": true
          }
        ]
      }
    ],
    "attributes": null,
    "deduplication": null,
    "frequency_filter": null
  },
  "auth_rules": null
}"""
SEED_RESPONSE = """{
  "id": "f94e8803-fc03-4c3e-a3fc-c3ffe3993788",
  "company_id": 100,
  "name": "best data stream name",
  "slug": "this-is-a-slug",
  "content": {
    "description": "Fabulous Data Stream even better than anything out there!",
    "icon": "https://some.icon.png",
    "sections": [
      {
        "title": "some title",
        "description": "some description",
        "image": "some-image"
      },
      {
        "whatever": "whatever json structure FE would like to have here.",
        "free_form": "json here"
      }
    ]
  },
  "tags": [
    "tag1",
    "tag2"
  ],
  "category": "categoryA",
  "offers": [
    {
      "id": "16310512-a8fb-4ce8-aec3-573693067df9",
      "channel": "data_streams_market",
      "licensing": {
        "period": "P90D",
        "license": {
          "name": "narrative opendata license"
        }
      },
      "pricing": {
        "type": "per_record",
        "micro_cents_usd": 70000
      },
      "shops": null
    },
    {
      "id": "d7542ec5-558f-4e98-9ff6-e049b24798fa",
      "channel": "data_shop",
      "licensing": {
        "period": "P90D",
        "license": {
          "name": "narrative opendata license"
        }
      },
      "pricing": {
        "type": "per_record",
        "micro_cents_usd": 50000
      },
      "shops": null
    },
    {
      "id": "5d52d8d8-b683-4ef4-9220-31347dc2237f",
      "channel": "data_shop",
      "licensing": {
        "period": "P90D",
        "license": {
          "name": "narrative opendata license"
        }
      },
      "pricing": {
        "type": "max_price_per_record",
        "micro_cents_usd": 30000
      },
      "shops": [
        "only.on.tld.com"
      ]
    }
  ],
  "data_rules": {
    "column_sets": [
      {
        "dataset_id": 99999,
        "fields": [
          {
            "field": "col1",
            "filter": null,
            "exported": true
          },
          {
            "field": "col2",
            "filter": "include_all_values_including_nulls_filter",
            "exported": true
          },
          {
            "field": "col3",
            "filter": "include_only_if_not_null_filter",
            "exported": true
          },
          {
            "field": "col4",
            "filter": {
              "type": "include",
              "list": [
                "this",
                "that",
                "that too",
                "some more"
              ]
            },
            "exported": true
          },
          {
            "field": "col5",
            "filter": {
              "type": "exclude",
              "list": [
                "this",
                "that",
                "that too",
                "some more"
              ]
            },
            "exported": true
          },
          {
            "field": "col6",
            "filter": {
              "min": {
                "type": "inclusive",
                "value": "-100"
              },
              "max": {
                "type": "inclusive",
                "value": "100"
              }
            },
            "exported": true
          },
          {
            "field": "col6",
            "filter": {
              "min": null,
              "max": {
                "type": "exclusive",
                "value": "timestamp01"
              }
            },
            "exported": false
          },
          {
            "field": "col7",
            "filter": {
              "type": "include",
              "list": [
                "true"
              ]
            },
            "exported": true
          },
          {
            "field": "col8",
            "filter": {
              "recency": "P30D",
              "from": null,
              "to": {
                "type": "exclusive",
                "value": "timestamp01"
              }
            },
            "exported": true
          }
        ]
      }
    ],
    "attributes": [
      {
        "attribute_id": 123,
        "fields": [
          {
            "field": "col1",
            "filter": null,
            "exported": true
          },
          {
            "field": "col2",
            "filter": "include_all_values_including_nulls_filter",
            "exported": true
          },
          {
            "field": "col3",
            "filter": "include_only_if_not_null_filter",
            "exported": true
          },
          {
            "field": "col4",
            "filter": {
              "type": "include",
              "list": [
                "this",
                "that",
                "that too",
                "some more"
              ]
            },
            "exported": true
          },
          {
            "field": "col5",
            "filter": {
              "type": "exclude",
              "list": [
                "this",
                "that",
                "that too",
                "some more"
              ]
            },
            "exported": true
          },
          {
            "field": "col6",
            "filter": {
              "min": {
                "type": "inclusive",
                "value": "-100"
              },
              "max": {
                "type": "inclusive",
                "value": "100"
              }
            },
            "exported": true
          },
          {
            "field": "col6",
            "filter": {
              "min": null,
              "max": {
                "type": "exclusive",
                "value": "timestamp01"
              }
            },
            "exported": false
          },
          {
            "field": "col7",
            "filter": {
              "type": "include",
              "list": [
                "true"
              ]
            },
            "exported": true
          },
          {
            "field": "col8",
            "filter": {
              "recency": "P30D",
              "from": null,
              "to": {
                "type": "exclusive",
                "value": "timestamp01"
              }
            },
            "exported": true
          },
          {
            "field": "col9",
            "filter": {
              "expressions": [
                "col9 > -90",
                "col9 < 90"
              ]
            },
            "exported": true
          }
        ],
        "optional": true
      },
      {
        "attribute_id": 321,
        "fields": [
          {
            "field": "col9",
            "filter": {
              "expressions": [
                "col9 > -90",
                "col9 < 90"
              ]
            },
            "exported": false
          }
        ],
        "optional": false
      }
    ],
    "deduplication": {
      "period": "P60D",
      "column_references": null,
      "attribute_references": [
        {
          "attribute_id": 123,
          "column_names": [
            "col9",
            "col9.foo.bar"
          ]
        }
      ]
    },
    "frequency_filter": {
      "column_references": null,
      "attribute_references": [
        {
          "attribute_id": 123,
          "column_names": [
            "col9.foo.bar"
          ]
        }
      ],
      "min_inclusive": 2,
      "max_inclusive": 5
    }
  },
  "auth_rules": {
    "company_constraint": {
      "type": "inclusion",
      "company_ids": [
        160,
        1701
      ]
    }
  },
  "created_by": 5000,
  "created_at": "2021-06-29T10:58:36.726Z",
  "updated_at": "2021-06-29T10:58:36.726Z",
  "datasets": null
}"""

import copy
import datetime as dt
import json
from collections import Counter
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from prequel_dagster.lake.usage import read_usage, record_usage
from prequel_dagster.stores import LocalStore

from .test_api_resources import SEEDS, UUID, running

SERVER_FIELDS = ("id", "company_id", "created_by", "created_at", "updated_at")

YAML = """
datalakes:
  - {id: lake, name: lake, storage: local, local: {path: lake}}
providers:
  - {id: "160", name: Company 160, datalake_id: lake, products: [all]}
  - {id: "1701", name: Company 1701, datalake_id: lake, products: [all]}
  - {id: acme, name: Acme, datalake_id: lake, products: [all]}
sources:
  - {id: db-160, name: db-160, vendor: sqlite, provider_id: "160", sqlite: {path: p160.db}}
  - {id: db-1701, name: db-1701, vendor: sqlite, provider_id: "1701", sqlite: {path: p1701.db}}
  - {id: db-acme, name: db-acme, vendor: sqlite, provider_id: acme, sqlite: {path: acme.db}}
attributes:
  - {id: 123, name: geo, schema: {type: string}}
  - {id: 321, name: col9, schema: {type: number}}
datasets:
  - id: "99999"
    name: events
    source_id: db-160
    table: {source_table_name: events}
    type: dimension
    dimension: {primary_key_column: id}
    attributes: {123: col1, 321: col9}
  - id: "91"
    name: audiences
    source_id: db-1701
    table: {source_table_name: audiences}
    type: dimension
    dimension: {primary_key_column: id}
  - id: acme-users
    name: users
    source_id: db-acme
    table: {source_table_name: users}
    type: dimension
    dimension: {primary_key_column: id}
destinations:
  - id: app
    name: app
    type: webhook_record
    record_schema: {type: object, required: [id], properties: {id: {type: string}}}
    webhook_record: {request_template: {uri: "http://127.0.0.1:9/records", method: POST}}
data_streams:
  - id: yaml-audiences
    name: Audiences
    slug: audiences
    offers:
      - {channel: data_shop, pricing: {type: per_record, micro_cents_usd: 100000}, shops: [shop.example.com]}
    data_rules:
      column_sets: [{dataset_id: 91, fields: [{field: id, filter: null, exported: true}]}]
"""


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("PREQUEL_CATALOG_KEY", Fernet.generate_key().decode())
    monkeypatch.delenv("PREQUEL_CATALOG_URL", raising=False)
    monkeypatch.delenv("PREQUEL_CONFIG", raising=False)
    monkeypatch.delenv("PREQUEL_COMPANY_ID", raising=False)
    config = tmp_path / "prequel.yaml"
    config.write_text(YAML)
    with running(tmp_path, yaml_path=config) as found:
        yield found


def bearer(api: Any, key: str | None = None) -> httpx.Client:
    """Narrative's clients send ``Authorization: Bearer <key>``."""
    headers = {"Authorization": f"Bearer {key or api.key}"} if key != "" else {}
    return httpx.Client(base_url=api.url, headers=headers, timeout=60)


def ok(response: httpx.Response, status: int = 200) -> Any:
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert "status" not in body or "error" not in body, body  # Narrative's objects, not Prequel's envelope
    return body


def failed(response: httpx.Response, status: int) -> dict[str, Any]:
    body = response.json()
    assert response.status_code == status, (response.status_code, body)
    assert body["error"] and isinstance(body["message"], str), body
    assert set(body) <= {"error", "message", "issues"}, body
    return body


def request_of(response_example: dict[str, Any]) -> dict[str, Any]:
    """A request body with the fields of an example response (the server's left out)."""
    return {k: v for k, v in response_example.items() if k not in (*SERVER_FIELDS, "datasets")}


def without_server_fields(found: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in found.items() if k not in SERVER_FIELDS}


# ---------------------------------------------------------------------- tests


def test_the_seeds_bodies_are_accepted_and_answered_as_narrative_does(api):
    if SEEDS.is_dir():  # the constants are the seed's, verbatim
        text = (SEEDS / "002_473104dc0da69aab.txt").read_text()
        assert json.loads(SEED_REQUEST) == json.loads(text.split("--data '\n", 1)[1].split("\n'\n", 1)[0])
    example = json.loads(SEED_RESPONSE)
    with bearer(api) as c:
        made = ok(c.post("/data-stream", json=request_of(example)))
        assert list(made) == list(example)  # every field, in Narrative's order
        assert without_server_fields(made) == without_server_fields(example)
        assert UUID.match(made["id"]) and made["company_id"] == 1 and made["datasets"] is None
        assert made["created_by"] and made["created_at"] == made["updated_at"]
        assert dt.datetime.fromisoformat(made["created_at"].replace("Z", "+00:00"))
        assert ok(c.get(f"/data-stream/{made['id']}")) == made

        # the seed's request: returned as sent, with the server's fields
        sent = json.loads(SEED_REQUEST)
        greg = ok(c.post("/data-stream", json=sent))
        assert {k: greg[k] for k in sent} == sent
        assert greg["datasets"] is None and set(greg) == set(example)

        # an offer without an id gets one; licensing.period and shops are kept
        body = request_of(example)
        body["offers"] = [{k: v for k, v in o.items() if k != "id"} for o in body["offers"]]
        fresh = ok(c.post("/data-stream", json=body))
        assert all(UUID.match(o["id"]) for o in fresh["offers"])
        assert [o["licensing"]["period"] for o in fresh["offers"]] == ["P90D"] * 3
        assert fresh["offers"][2]["shops"] == ["only.on.tld.com"]
        assert len({o["id"] for o in fresh["offers"]}) == 3

        # the definitions follow: Service.config() has them, as the YAML data stream
        config = api.service.config()
        assert {d.id for d in config.data_streams} == {"yaml-audiences", made["id"], greg["id"], fresh["id"]}
        stream = config.data_stream(made["id"])
        assert stream.column_set_datasets() == ["99999"] and stream.allows("1701") and not stream.allows("acme")
        assert stream.offers[0].pricing.micro_cents_usd == 70000


def test_get_put_delete_list_and_yaml_data_streams(api):
    example = json.loads(SEED_RESPONSE)
    with bearer(api) as c:
        made = ok(c.post("/data-stream", json=request_of(example)))
        id = made["id"]

        # PUT: the whole object (as GET returned it), replaced
        changed = ok(c.get(f"/data-stream/{id}"))
        changed["name"] = "renamed"
        del changed["tags"]
        changed["data_rules"] = {
            "column_sets": [{"dataset_id": 91, "fields": [{"field": "id", "filter": None, "exported": True}]}],
            "attributes": None,
            "deduplication": None,
            "frequency_filter": None,
        }
        changed["auth_rules"] = None
        changed["offers"] = changed["offers"][:1]
        put = ok(c.put(f"/data-stream/{id}", json=changed))
        assert put["name"] == "renamed" and put["tags"] is None and put["auth_rules"] is None
        assert put["data_rules"] == changed["data_rules"]  # exactly as sent: nulls kept, nothing merged
        assert put["offers"] == made["offers"][:1]
        assert put["created_at"] == made["created_at"] and put["created_by"] == made["created_by"]
        assert put["updated_at"] >= made["updated_at"] and put["company_id"] == made["company_id"]
        assert ok(c.get(f"/data-stream/{id}")) == put
        assert api.service.config().data_stream(id).column_set_datasets() == ["91"]
        # the server's fields in the body are the server's: ignored (but an id must be the path's)
        ok(c.put(f"/data-stream/{id}", json={**put, "created_by": "someone", "company_id": 7}))
        assert ok(c.get(f"/data-stream/{id}"))["created_by"] == made["created_by"]
        assert "id" in failed(c.put(f"/data-stream/{id}", json={**put, "id": "other"}), 400)["message"]
        assert failed(c.put("/data-stream/nope", json=request_of(put)), 404)["message"] == (
            "no data stream with id 'nope'"
        )

        # YAML data streams: read, never changed here
        response = c.get("/data-stream/yaml-audiences")
        yaml_one = ok(response)
        assert response.headers["X-Prequel-Read-Only"] == "true"
        assert yaml_one["name"] == "Audiences" and yaml_one["offers"][0]["id"] == "data_shop-0"  # the ledger's id
        assert yaml_one["data_rules"]["column_sets"][0]["dataset_id"] == 91  # as written
        message = failed(c.put("/data-stream/yaml-audiences", json=request_of(yaml_one)), 400)["message"]
        assert "prequel.yaml" in message and "read-only" in message
        assert "prequel.yaml" in failed(c.delete("/data-stream/yaml-audiences"), 400)["message"]

        # list: YAML first, then the catalog's; Narrative's host listing
        listed = ok(c.get("/data-stream"))["records"]
        assert [r["id"] for r in listed] == ["yaml-audiences", id]
        assert listed[1] == ok(c.get(f"/data-stream/{id}"))
        hosted = ok(c.get("/data-stream/company/1/host/shop.example.com"))["records"]
        assert [r["id"] for r in hosted] == ["yaml-audiences"]
        assert ok(c.get("/data-stream/company/1/host/any.example.com"))["records"] == []
        assert ok(c.get("/data-stream/company/2/host/shop.example.com"))["records"] == []

        # DELETE
        assert ok(c.delete(f"/data-stream/{id}")) == {"id": id}
        assert failed(c.get(f"/data-stream/{id}"), 404)["error"] == "not_found"
        assert not api.service.config().is_data_stream(id)


def test_a_data_streams_datalake_cannot_change_and_a_put_without_it_keeps_it(api):
    """Its log, cursors, deduplication state and usage ledger live in that lake."""
    body = request_of(json.loads(SEED_RESPONSE))
    with bearer(api) as c:
        made = ok(c.post("/data-stream", json={**body, "datalake_id": "lake"}))
        moved = c.put(f"/data-stream/{made['id']}", json={**body, "datalake_id": "elsewhere"})
        assert moved.status_code == 400 and "datalake_id: cannot be changed" in moved.text, moved.text
        ok(c.put(f"/data-stream/{made['id']}", json={**body, "name": "renamed"}))
        kept = ok(c.get(f"/data-stream/{made['id']}"))
        assert (kept["name"], kept["datalake_id"]) == ("renamed", "lake")


def test_a_data_stream_a_stream_delivers_cannot_be_deleted(api):
    example = json.loads(SEED_RESPONSE)
    with bearer(api) as c:
        id = ok(c.post("/data-stream", json=request_of(example)))["id"]
        stream = {
            "stream": {
                "name": "to the app",
                "dataset_id": id,
                "destination_id": "app",
                "mappings": [{"target_field": "id", "field_type": "field", "column": {"name": "_record_id"}}],
            }
        }
        response = c.post("/import/streams", json=stream)
        assert response.status_code == 200, response.text
        stream_id = response.json()["data"]["stream"]["id"]
        body = failed(c.delete(f"/data-stream/{id}"), 400)
        assert stream_id in body["message"] and "stream" in body["message"], body
        assert api.service.config().is_data_stream(id)
        c.delete(f"/import/streams/{stream_id}").raise_for_status()
        ok(c.delete(f"/data-stream/{id}"))


def test_provider_keys_find_no_data_streams(api):
    example = json.loads(SEED_RESPONSE)
    with bearer(api) as c:
        id = ok(c.post("/data-stream", json=request_of(example)))["id"]
    _, acme_key = api.catalog.create_key(provider_id="acme")
    _, key_160 = api.catalog.create_key(provider_id="160")  # inside the stream's company constraint
    for key in (acme_key, key_160):
        with bearer(api, key) as p:
            for target in (id, "yaml-audiences"):
                missing = failed(p.get(f"/data-stream/{target}"), 404)
                assert missing["message"] == f"no data stream with id '{target}'"
                assert failed(p.put(f"/data-stream/{target}", json=request_of(example)), 404) == missing
                assert failed(p.delete(f"/data-stream/{target}"), 404) == missing
                assert failed(p.get(f"/data-stream/{target}/usage"), 404) == missing
            assert failed(p.get("/data-stream/nope"), 404)["message"] == "no data stream with id 'nope'"
            for response in (
                p.get("/data-stream"),
                p.post("/data-stream", json=request_of(example)),
                p.post("/data-stream", content=b"not json"),
                p.get("/data-stream/company/1/host/only.on.tld.com"),
            ):
                body = failed(response, 404)
                assert "1701" not in json.dumps(body) and "99999" not in json.dumps(body)
            # nor deliver one: a stream of a data stream reads as one of a dataset that does not exist
            stream = {
                "stream": {
                    "name": "mine",
                    "dataset_id": id,
                    "destination_id": "app",
                    "mappings": [{"target_field": "id", "field_type": "field", "column": {"name": "_record_id"}}],
                }
            }
            response = p.post("/import/streams", headers={"X-API-KEY": key}, json=stream)
            assert response.status_code == 400, response.text
            assert f"stream.dataset_id: no dataset with id '{id}'" in response.json()["message"]
    # nor opt its own datasets into the company's data streams: which attributes a dataset fills is the company's
    dataset = {
        "name": "users2",
        "source_id": "db-acme",
        "method": "table",
        "table": {"source_table_name": "users2"},
        "type": "dimension",
        "dimension": {"primary_key_column": "id"},
    }
    with bearer(api, acme_key) as p:
        headers = {"X-API-KEY": acme_key}
        joined = p.post("/import/datasets", headers=headers, json={"dataset": {**dataset, "attributes": {123: "id"}}})
        assert joined.status_code == 403 and "dataset.attributes" in joined.json()["message"], joined.text
        made = p.post("/import/datasets", headers=headers, json={"dataset": dataset})
        assert made.status_code == 200, made.text
        patched = p.patch(
            f"/import/datasets/{made.json()['data']['dataset']['id']}",
            headers=headers,
            json={"dataset": {"attributes": {123: "id"}}},
        )
        assert patched.status_code == 403, patched.text
    assert len(api.service.config().data_streams) == 2
    with bearer(api, "") as anonymous:
        assert failed(anonymous.get(f"/data-stream/{id}"), 401)["error"] == "unauthorized"
    with bearer(api, "wrong-key") as wrong:
        assert failed(wrong.post("/data-stream", json=request_of(example)), 401)["error"] == "unauthorized"


def test_bodies_that_are_not_valid_are_400_naming_the_path(api):
    example = request_of(json.loads(SEED_RESPONSE))

    def issues(body: Any) -> dict[str, str]:
        with bearer(api) as c:
            found = failed(c.post("/data-stream", json=body), 400)
        assert found["error"] == "bad_request"
        for issue in found.get("issues", []):
            assert f"{issue['path']}: {issue['message']}" in found["message"] or not issue["path"]
        return {i["path"]: i["message"] for i in found.get("issues", [])}

    def changed(path: tuple, value: Any) -> dict[str, Any]:
        body = copy.deepcopy(example)
        at = body
        for part in path[:-1]:
            at = at[part]
        at[path[-1]] = value
        return body

    assert "name" in issues({k: v for k, v in example.items() if k != "name"})
    assert "slug" in issues(changed(("slug",), ""))
    found = issues(changed(("data_rules", "column_sets", 0, "dataset_id"), 424242))
    assert "no dataset with id '424242'" in found["data_rules.column_sets[0].dataset_id"]
    found = issues(changed(("data_rules", "column_sets", 0, "fields", 3, "filter"), {"type": "maybe", "list": ["x"]}))
    assert "data_rules.column_sets[0].fields[3].filter.type" in found, found
    found = issues(changed(("data_rules", "deduplication", "period"), "sixty days"))
    assert "data_rules.deduplication.period" in found, found
    found = issues(changed(("data_rules", "attributes", 1, "attribute_id"), 999))
    assert any("attribute 999" in m for m in found.values()), found
    found = issues(changed(("auth_rules", "company_constraint", "company_ids"), [160, "initech"]))
    assert "no provider with id 'initech'" in found["auth_rules.company_constraint.company_ids[1]"]
    found = issues(changed(("offers", 0, "pricing", "type"), "free"))
    assert "offers[0].pricing.type" in found, found
    found = issues(changed(("data_rules", "bogus"), 1))
    assert "data_rules.bogus" in found and "column_sets" in found["data_rules.bogus"], found
    assert "unknown key" in issues({**example, "colour": "red"})["colour"]
    assert "content" in issues({**example, "content": "text"})
    with bearer(api) as c:
        assert "not JSON" in failed(c.post("/data-stream", content=b"{nope"), 400)["message"]
        assert "object" in failed(c.post("/data-stream", json=[example]), 400)["message"]
        message = failed(c.post("/data-stream", json={**example, "id": "mine"}), 400)["message"]
        assert message.startswith("id: ") and "server" in message
        deep: Any = {}
        for _ in range(200):
            deep = {"x": deep}
        failed(c.post("/data-stream", json={**example, "content": deep}), 400)
        assert failed(c.post("/data-stream", json={**example, "tags": {"$sealed": "x"}}), 400)
    assert api.service.config().data_streams[0].id == "yaml-audiences" and len(api.service.config().data_streams) == 1


def test_usage_returns_the_ledgers_rows(api, tmp_path):
    example = json.loads(SEED_RESPONSE)
    with bearer(api) as c:
        made = ok(c.post("/data-stream", json=request_of(example)))
        id = made["id"]
        assert ok(c.get(f"/data-stream/{id}/usage")) == {"records": []}  # nothing delivered yet

        store = LocalStore(tmp_path / "lake")
        config = api.service.config()
        from prequel_dagster.lake.usage import offer_terms

        offers = offer_terms(config.data_stream(id).offers)
        days = [dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC), dt.datetime(2024, 5, 2, 12, tzinfo=dt.UTC)]
        record_usage(
            store,
            data_stream_id=id,
            stream_id="s1",
            load_id="l1",
            batch_id="b1",
            providers=Counter({"160": 3, "1701": 2}),
            offers=offers,
            now=days[0],
        )
        record_usage(
            store,
            data_stream_id=id,
            stream_id="s1",
            load_id="l2",
            batch_id="b2",
            providers=Counter({"160": 4}),
            offers=offers,
            now=days[1],
        )
        again = record_usage(
            store,
            data_stream_id=id,
            stream_id="s1",
            load_id="l2",
            batch_id="b2",
            providers=Counter({"160": 4}),
            offers=offers,
            now=days[1],
        )
        assert not again.new  # metered once
        # another data stream's entry is not this one's
        record_usage(
            store,
            data_stream_id="yaml-audiences",
            stream_id="s2",
            load_id="l3",
            batch_id="b3",
            providers=Counter({"1701": 9}),
            offers=offers,
            now=days[0],
        )

        rows = ok(c.get(f"/data-stream/{id}/usage"))["records"]
        expected = [r.as_dict() | {"micro_cents": r.micro_cents} for r in read_usage(store, data_stream_id=id)]
        assert rows == expected and len(rows) == 3 * 3  # (day, provider) pairs x offers
        first = rows[0]
        assert set(first) == {
            "day",
            "provider_id",
            "data_stream_id",
            "stream_id",
            "offer_id",
            "channel",
            "pricing_type",
            "micro_cents_usd",
            "records",
            "cost_usd",
            "micro_cents",
        }
        assert first["day"] == "2024-05-01" and first["data_stream_id"] == id and first["stream_id"] == "s1"
        by = {(r["day"], r["provider_id"], r["offer_id"]): r for r in rows}
        market = made["offers"][0]["id"]
        assert by[("2024-05-01", "160", market)]["records"] == 3
        assert by[("2024-05-01", "160", market)]["micro_cents"] == 3 * 70000
        assert by[("2024-05-02", "160", market)]["records"] == 4  # once, though sent twice
        assert by[("2024-05-02", "160", market)]["cost_usd"] == 4 * 70000 / 10**8
        assert {o["offer_id"] for o in rows} == {o["id"] for o in made["offers"]}

        only = ok(c.get(f"/data-stream/{id}/usage", params={"provider_id": "1701"}))["records"]
        assert {r["provider_id"] for r in only} == {"1701"} and len(only) == 3
        since = ok(c.get(f"/data-stream/{id}/usage", params={"since": "2024-05-02"}))["records"]
        assert {r["day"] for r in since} == {"2024-05-02"} and len(since) == 3
        assert "YYYY-MM-DD" in failed(c.get(f"/data-stream/{id}/usage", params={"since": "May"}), 400)["message"]
        assert ok(c.get("/data-stream/yaml-audiences/usage"))["records"][0]["records"] == 9
        assert failed(c.get("/data-stream/nope/usage"), 404)["error"] == "not_found"


def test_openapi_lists_the_data_stream_routes(api):
    with httpx.Client(base_url=api.url, timeout=30) as c:
        doc = c.get("/openapi.json").json()
    assert {"post", "get"} <= set(doc["paths"]["/data-stream"])
    assert {"get", "put", "delete"} <= set(doc["paths"]["/data-stream/{id}"])
    assert "get" in doc["paths"]["/data-stream/{id}/usage"]
    assert "get" in doc["paths"]["/data-stream/company/{company_id}/host/{host_name}"]
    ref = doc["paths"]["/data-stream"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    assert not any(p.startswith("/import/data_streams") for p in doc["paths"])
