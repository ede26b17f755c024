"""Backfills (issue 15): time-partitioned fact datasets, window extracts, re-sends and resyncs, against
a real PostgreSQL source and the reference receiver; then the Dagster surface in process (partitions,
backfill policy, a partition range in one run, the launchpad options, the schedule's partitions)."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import jsonschema
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from prequel_dagster import build_definitions, load_config
from prequel_dagster.config.errors import ConfigError, SourceError
from prequel_dagster.delivery.receiver import Receiver, check_envelope
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.stores import LocalStore

from .backfill_helpers import (
    DAY0,
    create_orders_db,
    day_key,
    execute,
    order_ids,
    orders_config,
    secrets,
    window,
)

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "prequel_dagster" / "schemas" / "batch_envelope.schema.json").read_text()
)
ORDERS, STREAM = "acme-orders", "acme-orders-ledger"


@pytest.fixture
def acme(pg, tmp_path, monkeypatch):
    passwords = secrets(("acme",))
    for key, value in passwords.items():
        monkeypatch.setenv(key, value)
    create_orders_db(pg, "acme", passwords["BACKFILL_ACME_PASSWORD"])
    with Receiver() as receiver:
        raw = orders_config(pg, str(tmp_path / "lake"), receiver.url)
        yield {
            "config": load_config(raw, base_dir=str(tmp_path)),
            "raw": raw,
            "receiver": receiver,
            "password": passwords["BACKFILL_ACME_PASSWORD"],
            "tmp": tmp_path,
            "pg": pg,
        }


def bodies(receiver: Receiver, path: str = "/ledger") -> list[dict]:
    return [json.loads(r.body) for r in receiver.requests if r.path == path and r.answered == 202]


def sent(envelopes: list[dict]) -> tuple[set[str], set[str]]:
    """(ids upserted, ids deleted) over the envelopes."""
    upserts = {r["id"] for e in envelopes for r in e["records"]}
    deletes = {r["id"] for e in envelopes for r in e["deleted_records"]}
    return upserts, deletes


# ---------------------------------------------------------------------------- the engine


def test_a_window_extract_reads_only_the_window_and_a_load_delivers_only_it(acme):
    config, receiver = acme["config"], acme["receiver"]
    result = run_extract(config, ORDERS, window=window(1))
    assert result.counts.records_processed == 6 and result.counts.records_new_inserted == 6
    lake = DatasetLog(LocalStore(acme["tmp"] / "lake"), "acme", ORDERS)
    held = {str(i) for b in lake.scan(columns=["id"]) for i in b.column(0).to_pylist()}
    assert held == order_ids("acme", 1)
    load = run_load(config, STREAM)
    assert load.counts.records_loaded == 6
    assert sent(bodies(receiver)) == (order_ids("acme", 1), set())
    # a two-day range is one window: the earlier day comes in, the later one was already there
    both = run_extract(config, ORDERS, window=window(0, days=2))
    assert (both.counts.records_processed, both.counts.records_new_inserted) == (12, 6)
    assert both.counts.records_existing_unchanged == 6
    run_load(config, STREAM)
    assert sent(bodies(receiver)) == (order_ids("acme", 0, 1), set())
    assert both.cursor == DAY0 + dt.timedelta(days=1, hours=20)  # the cursor never moves back


def test_extracting_a_window_again_commits_nothing_and_delivers_nothing(acme):
    config, receiver = acme["config"], acme["receiver"]
    first = run_extract(config, ORDERS, window=window(2))
    assert first.commit is not None
    run_load(config, STREAM)
    requests = len(receiver.requests)
    again = run_extract(config, ORDERS, window=window(2))
    assert again.commit is None and again.counts.records_existing_unchanged == 6
    assert again.counts.records_new_inserted == again.counts.records_existing_updated == 0
    assert run_load(config, STREAM).load_id is None  # nothing pending
    assert len(receiver.requests) == requests


def test_rows_deleted_or_changed_at_the_source_within_the_window_are_delivered_as_such(acme):
    config, receiver, pw = acme["config"], acme["receiver"], acme["password"]
    run_extract(config, ORDERS, window=window(0, days=2))
    run_load(config, STREAM)
    before = len(bodies(receiver))
    execute(acme["pg"], "acme", pw, "DELETE FROM orders WHERE id IN (101, 1)")  # day 1 and day 0
    execute(acme["pg"], "acme", pw, "UPDATE orders SET amount = 999.99 WHERE id = 102")  # a correction
    result = run_extract(config, ORDERS, window=window(1))  # only day 1 is re-read
    assert result.counts.records_existing_deleted == 1 and result.counts.records_existing_updated == 1
    assert result.counts.records_processed == 5
    run_load(config, STREAM)
    new = bodies(receiver)[before:]
    upserts, deletes = sent(new)
    assert upserts == {"102"} and deletes == {"101"}
    assert [r for e in new for r in e["records"]] == [{"id": "102", "amount": 999.99}]
    # day 0 was not re-extracted: its deleted row is still in the lake, live, until day 0 is
    again = run_extract(config, ORDERS, window=window(0))
    assert again.counts.records_existing_deleted == 1
    run_load(config, STREAM)
    assert sent(bodies(receiver)[before:])[1] == {"101", "1"}
    # a deleted row that comes back is inserted again
    execute(
        acme["pg"], "acme", pw, "INSERT INTO orders VALUES (101, 1.00, %s)", (DAY0 + dt.timedelta(days=1, hours=1),)
    )
    back = run_extract(config, ORDERS, window=window(1))
    assert back.counts.records_new_inserted == 1


def test_a_window_the_source_returns_empty_is_refused_rather_than_deleted(acme):
    config, pw = acme["config"], acme["password"]
    run_extract(config, ORDERS, window=window(1))
    execute(acme["pg"], "acme", pw, "DELETE FROM orders")
    latest = DatasetLog(LocalStore(acme["tmp"] / "lake"), "acme", ORDERS).latest()
    with pytest.raises(SourceError, match="returned no rows with created_at in .* refusing, and nothing was committed"):
        run_extract(config, ORDERS, window=window(1))
    assert DatasetLog(LocalStore(acme["tmp"] / "lake"), "acme", ORDERS).latest() == latest
    assert run_extract(config, ORDERS, window=window(2)).commit is None  # nothing held there: nothing to delete


def test_resend_delivers_the_windows_current_records_again_with_new_batch_ids_and_the_flag(acme):
    config, receiver, pw = acme["config"], acme["receiver"], acme["password"]
    run_extract(config, ORDERS, window=window(0, days=3))
    execute(acme["pg"], "acme", pw, "DELETE FROM orders WHERE id = 103")
    run_extract(config, ORDERS, window=window(1))
    first = run_load(config, STREAM)
    assert first.resent is None
    normal = bodies(receiver)
    assert all("metadata" not in e for e in normal)  # ordinary envelopes are unchanged
    result = run_load(config, STREAM, window=window(1), resend=True)
    assert result.load_id is None  # nothing was pending; the re-send is on its own
    assert result.resent is not None and result.resent.counts.records_loaded == 5
    resent = bodies(receiver)[len(normal) :]
    assert sent(resent) == (order_ids("acme", 1) - {"103"}, set())  # the window's live records, and only them
    for envelope in resent:
        jsonschema.validate(envelope, SCHEMA)
        assert check_envelope(envelope) is None
        assert envelope["metadata"] == {
            "resend": True,
            "window": {"start": window(1)[0].isoformat(), "end": window(1)[1].isoformat()},
        }
        assert envelope["load_id"] == result.resent.load_id != first.load_id
    assert {e["batch_id"] for e in resent}.isdisjoint({e["batch_id"] for e in normal})
    stored = receiver.store.records(stream_id=STREAM)
    assert {r["record"]["id"] for r in stored if r["batch_id"] in {e["batch_id"] for e in resent}} == order_ids(
        "acme", 1
    ) - {"103"}
    # asked again: new ids again (a receiver that remembers batch ids takes them again)
    again = run_load(config, STREAM, window=window(1), resend=True)
    assert again.resent is not None and again.resent.load_id not in (result.resent.load_id, None)
    later = bodies(receiver)[len(normal) + len(resent) :]
    assert {e["batch_id"] for e in later}.isdisjoint({e["batch_id"] for e in resent})
    # a re-send waits for nothing pending: a change is loaded first, then the window sent again
    execute(acme["pg"], "acme", pw, "UPDATE orders SET amount = 5 WHERE id = 104")
    run_extract(config, ORDERS, window=window(1))
    mixed = run_load(config, STREAM, window=window(1), resend=True)
    assert mixed.counts.records_loaded == 1 and mixed.resent is not None
    assert mixed.resent.counts.records_loaded == 5


def test_resync_reads_a_dimension_in_full_and_delivers_what_the_cursor_missed(acme):
    config, receiver, pw = acme["config"], acme["receiver"], acme["password"]
    run_extract(config, "acme-customers")
    run_load(config, "acme-customers-crm")
    assert len(receiver.store.records(stream_id="acme-customers-crm")) == 5
    # changed without touching updated_at: an incremental read cannot see it
    execute(acme["pg"], "acme", pw, "UPDATE customers SET name = 'Renamed' WHERE id = 2")
    assert run_extract(config, "acme-customers").commit is None
    result = run_extract(config, "acme-customers", resync=True)
    assert result.resync and result.counts.records_processed == 5
    assert (result.counts.records_existing_updated, result.counts.records_existing_unchanged) == (1, 4)
    run_load(config, "acme-customers-crm")
    names = [r["record"] for r in receiver.store.records(stream_id="acme-customers-crm")][5:]
    assert names == [{"id": "2", "name": "Renamed"}]
    assert run_extract(config, "acme-customers", resync=True).commit is None  # nothing changed since
    # resend without a window: every current record of the dataset, flagged
    resent = run_load(config, "acme-customers-crm", resend=True).resent
    assert resent is not None and resent.counts.records_loaded == 5
    envelopes = bodies(receiver, "/crm")[-2:]
    assert all(e["metadata"] == {"resend": True} for e in envelopes)
    assert sent(envelopes)[0] == {"1", "2", "3", "4", "5"}


def test_a_naive_timestamp_column_is_windowed_as_utc(acme):
    """A sql dataset whose created_at is a timestamp without time zone: its values are UTC wall time."""
    raw = json.loads(json.dumps(acme["raw"]))
    dataset = raw["datasets"][0]
    del dataset["table"]
    dataset.update(
        method="sql", sql={"query": "SELECT id, amount, (created_at AT TIME ZONE 'UTC') AS created_at FROM orders"}
    )
    config = load_config(raw, base_dir=str(acme["tmp"]))
    result = run_extract(config, ORDERS, window=window(2))
    assert result.counts.records_new_inserted == 6
    lake = DatasetLog(LocalStore(acme["tmp"] / "lake"), "acme", ORDERS)
    assert {str(i) for b in lake.scan(columns=["id"]) for i in b.column(0).to_pylist()} == order_ids("acme", 2)
    assert run_extract(config, ORDERS, window=window(2)).commit is None


def test_a_window_on_a_column_that_is_not_a_time_fails_with_the_fix(acme):
    raw = json.loads(json.dumps(acme["raw"]))
    raw["datasets"][0]["fact"]["created_at_column"] = "amount"
    config = load_config(raw, base_dir=str(acme["tmp"]))
    with pytest.raises(SourceError, match="created_at_column 'amount'.* not a timestamp or date"):
        run_extract(config, ORDERS, window=window(0))


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"partitions": {"granularity": "daily", "start": "2026-02-30"}}, "partitions.start", "is not a date"),
        ({"partitions": {"granularity": "daily", "start": "2026-01-01", "timezone": "Europe/Nowhere"}},
         "partitions.timezone", "not a known time zone; use an IANA name"),
        ({"partitions": {"granularity": "quarterly", "start": "2026-01-01"}}, "partitions.granularity", "hourly"),
        ({"partitions": {"granularity": "daily"}}, "partitions.start", "required"),
    ],
)  # fmt: skip
def test_a_bad_partitions_block_names_the_field_and_the_fix(acme, change, path, message):
    raw = json.loads(json.dumps(acme["raw"]))
    raw["datasets"][0].update(change)
    with pytest.raises(ConfigError) as caught:
        load_config(raw, base_dir=str(acme["tmp"]))
    text = str(caught.value)
    assert f"datasets[0].{path}" in text and message in text, text


def test_partitions_are_refused_on_dimensions_and_glob_datasets(acme):
    raw = json.loads(json.dumps(acme["raw"]))
    raw["datasets"][1]["partitions"] = {"granularity": "daily", "start": "2026-01-01"}
    with pytest.raises(ConfigError, match=r"datasets\[1\].partitions: time partitions need a fact dataset"):
        load_config(raw, base_dir=str(acme["tmp"]))
    raw["datasets"][1] = {
        "id": "drops",
        "name": "drops",
        "source_id": "files",
        "method": "glob",
        "glob": {"pattern": "*.csv", "file_format": "csv"},
        "type": "fact",
        "fact": {"primary_key_column": "id", "created_at_column": "at"},
        "partitions": {"granularity": "daily", "start": "2026-01-01"},
    }
    raw["sources"].append(
        {"id": "files", "name": "f", "vendor": "local", "provider_id": "acme", "local": {"path": "."}}
    )
    raw["streams"] = raw["streams"][:1]
    with pytest.raises(ConfigError, match=r"datasets\[1\].partitions: glob datasets are read by file"):
        load_config(raw, base_dir=str(acme["tmp"]))


# ---------------------------------------------------------------------------- Dagster


def test_partitioned_assets_carry_the_partitions_and_a_single_run_backfill_policy(acme):
    raw = json.loads(json.dumps(acme["raw"]))
    raw["datasets"][0]["partitions"].update(granularity="hourly", timezone="Europe/Paris")
    defs = build_definitions(load_config(raw, base_dir=str(acme["tmp"])))
    graph = defs.resolve_asset_graph()
    orders, ledger = dg.AssetKey(["prequel", "acme", ORDERS]), dg.AssetKey(["prequel", "acme", "streams", STREAM])
    expected = dg.HourlyPartitionsDefinition(start_date=dt.datetime(2026, 10, 1), timezone="Europe/Paris", end_offset=1)
    for key in (orders, ledger):
        node = graph.get(key)
        assert node.partitions_def == expected
        assert node.backfill_policy == dg.BackfillPolicy.single_run()
    for key in (
        dg.AssetKey(["prequel", "acme", "acme-customers"]),
        dg.AssetKey(["prequel", "acme", "streams", "acme-customers-crm"]),
    ):
        assert graph.get(key).partitions_def is None and graph.get(key).backfill_policy is None
    assert expected.get_first_partition_key() == "2026-10-01-00:00"
    assert defs.resolve_assets_def(orders).op.name.startswith("extract_partitioned__acme__acme_pg__p")
    assert defs.resolve_assets_def(ledger).op.name.startswith("load_partitioned__acme__ledger__p")
    for kind in ("monthly", "weekly", "daily"):
        raw["datasets"][0]["partitions"]["granularity"] = kind
        defs = build_definitions(load_config(raw, base_dir=str(acme["tmp"])))
        assert type(defs.resolve_asset_graph().get(orders).partitions_def).__name__.lower().startswith(kind)


def _asset_job_run(acme, keys, *, tags=None, partition_key=None, run_config=None, instance=None):
    defs = build_definitions(acme["config"])
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        asset_selection=[dg.AssetKey.from_user_string(k) for k in keys],
        tags=tags,
        partition_key=partition_key,
        run_config=run_config,
    )


def test_a_partition_range_materializes_in_one_run_and_delivers_only_its_window(acme):
    receiver = acme["receiver"]
    keys = [f"prequel/acme/{ORDERS}", f"prequel/acme/streams/{STREAM}"]
    with dg.instance_for_test() as instance:
        tags = {ASSET_PARTITION_RANGE_START_TAG: day_key(1), ASSET_PARTITION_RANGE_END_TAG: day_key(2)}
        result = _asset_job_run(acme, keys, tags=tags, instance=instance)
        assert result.success
        by_asset: dict[str, set[str]] = {}
        for event in result.get_asset_materialization_events():
            mat = event.event_specific_data.materialization
            by_asset.setdefault(mat.asset_key.to_user_string(), set()).add(mat.partition)
        assert by_asset == {key: {day_key(1), day_key(2)} for key in keys}
        extract = next(
            e.event_specific_data.materialization.metadata
            for e in result.get_asset_materialization_events()
            if e.event_specific_data.materialization.asset_key.path[-1] == ORDERS
        )
        assert extract["records_new_inserted"].value == 12
        assert extract["prequel/window"].value == f"[{window(1)[0].isoformat()}, {window(2)[1].isoformat()})"
        assert sent(bodies(receiver)) == (order_ids("acme", 1, 2), set())
        # one partition, re-sent from the launchpad: the load op's config
        load_op = build_definitions(acme["config"]).resolve_assets_def(dg.AssetKey.from_user_string(keys[1])).op.name
        resend = _asset_job_run(
            acme,
            keys[1:],
            partition_key=day_key(2),
            run_config={"ops": {load_op: {"config": {"resend": True}}}},
            instance=instance,
        )
        assert resend.success
        meta = resend.get_asset_materialization_events()[0].event_specific_data.materialization.metadata
        assert meta["prequel/records_resent"].value == 6
        flagged = [e for e in bodies(receiver) if e.get("metadata", {}).get("resend")]
        assert sent(flagged)[0] == order_ids("acme", 2)
        # the same by a run tag (what the UI's backfill dialog can set), without any config
        tagged = _asset_job_run(
            acme, keys[1:], partition_key=day_key(1), tags={"prequel/resend": "true"}, instance=instance
        )
        assert tagged.success
        flagged = [e for e in bodies(receiver) if e.get("metadata", {}).get("resend")]
        assert sent(flagged)[0] == order_ids("acme", 1, 2)


def test_resync_from_the_launchpad_on_an_unpartitioned_dimension(acme):
    receiver = acme["receiver"]
    keys = ["prequel/acme/acme-customers", "prequel/acme/streams/acme-customers-crm"]
    with dg.instance_for_test() as instance:
        assert _asset_job_run(acme, keys, instance=instance).success
        execute(acme["pg"], "acme", acme["password"], "UPDATE customers SET name = 'Quiet change' WHERE id = 4")
        extract_op = build_definitions(acme["config"]).resolve_assets_def(dg.AssetKey.from_user_string(keys[0])).op.name
        result = _asset_job_run(
            acme, keys, run_config={"ops": {extract_op: {"config": {"resync": True}}}}, instance=instance
        )
        assert result.success
    assert [r["record"] for r in receiver.store.records(stream_id="acme-customers-crm")][5:] == [
        {"id": "4", "name": "Quiet change"}
    ]


def test_the_schedule_requests_the_partition_in_progress_and_the_one_just_ended_at_its_turn(acme):
    defs = build_definitions(acme["config"])
    schedule = defs.resolve_schedule_def("prequel_extract_every_60_minutes")
    keys = {dg.AssetKey(["prequel", "acme", ORDERS]), dg.AssetKey(["prequel", "acme", "streams", STREAM])}

    def requests(at: dt.datetime) -> list[dg.RunRequest]:
        with (
            dg.instance_for_test() as instance,
            dg.build_schedule_context(
                instance=instance, scheduled_execution_time=at, repository_def=defs.get_repository_def()
            ) as context,
        ):
            data = schedule.evaluate_tick(context)
        return list(data.run_requests or [])

    midday = requests(DAY0 + dt.timedelta(days=2, hours=12))
    unpartitioned = [r for r in midday if r.partition_key is None and ASSET_PARTITION_RANGE_START_TAG not in r.tags]
    partitioned = [r for r in midday if r not in unpartitioned]
    assert len(unpartitioned) == 1 and dg.AssetKey(["prequel", "acme", ORDERS]) not in unpartitioned[0].asset_selection
    (current,) = partitioned
    assert current.partition_key == day_key(2) and set(current.asset_selection) == keys
    assert current.tags["prequel/provider"] == "acme"
    (turn,) = [r for r in requests(DAY0 + dt.timedelta(days=2)) if set(r.asset_selection) == keys]
    assert turn.partition_key is None
    assert (turn.tags[ASSET_PARTITION_RANGE_START_TAG], turn.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        day_key(1),
        day_key(2),
    )
    assert not [r for r in requests(DAY0 - dt.timedelta(days=1)) if set(r.asset_selection) == keys]


def test_a_partitioned_push_fact_dataset_commits_what_was_pushed_and_resends_by_window(tmp_path):
    """A push fact dataset (keyed by _sdc_record_id, windowed by _sdc_received_at): the provider's data
    cannot be re-read, so a partition's extract commits the batches pushed since the last one; the
    window still picks the records a re-send delivers."""
    import orjson

    from prequel_dagster.push.staging import stage
    from prequel_dagster.push.wire import parse_batch

    with Receiver() as receiver:
        raw = {
            "datalakes": [{"id": "lake", "name": "l", "storage": "local", "local": {"path": str(tmp_path / "lake")}}],
            "providers": [{"id": "acme", "name": "a", "datalake_id": "lake", "products": ["all"]}],
            "sources": [{"id": "ev", "name": "e", "vendor": "import_api", "provider_id": "acme", "import_api": {}}],
            "datasets": [
                {
                    "id": "events",
                    "name": "events",
                    "source_id": "ev",
                    "method": "push",
                    "push": {"table_name": "events"},
                    "type": "fact",
                    "fact": {"primary_key_column": "_sdc_record_id", "created_at_column": "_sdc_received_at"},
                    "partitions": {"granularity": "daily", "start": "2026-01-01"},
                }
            ],
            "destinations": [
                {
                    "id": "app",
                    "name": "app",
                    "type": "webhook_batch",
                    "record_schema": {"type": "object", "properties": {"name": {"type": "string"}}},
                    "webhook_batch": {"request_template": {"uri": receiver.url + "/events"}},
                }
            ],
            "streams": [
                {
                    "id": "events-app",
                    "name": "events",
                    "dataset_id": "events",
                    "destination_id": "app",
                    "mappings": [{"target_field": "name", "field_type": "field", "column": {"name": "name"}}],
                }
            ],
        }
        config = load_config(raw, base_dir=str(tmp_path))
        store = LocalStore(tmp_path / "lake")
        for names in (["a", "b"], ["c"]):
            body = {
                "table_name": "events",
                "schema": {"properties": {"name": {"type": "string"}}},
                "messages": [{"action": "upsert", "sequence": i, "data": {"name": n}} for i, n in enumerate(names)],
            }
            stage(store, "acme", "ev", parse_batch(orjson.dumps(body), "application/json"))
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        long_ago = (today - dt.timedelta(days=30), today - dt.timedelta(days=29))
        result = run_extract(config, "events", window=long_ago)  # whatever the window: what was pushed
        assert result.counts.records_new_inserted == 3 and result.window is not None
        assert run_extract(config, "events", window=long_ago).commit is None
        assert run_load(config, "events-app").counts.records_loaded == 3
        nothing = run_load(config, "events-app", window=long_ago, resend=True).resent
        assert nothing is not None and nothing.counts.records_loaded == 0
        resent = run_load(config, "events-app", window=(today, today + dt.timedelta(days=1)), resend=True).resent
        assert resent is not None and resent.counts.records_loaded == 3
        flagged = [json.loads(r.body) for r in receiver.requests if b'"resend":true' in r.body]
        assert sorted(r["name"] for e in flagged for r in e["records"]) == ["a", "b", "c"]
        defs = build_definitions(config)
        assert defs.resolve_asset_graph().get(dg.AssetKey(["prequel", "acme", "events"])).partitions_def is not None


def test_an_extract_run_that_names_no_partition_reads_incrementally(acme):
    """As the API launches an extract (no partition): read from the cursor, like an unpartitioned dataset.
    (Dagster refuses a partitioned stream's run without a partition: a load names one, any of them.)"""
    keys = [f"prequel/acme/{ORDERS}", f"prequel/acme/streams/{STREAM}"]
    with dg.instance_for_test() as instance:
        assert _asset_job_run(acme, keys[:1], instance=instance).success
        assert _asset_job_run(acme, keys[1:], partition_key=day_key(0), instance=instance).success
    assert sent(bodies(acme["receiver"])) == (order_ids("acme", 0, 1, 2), set())
