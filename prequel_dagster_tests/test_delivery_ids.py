"""Batch and load ids are unique per lake: a rebuilt lake or a second environment never reuses an id
for different records, while a resumed load keeps its ids (see test_delivery_grade's kill -9 test)."""

import json
import shutil
from pathlib import Path

from prequel_dagster.config import load_config
from prequel_dagster.delivery.receiver import Receiver, ReceiverStore
from prequel_dagster.engine import run_extract, run_load


def local_config(
    tmp_path: Path,
    lake: str,
    receiver: Receiver,
    rows: dict[int, str],
    *,
    max_concurrency: int = 1,
    per_minute: int = 1_000_000,
    max_records_per_batch: int = 2,
    as_dict: bool = False,
):
    """One provider's CSV file in a local folder, a local lake, and a stream to ``receiver`` (loaded,
    or as the mapping with ``as_dict``)."""
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    (drop / "users.csv").write_text("id,email\n" + "".join(f"{i},{e}\n" for i, e in rows.items()))
    raw = {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": lake}}],
        "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
        "sources": [
            {"id": "files", "name": "files", "vendor": "local", "provider_id": "acme", "local": {"path": "drop"}}
        ],
        "datasets": [
            {
                "id": "users",
                "name": "users",
                "source_id": "files",
                "method": "glob",
                "glob": {"pattern": "*.csv", "file_format": "csv"},
                "type": "dimension",
                "dimension": {"primary_key_column": "id"},
            }
        ],
        "destinations": [
            {
                "id": "app",
                "name": "app",
                "type": "webhook_batch",
                "max_records_per_minute": per_minute,
                "max_concurrency": max_concurrency,
                "record_schema": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "email": {"type": "string"}},
                },
                "webhook_batch": {
                    "request_template": {"uri": receiver.url + "/b"},
                    "max_records_per_batch": max_records_per_batch,
                },
            }
        ],
        "streams": [
            {
                "id": "users-app",
                "name": "users",
                "dataset_id": "users",
                "destination_id": "app",
                "mappings": [
                    {"target_field": f, "field_type": "field", "column": {"name": f}} for f in ("id", "email")
                ],
            }
        ],
    }
    return raw if as_dict else load_config(raw, base_dir=str(tmp_path))


def stored_emails(store: ReceiverStore) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    for r in store.records():
        out.setdefault(r["record"]["id"], set()).add(r["record"]["email"])
    return out


def test_a_rebuilt_lake_sends_new_ids_and_every_change_arrives(tmp_path):
    store = ReceiverStore(str(tmp_path / "received.db"))
    with Receiver(store) as receiver:
        run_extract(local_config(tmp_path, "lake", receiver, {1: "a@x", 2: "b@x"}), "users")
        first = run_load(local_config(tmp_path, "lake", receiver, {1: "a@x", 2: "b@x"}), "users-app")
        shutil.rmtree(tmp_path / "lake")  # the lake is deleted and made again
        config = local_config(tmp_path, "lake", receiver, {1: "a@x", 2: "b2@x", 3: "c@x"})
        run_extract(config, "users")
        second = run_load(config, "users-app")
        answers = [r.answered for r in receiver.requests]
    assert first.load_id != second.load_id and answers == [202, 202, 202]
    assert second.counts.records_loaded == 3
    assert stored_emails(store) == {1: {"a@x"}, 2: {"b@x", "b2@x"}, 3: {"c@x"}}  # nothing dropped as a retry


def test_two_lakes_sending_to_one_receiver_share_no_id(tmp_path):
    with Receiver() as receiver:
        for lake in ("staging-lake", "production-lake"):
            config = local_config(tmp_path, lake, receiver, {i: f"u{i}@x" for i in range(5)})
            run_extract(config, "users")
            run_load(config, "users-app")
        bodies = [json.loads(r.body) for r in receiver.requests]
    assert len(bodies) == 6
    assert len({b["batch_id"] for b in bodies}) == 6 and len({b["load_id"] for b in bodies}) == 2
    assert sum(len(b["records"]) for b in bodies) == 10 and len(receiver.store.records()) == 10
