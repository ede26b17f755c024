"""Fuzz: random bytes and hostile strings from two tenants' files, through every place a value reaches.

Each provider drops JSON lines files (with hostile names too) in its own folder; each has a batch
stream (a header built from the first record) and a record stream (the id in the uri path and
query, the email in a header, a JSON body template). Every record must end either delivered exactly
as mapped, under its own provider, or in the dead letter with its reason; test-transform shows
every record without failing.
"""

import json
import random
from pathlib import Path

import orjson
import pytest

from prequel_dagster.config import load_config
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.engine.preview import preview_stream
from prequel_dagster.lake.deliveries import StreamState
from prequel_dagster.stores import LocalStore

HOSTILE = [
    '"',
    "'",
    "\\",
    "{",
    "}",
    "[",
    "]",
    '{}}],"provider_id":"globex","records":[{"id":"x"',
    "\r\n",
    "\n",
    "\r",
    "\x00",
    "\x01\x1f\x7f",
    "..",
    "../..",
    "/",
    "?",
    "#",
    "&",
    "=",
    "%",
    "%00",
    "%2e%2e",
    "@",
    ":",
    " ",
    "José",
    "日本語",
    "\u2028\u2029",
    "\U0001f600",
    "{{.ProviderID}}",
    "{{.Record.id}}",
    "${APP_TOKEN}",
    "NaN",
    "Infinity",
    "null",
    "true",
    "1e999",
    "<script>",
    "a" * 5000,
]
PROVIDERS = ("acme", "globex")


def hostile_text(rng: random.Random) -> str:
    pieces = [
        rng.choice(HOSTILE) if rng.random() < 0.6 else chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 6))
    ]
    return "".join(pieces)


