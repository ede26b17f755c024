"""README claims about delivery that no other test checks:

* on object-store lakes (no ack log), the load plan is saved every half second while a load runs,
  and a load resumed after a crash skips the batches that plan has on record (same ids);
* ``max_bytes_per_batch``: every request body is at most the limit (a single record larger than the
  limit goes alone), and every record arrives once.

The lake is SeaweedFS (a real S3 server) and the endpoint the reference receiver, on loopback.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import boto3
import pytest

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import DeliveryError
from prequel_dagster.delivery import sender as sender_module
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.delivery.wire import batch_id_for
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.stores import S3Store

PREFIX = "imports/prod"
PLAN_KEY = f"{PREFIX}/artifacts/acme/streams/users-app/_pending/load.json"
PENDING = f"{PREFIX}/artifacts/acme/streams/users-app/_pending/"


# -- helpers ---------------------------------------------------------------------------------------


def s3_client(s3):
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
    )


@pytest.fixture
def bucket(s3, monkeypatch):
    monkeypatch.setenv("LAKE_SECRET", s3["secret_key"])
    name = "claims-" + os.urandom(4).hex()
    s3_client(s3).create_bucket(Bucket=name)
    return name


def raw_config(
    tmp_path: Path,
    lake: dict,
    url: str,
    rows: dict[int, str],
    *,
    provider_id: str = "acme",
    stream_id: str = "users-app",
    **webhook,
) -> dict:
    """One provider's CSV file in a local folder (columns id, pad), ``lake``, and a stream to ``url``."""
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    (drop / "users.csv").write_text("id,pad\n" + "".join(f"{i},{p}\n" for i, p in rows.items()))
    return {
        "datalakes": [lake],
        "providers": [{"id": provider_id, "name": "acme", "datalake_id": "lake", "products": ["all"]}],
        "sources": [
            {"id": "files", "name": "files", "vendor": "local", "provider_id": provider_id, "local": {"path": "drop"}}
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
                "max_records_per_minute": 1_000_000,
                "record_schema": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "pad": {"type": "string"}},
                },
                "webhook_batch": {"request_template": {"uri": url + "/b"}, **webhook},
            }
        ],
        "streams": [
            {
                "id": stream_id,
                "name": "users",
                "dataset_id": "users",
                "destination_id": "app",
                "mappings": [{"target_field": f, "field_type": "field", "column": {"name": f}} for f in ("id", "pad")],
            }
        ],
    }


def s3_lake(s3, bucket) -> dict:
    return {
        "id": "lake",
        "name": "lake",
        "storage": "s3_compatible",
        "s3_compatible": {
            "host": s3["host"],
            "port": s3["port"],
            "bucket_name": bucket,
            "prefix": PREFIX,
            "disable_ssl": True,
            "aws_access_keys": {"access_key_id": s3["access_key"], "secret_access_key": "${LAKE_SECRET}"},
        },
    }


def local_lake(path: str = "lake") -> dict:
    return {"id": "lake", "name": "lake", "storage": "local", "local": {"path": path}}


def read_plan(client, bucket) -> dict | None:
    try:
        return json.loads(client.get_object(Bucket=bucket, Key=PLAN_KEY)["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def acked_keys(plan: dict) -> set[str]:
    """The acknowledged batch keys a saved plan records (the contiguous prefix is stored as a count)."""
    return {str(i) for i in range(plan.get("acked_first", 0))} | set(plan["acked"])


def stored_batch_ids(receiver: Receiver) -> set[str]:
    with receiver.store.lock:
        return {row[0] for row in receiver.store.db.execute("SELECT batch_id FROM batches")}


class PlanWritesRecorded(S3Store):
    """The real S3 storage, noting when each version of the load plan is written."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.plan_writes: list[float] = []

    def write_bytes(self, path: str, data: bytes) -> None:
        if path.endswith("/_pending/load.json"):
            self.plan_writes.append(time.monotonic())
        super().write_bytes(path, data)


N_BATCHES = 40


# -- 1a: the plan is saved every half second on an object store ----------------------------------


def test_an_object_store_lake_saves_the_plan_every_half_second_while_the_load_runs(s3, bucket, tmp_path):
    """40 one-record batches to an endpoint that takes 0.15 s per answer: the plan in the bucket shows
    acknowledged batches while the load runs, only batches the endpoint stored, no ack log, and it is
    rewritten again and again, but never sooner than PLAN_SAVE_INTERVAL_SECONDS after the last save (not
    after every acknowledgement: 0.15 s apart here)."""
    assert sender_module.PLAN_SAVE_INTERVAL_SECONDS == 0.5  # the README's "every half second"
    client = s3_client(s3)
    with Receiver(fault=lambda req: ("sleep", 0.15)) as receiver:
        raw = raw_config(
            tmp_path, s3_lake(s3, bucket), receiver.url, {i: f"u{i}" for i in range(N_BATCHES)}, max_records_per_batch=1
        )
        config = load_config(raw, base_dir=str(tmp_path))
        run_extract(config, "users")
        storage = PlanWritesRecorded(
            bucket=bucket,
            prefix=PREFIX,
            region=s3["region"],
            access_key=s3["access_key"],
            secret_key=s3["secret_key"],
            endpoint=s3["endpoint_url"],
        )
        done = threading.Event()
        seen: list[tuple[set[str], set[str], str]] = []  # (plan's acked keys, stored batch ids, load id), mid-load
        pending_names: set[str] = set()

        def watch() -> None:
            while not done.is_set():
                plan = read_plan(client, bucket)
                stored = stored_batch_ids(receiver)  # after the plan was read: a superset of what it acked
                listing = client.list_objects_v2(Bucket=bucket, Prefix=PENDING).get("Contents", [])
                pending_names.update(o["Key"].rsplit("/", 1)[1] for o in listing)
                if plan is not None and not done.is_set():  # read before run_load returned
                    seen.append((acked_keys(plan), stored, plan["load_id"]))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            result = run_load(config, "users-app", storage=storage)
        finally:
            done.set()
            watcher.join()

    assert result.counts.records_loaded == N_BATCHES and result.counts.batches_sent == N_BATCHES
    mid = [s for s in seen if 0 < len(s[0]) < N_BATCHES]
    assert mid, f"no saved plan recorded acknowledged batches while the load ran: {[len(s[0]) for s in seen]}"
    assert len({len(a) for a, _, _ in mid}) >= 3, "the plan should be saved again and again while batches are acked"
    for acked, stored, load_id in seen:  # the plan records only batches the endpoint really acknowledged
        assert {batch_id_for(load_id, k) for k in acked} <= stored
    assert pending_names == {"load.json"}, pending_names  # no ack log on an object store
    assert read_plan(client, bucket) is None  # a finished load removes its plan

    # Saves: the plan as the load starts, then throttled saves as batches are acked, then one forced at the end.
    throttled = storage.plan_writes[1:-1]
    assert len(throttled) >= 3
    gaps = [b - a for a, b in itertools.pairwise(throttled)]
    assert min(gaps) >= 0.4, gaps  # PLAN_SAVE_INTERVAL_SECONDS apart (minus scheduling noise)


LOAD_IN_A_CHILD = textwrap.dedent("""
    import json, sys
    from prequel_dagster.config import load_config
    from prequel_dagster.engine import run_load

    run_load(load_config(json.loads(sys.argv[1]), base_dir=sys.argv[2]), "users-app")
""")


def test_after_a_kill_the_resumed_load_skips_the_batches_on_record_in_the_bucket(s3, bucket, tmp_path):
    """kill -9 hits a load on the S3 lake while its 25th batch is in flight: the plan in the bucket has
    (most of) the 24 acknowledged batches on record; the resumed load sends none of those again, sends
    the rest (acknowledged or not) with the same ids, and the receiver ends with every record once."""
    client = s3_client(s3)
    child: dict[str, subprocess.Popen] = {}

    def slow_then_kill(req):
        if len(receiver.requests) == 25 and "proc" in child:
            os.kill(child["proc"].pid, signal.SIGKILL)
            child["proc"].wait()
            return "drop"  # never acknowledged
        return ("sleep", 0.1)

    with Receiver(fault=slow_then_kill) as receiver:
        raw = raw_config(
            tmp_path, s3_lake(s3, bucket), receiver.url, {i: f"u{i}" for i in range(N_BATCHES)}, max_records_per_batch=1
        )
        config = load_config(raw, base_dir=str(tmp_path))
        run_extract(config, "users")
        child["proc"] = subprocess.Popen(
            [sys.executable, "-c", LOAD_IN_A_CHILD, json.dumps(raw), str(tmp_path)],
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        assert child["proc"].wait(timeout=600) == -signal.SIGKILL, child["proc"].stderr.read()[-2000:]
        first = [json.loads(r.body) for r in receiver.requests]
        assert len(first) == 25 and [r.answered for r in receiver.requests[:24]] == [202] * 24
        load_id = first[0]["load_id"]

        plan = read_plan(client, bucket)
        assert plan is not None and plan["load_id"] == load_id
        on_record = acked_keys(plan)
        # One request at a time, in order: what is on record is a prefix of the 24 acknowledged batches.
        assert on_record == {str(i) for i in range(len(on_record))} and 0 < len(on_record) <= 24, sorted(on_record)

        receiver.fault = None
        result = run_load(config, "users-app")
        after = [json.loads(r.body) for r in receiver.requests[25:]]

    assert result.resumed and result.load_id == load_id
    assert result.counts.batches_skipped_already_acked == len(on_record)
    skipped_ids = {batch_id_for(load_id, k) for k in on_record}
    assert skipped_ids.isdisjoint(b["batch_id"] for b in after)  # on record: never sent again
    # Everything else is sent, in order, with the ids it had (or would have had) in the killed load.
    assert [b["batch_id"] for b in after] == [batch_id_for(load_id, str(k)) for k in range(len(on_record), N_BATCHES)]
    resent = {b["batch_id"]: b["records"] for b in first[len(on_record) : 25]}
    assert all(b["records"] == resent[b["batch_id"]] for b in after if b["batch_id"] in resent)
    assert all(b["load_id"] == load_id for b in after)
    stored = sorted(r["record"]["id"] for r in receiver.store.records())
    assert stored == list(range(N_BATCHES))  # every record once (resent batches stored once by batch id)
    assert read_plan(client, bucket) is None


def test_a_load_stopped_by_a_failing_endpoint_leaves_every_ack_on_record_in_the_bucket(s3, bucket, tmp_path):
    """The endpoint fails from the 11th request on: the load stops after max_failed_batches_in_a_row;
    the plan in the bucket then has the 10 acknowledged batches and the 3 dead-lettered ones on record,
    and the next load sends only the batches after them."""
    with Receiver(fault=lambda req: 503 if len(receiver.requests) > 10 else None) as receiver:
        raw = raw_config(
            tmp_path,
            s3_lake(s3, bucket),
            receiver.url,
            {i: f"u{i}" for i in range(20)},
            max_records_per_batch=1,
            max_attempts=1,
            max_failed_batches_in_a_row=3,
        )
        config = load_config(raw, base_dir=str(tmp_path))
        run_extract(config, "users")
        with pytest.raises(DeliveryError, match="failed 3 batches in a row"):
            run_load(config, "users-app")
        plan = read_plan(s3_client(s3), bucket)
        assert plan is not None
        assert acked_keys(plan) == {str(i) for i in range(10)} and set(plan["rejected"]) == {"10", "11", "12"}
        receiver.fault = None
        result = run_load(config, "users-app")
        after = [json.loads(r.body) for r in receiver.requests[13:]]
    assert result.resumed and result.counts.batches_skipped_already_acked == 13
    assert [b["batch_id"] for b in after] == [batch_id_for(plan["load_id"], str(k)) for k in range(13, 20)]
    assert sorted(r["record"]["id"] for r in receiver.store.records()) == [*range(10), *range(13, 20)]


# -- 1b: max_bytes_per_batch -----------------------------------------------------------------------


def record_text(i: int, pad: str) -> str:
    """The record exactly as the body carries it (integer id, string pad, no spaces)."""
    return json.dumps({"id": i, "pad": pad}, separators=(",", ":"))


def test_every_body_is_at_most_max_bytes_per_batch_and_every_record_arrives_once(tmp_path):
    limit = 1024
    rows = {i: "p" * (20 + (i * 37) % 160) for i in range(1, 81)}  # records of 40..190 bytes
    rows[40] = "B" * 1500  # one record larger than the limit: it goes alone
    with Receiver() as receiver:
        config = load_config(
            raw_config(
                tmp_path, local_lake(), receiver.url, rows, max_records_per_batch=1000, max_bytes_per_batch=limit
            ),
            base_dir=str(tmp_path),
        )
        run_extract(config, "users")
        result = run_load(config, "users-app")
        bodies = [r.body for r in receiver.requests]
    envelopes = [json.loads(b) for b in bodies]
    assert result.counts.records_loaded == len(rows) and all(r.answered == 202 for r in receiver.requests)
    ids = [r["id"] for e in envelopes for r in e["records"]]
    assert sorted(ids) == sorted(rows)  # every record once
    for body, env in zip(bodies, envelopes):
        if any(r["id"] == 40 for r in env["records"]):
            assert [r["id"] for r in env["records"]] == [40] and len(body) > limit  # alone
        else:
            assert len(body) <= limit, (len(body), [r["id"] for r in env["records"]])
    assert all(r["pad"] == rows[r["id"]] for e in envelopes for r in e["records"])
    assert len(record_text(40, rows[40])) > limit
    # The limit is what cut the batches (not the record count): they are well filled.
    assert max(len(b) for b, e in zip(bodies, envelopes) if len(e["records"]) > 1) > limit // 2
    assert len(bodies) < len(rows) // 3


def test_long_provider_and_stream_ids_do_not_push_a_body_past_max_bytes_per_batch(tmp_path):
    """Ids may be 63 characters; the envelope around the records grows with them."""
    limit = 1024
    provider_id, stream_id = "p" * 63, "s" * 63
    # Records of exactly 95 bytes ("{...}" plus the comma that joins them): 8 of them fill 760 bytes.
    rows = {i: "x" * (95 - 1 - len(record_text(i, ""))) for i in range(10, 50)}
    assert {len(record_text(i, p)) + 1 for i, p in rows.items()} == {95}
    with Receiver() as receiver:
        raw = raw_config(
            tmp_path,
            local_lake(),
            receiver.url,
            rows,
            provider_id=provider_id,
            stream_id=stream_id,
            max_records_per_batch=1000,
            max_bytes_per_batch=limit,
        )
        config = load_config(raw, base_dir=str(tmp_path))
        run_extract(config, "users")
        run_load(config, stream_id)
        bodies = [r.body for r in receiver.requests]
    ids = [r["id"] for b in bodies for r in json.loads(b)["records"]]
    assert sorted(ids) == sorted(rows)
    assert max(len(b) for b in bodies) <= limit, sorted({len(b) for b in bodies})