def hostile_meta(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.4:  # a real JSON object holding hostile strings
        return json.dumps({hostile_text(rng): hostile_text(rng), "n": [1, None, True]}, ensure_ascii=rng.random() < 0.5)
    if choice < 0.55:
        return json.dumps([hostile_text(rng)])
    return hostile_text(rng)  # mostly not JSON


def rows_for(provider: str, rng: random.Random, n: int) -> list[dict]:
    return [
        {
            "id": f"{provider}{i}{hostile_text(rng)}",
            "name": hostile_text(rng),
            "email": rng.choice([f"u{i}@{provider}.test", hostile_text(rng)]),
            "meta": hostile_meta(rng),
        }
        for i in range(n)
    ]


def is_json_object(text: str) -> bool:
    try:
        return isinstance(orjson.loads(text), dict)
    except orjson.JSONDecodeError:
        return False


def header_safe(text: str) -> bool:
    return all(0x20 <= ord(c) <= 0x7E for c in text)


def fuzz_config(tmp_path: Path, receiver: Receiver) -> dict:
    retry = {"retry_initial_backoff_seconds": 0.01, "retry_max_backoff_seconds": 0.02, "max_attempts": 2}
    schema = {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "email": {"type": "string"},
            "meta": {"type": "object"},
        },
    }
    mappings = [
        {"target_field": f, "field_type": "field", "column": {"name": f}} for f in ("id", "name", "email", "meta")
    ]
    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}],
        "providers": [{"id": p, "name": p, "datalake_id": "lake", "products": ["all"]} for p in PROVIDERS],
        "sources": [
            {"id": f"{p}-files", "name": p, "vendor": "local", "provider_id": p, "local": {"path": f"drop/{p}"}}
            for p in PROVIDERS
        ],
        "datasets": [
            {
                "id": f"{p}-rows",
                "name": "rows",
                "source_id": f"{p}-files",
                "method": "glob",
                "glob": {"pattern": "*.jsonl", "file_format": "json"},
                "type": "dimension",
                "dimension": {"primary_key_column": "id"},
            }
            for p in PROVIDERS
        ],
        "destinations": [
            {
                "id": "batch",
                "name": "batch",
                "type": "webhook_batch",
                "max_records_per_minute": 10_000_000,
                "record_schema": schema,
                "webhook_batch": {
                    "request_template": {
                        "uri": receiver.url + "/batches",
                        "headers": {"X-First": "{{.Records[0].email}}"},
                    },
                    "max_records_per_batch": 7,
                    **retry,
                },
            },
            {
                "id": "record",
                "name": "record",
                "type": "webhook_record",
                "max_records_per_minute": 10_000_000,
                "record_schema": schema,
                "webhook_record": {
                    "max_concurrency": 2,
                    "request_template": {
                        "method": "PUT",
                        "uri": receiver.url + "/{{.ProviderID}}/r/{{.Record.id}}?provider_id={{.ProviderID}}"
                        "&stream_id=s-{{.ProviderID}}&key={{.Record.id}}",
                        "headers": {"X-Email": "{{.Record.email}}"},
                        "body": '{"id": "{{.Record.id}}", "name": {{.Record.name}}, "rec": {{.Record.AsJson}}}',
                    },
                    **retry,
                },
            },
        ],
        "streams": [
            {"id": f"{p}-{d}", "name": d, "dataset_id": f"{p}-rows", "destination_id": d, "mappings": mappings}
            for p in PROVIDERS
            for d in ("batch", "record")
        ],
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_every_hostile_record_is_delivered_as_mapped_under_its_provider_or_dead_lettered(tmp_path, seed):
    rng = random.Random(seed)
    rows = {p: rows_for(p, rng, 120) for p in PROVIDERS}
    names = ['x"quote.jsonl', "new\nline.jsonl", "josé..jsonl", "{{.ProviderID}}.jsonl", "%2e%2e.jsonl"]
    for p in PROVIDERS:
        folder = tmp_path / "drop" / p
        folder.mkdir(parents=True)
        for k, name in enumerate(names):  # the same hostile file names in both folders
            (folder / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows[p][k :: len(names)]))

    with Receiver() as receiver:
        config = load_config(fuzz_config(tmp_path, receiver), base_dir=str(tmp_path))
        for p in PROVIDERS:
            run_extract(config, f"{p}-rows")
            for d in ("batch", "record"):
                preview = preview_stream(config, f"{p}-{d}", limit=1000)
                assert len(preview.rows) == len(rows[p])
                run_load(config, f"{p}-{d}")
        for request in receiver.requests:
            if request.path.startswith("/batches"):
                json.loads(request.body)  # every body is JSON
                assert header_safe(request.headers["X-First"])
        stored = {(r["provider_id"], r["stream_id"]): [] for r in receiver.store.records()}
        for r in receiver.store.records():
            stored[(r["provider_id"], r["stream_id"])].append(r["record"])

    lake = LocalStore(tmp_path / "lake")
    for p in PROVIDERS:
        expected = {r["id"]: {**r, "meta": orjson.loads(r["meta"])} for r in rows[p] if is_json_object(r["meta"])}
        by_header = {i: r for i, r in expected.items() if header_safe(r["email"])}
        batch = {r["id"]: r for r in stored.get((p, f"{p}-batch"), [])}
        record = {r["id"]: r for r in stored.get((p, f"s-{p}"), [])}
        assert batch == by_header  # delivered exactly as mapped, under its own provider
        assert {i: r["rec"] for i, r in record.items()} == by_header
        assert all(r["name"] == by_header[i]["name"] for i, r in record.items())
        for d, delivered in (("batch", batch), ("record", record)):
            dead = StreamState(lake, p, f"{p}-{d}").read_dead_letters().to_pylist()
            dead_ids = [x["record_id"] for x in dead]
            assert all(x["reason"] for x in dead) and dead and delivered  # both fates occur
            assert sorted(dead_ids + list(delivered)) == sorted(r["id"] for r in rows[p])  # each exactly once
    assert set(stored) <= {(p, s) for p in PROVIDERS for s in (f"{p}-batch", f"s-{p}")}
