"""Data streams (issue 14) on real parts: three providers' PostgreSQL databases, the lake, the rules,
the reference receiver on loopback."""

import pytest

from prequel_dagster.config.errors import ConfigError
from prequel_dagster.config.loading import load_config
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.engine.data_stream import run_data_stream
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.stores import open_datalake

from .data_stream_helpers import USERS, data_stream_config, setup_databases
from .pg_helpers import BASE, execute


@pytest.fixture
def dbs(pg, monkeypatch):
    return setup_databases(pg, monkeypatch)


def _extract_all(config):
    for d in config.datasets:
        run_extract(config, d.id)


def _rows(config, data_stream_id="people"):
    store = open_datalake(config.chain(data_stream_id).datalake, config)
    log = DatasetLog(store, "_data_streams", data_stream_id)
    return [r for b in log.scan() for r in b.to_pylist()]


def test_attributes_across_two_providers_and_the_company_constraint(pg, dbs, receiver, tmp_path):
    config = load_config(data_stream_config(pg, str(tmp_path / "lake"), receiver.url))
    _extract_all(config)
    result = run_data_stream(config, "people")
    assert result.counts["rows_in"] == USERS["acme"] + USERS["globex"]
    assert result.counts["rows_out"] == USERS["acme"] + USERS["globex"]
    assert result.skipped_providers == ["initech"]
    rows = _rows(config)
    assert {r["_provider_id"] for r in rows} == {"acme", "globex"}  # initech is outside the constraint
    by_id = {r["_record_id"]: r for r in rows}
    assert by_id["globex/globex-users/3"]["email"] == "u3@globex.test"  # from globex's `mail`
    assert by_id["globex/globex-users/3"]["first"] == "First3"  # from globex's `given_name`
    assert by_id["acme/acme-users/3"]["email"] == "u3@acme.test"
    assert set(rows[0]) == {"email", "first", "_record_id", "_provider_id", "_dataset_id", "_prequel_op"}

    # nothing new: no commit
    assert run_data_stream(config, "people").commit is None

    # the load delivers the data stream with stable ids
    loaded = run_load(config, "people-app")
    assert loaded.counts.records_loaded == USERS["acme"] + USERS["globex"]
    got = receiver.store.records(stream_id="people-app")
    assert {r["record"]["provider"] for r in got} == {"acme", "globex"}
    assert {r["record"]["id"] for r in got} == set(by_id)


def test_dedup_across_loads_and_optional_false(pg, dbs, receiver, tmp_path):
    config = load_config(data_stream_config(pg, str(tmp_path / "lake"), receiver.url))
    _extract_all(config)
    first = run_data_stream(config, "people")
    assert first.counts["rows_out"] == USERS["acme"] + USERS["globex"]
    # acme updates user 1 (same email: a subject already delivered within P60D) and adds user 100
    execute(
        pg,
        "acme",
        dbs["acme"],
        "UPDATE users SET first_name = 'Changed', updated_at = now() WHERE id = 1; "
        "INSERT INTO users VALUES (100, 'new@acme.test', 'New', 'User', 1.00, now(), false); "
        "INSERT INTO users VALUES (101, 'u2@acme.test', 'Copy', 'Of2', 1.00, now(), false)",
    )
    # globex's user 4 loses its email: optional: false drops the row
    execute(pg, "globex", dbs["globex"], "ALTER TABLE users ALTER COLUMN mail DROP NOT NULL")
    execute(pg, "globex", dbs["globex"], "UPDATE users SET mail = NULL, updated_at = now() WHERE id = 4")
    _extract_all(config)
    second = run_data_stream(config, "people")
    assert second.counts["rows_in"] == 4
    assert second.counts["dropped_by.deduplication"] == 2  # user 1 again, and 101 (u2's email)
    assert second.counts["dropped_by.attributes[0]"] == 1  # globex 4 has no email any more
    assert second.counts["rows_out"] == 1
    assert [r["_record_id"] for r in _rows(config) if r["email"] == "new@acme.test"] == ["acme/acme-users/100"]


def test_bad_rules_and_references_are_config_errors_with_paths(pg, dbs, receiver, tmp_path):
    raw = data_stream_config(pg, str(tmp_path / "lake"), receiver.url)
    raw["data_streams"][0]["data_rules"]["attributes"][0]["fields"][0]["filter"] = {"type": "maybe", "list": ["x"]}
    raw["data_streams"][0]["auth_rules"]["company_constraint"]["company_ids"].append(1701)
    with pytest.raises(ConfigError) as exc:
        load_config(raw)
    text = str(exc.value)
    assert "data_streams[0].data_rules.attributes[0].fields[0].filter" in text
    raw = data_stream_config(pg, str(tmp_path / "lake"), receiver.url)
    raw["data_streams"][0]["auth_rules"]["company_constraint"]["company_ids"].append(1701)
    raw["data_streams"][0]["data_rules"]["attributes"].append({"attribute_id": 9, "fields": [{"field": "x"}]})
    raw["datasets"][0]["attributes"][3] = "email"
    with pytest.raises(ConfigError) as exc:
        load_config(raw)
    text = str(exc.value)
    assert "data_streams[0].auth_rules.company_constraint.company_ids[2]: no provider with id '1701'" in text
    assert "data_streams[0].data_rules: attribute 9 is not declared" in text
    assert "datasets[0].attributes.3: no attribute with id 3" in text


def test_dagster_assets_data_stream_downstream_of_datasets_and_stream_of_it(pg, dbs, receiver, tmp_path):
    import dagster as dg

    from prequel_dagster import build_definitions

    from .dagster_helpers import metadata_of, run_assets

    raw = data_stream_config(pg, str(tmp_path / "lake"), receiver.url)
    defs = build_definitions(load_config(raw))
    graph = defs.resolve_asset_graph()
    key = dg.AssetKey(["prequel", "_data_streams", "people"])
    node = graph.get(key)
    assert "data_stream" in node.kinds
    assert node.parent_keys == {
        dg.AssetKey(["prequel", "acme", "acme-users"]),
        dg.AssetKey(["prequel", "globex", "globex-users"]),
    }  # initech is outside the company constraint
    stream = graph.get(dg.AssetKey(["prequel", "_data_streams", "streams", "people-app"]))
    assert stream.parent_keys == {key}
    with dg.instance_for_test() as instance:
        result = run_assets(raw, instance, base_dir=str(tmp_path))
        assert result.success
    meta = metadata_of(result, "prequel/_data_streams/people")
    assert meta["rows_in"] == USERS["acme"] + USERS["globex"] and meta["rows_out"] == meta["rows_in"]
    assert meta["dropped_by.deduplication"] == 0 and meta["rows_in.acme"] == USERS["acme"]
    load = metadata_of(result, "prequel/_data_streams/streams/people-app")
    assert load["records_loaded"] == USERS["acme"] + USERS["globex"]


# ---------------------------------------------------------------------------- metering


def _usage_records(config, **filters):
    from prequel_dagster.lake.usage import read_usage

    store = open_datalake(config.chain("people").datalake, config)
    return read_usage(store, **filters)


def test_metering_counts_each_record_once_under_injected_retries(pg, dbs, tmp_path):
    import json

    from prequel_dagster.delivery.receiver import Receiver

    seen: dict[str, int] = {}

    def fault(req):
        batch_id = json.loads(req.body)["batch_id"]
        seen[batch_id] = seen.get(batch_id, 0) + 1
        if seen[batch_id] == 1:  # stored, but the answer is lost: the sender tries again
            receiver.store.store(json.loads(req.body))
            return "drop"
        if seen[batch_id] == 2:
            return 503
        return None

    with Receiver(fault=fault) as receiver:
        raw = data_stream_config(pg, str(tmp_path / "lake"), receiver.url)
        raw["destinations"][0]["webhook_batch"]["max_failed_batches_in_a_row"] = 100
        config = load_config(raw)
        _extract_all(config)
        run_data_stream(config, "people")
        result = run_load(config, "people-app")
        total = USERS["acme"] + USERS["globex"]
        assert result.counts.records_loaded == total and result.counts.retries >= 2 * result.counts.batches_sent
        assert result.metering["records_metered"] == total
        assert result.metering["cost_usd"] == pytest.approx(total * 500000 / 10**8)
        assert len(receiver.store.records(stream_id="people-app")) == total
    rows = _usage_records(config)
    assert {r.provider_id: r.records for r in rows} == {"acme": USERS["acme"], "globex": USERS["globex"]}
    assert all(r.channel == "data_streams_market" and r.pricing_type == "per_record" for r in rows)
    assert sum(r.cost_usd for r in rows) == pytest.approx(total * 0.005)
    assert [r.provider_id for r in _usage_records(config, provider_id="globex")] == ["globex"]


KILL_BETWEEN_LEDGER_AND_ACK = """
import json, os, signal, sys
from prequel_dagster.config import load_config
from prequel_dagster.engine import run_load
from prequel_dagster.engine import metering

written = []
real = metering.record_usage

def record_then_die(store, **kwargs):  # the 3rd batch: metered, acknowledged, but not yet in the ack log
    out = real(store, **kwargs)
    written.append(kwargs["batch_id"])
    if len(written) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return out

metering.record_usage = record_then_die
run_load(load_config(json.loads(sys.argv[1]), base_dir=sys.argv[2]), "people-app")
"""


def test_metering_is_exactly_once_across_a_kill_9_mid_load(pg, dbs, receiver, tmp_path):
    import json
    import signal
    import subprocess
    import sys

    raw = data_stream_config(pg, str(tmp_path / "lake"), receiver.url)
    config = load_config(raw)
    _extract_all(config)
    run_data_stream(config, "people")
    proc = subprocess.run(
        [sys.executable, "-c", KILL_BETWEEN_LEDGER_AND_ACK, json.dumps(raw), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert sum(r.records for r in _usage_records(config)) == 15  # 3 batches of 5, the 3rd not in the ack log
    result = run_load(config, "people-app")
    total = USERS["acme"] + USERS["globex"]
    assert result.resumed and result.counts.batches_skipped_already_acked == 2
    assert result.metering["records_metered"] == total - 15  # the 3rd batch went again: metered already
    assert result.metering["batches_already_metered"] == 1
    assert sum(r.records for r in _usage_records(config)) == total
    assert sorted(r["record"]["id"] for r in receiver.store.records(stream_id="people-app")) == sorted(
        r["_record_id"] for r in _rows(config)
    )


def test_cli_test_transform_names_the_rule_and_usage_prints_the_ledger(pg, dbs, receiver, tmp_path, capsys):
    import json

    import yaml

    from prequel_dagster.cli import main

    raw = data_stream_config(pg, str(tmp_path / "lake"), receiver.url)
    path = tmp_path / "prequel.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(raw))))
    config = load_config(path)
    _extract_all(config)
    assert main(["test-transform", "people", "--config", str(path), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "kept     acme/acme-users/12" in out and "4 kept, 0 dropped" in out
    run_data_stream(config, "people")
    execute(pg, "globex", dbs["globex"], "ALTER TABLE users ALTER COLUMN mail DROP NOT NULL")
    execute(pg, "globex", dbs["globex"], "UPDATE users SET mail = NULL, updated_at = now() WHERE id = 8")
    run_extract(config, "globex-users")
    assert main(["test-transform", "people", "--config", str(path), "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "DROPPED  acme/acme-users/12  by data_rules.deduplication" in out
    assert "DROPPED  globex/globex-users/8  by data_rules.attributes[0]: attribute 1 missing" in out

    run_load(config, "people-app")
    assert main(["usage", "--config", str(path), "--provider", "globex", "--json"]) == 0
    lines = json.loads(capsys.readouterr().out)
    assert [(r["provider_id"], r["records"], r["channel"]) for r in lines] == [
        ("globex", USERS["globex"], "data_streams_market")
    ]
    assert lines[0]["cost_usd"] == pytest.approx(USERS["globex"] * 0.005)
    assert main(["usage", "--config", str(path), "--since", "2999-01-01"]) == 0
    assert "nothing metered" in capsys.readouterr().out


def test_every_filter_kind_and_the_frequency_filter_on_postgres_rows(pg, dbs, receiver, tmp_path):
    import datetime as dt

    execute(
        pg,
        "acme",
        dbs["acme"],
        "UPDATE users SET last_name = 'Twin' WHERE id IN (5, 6); UPDATE users SET last_name = NULL WHERE id = 9; "
        "UPDATE users SET updated_at = updated_at - interval '90 days' WHERE id = 4",
    )
    fields = [
        {
            "field": "id",
            "filter": {"min": {"type": "inclusive", "value": "2"}, "max": {"type": "exclusive", "value": "12"}},
        },
        {"field": "email", "filter": {"type": "exclude", "list": ["u3@acme.test"]}},
        {"field": "first_name", "filter": {"type": "include", "list": [f"First{i}" for i in range(1, 12) if i != 7]}},
        {"field": "last_name", "filter": "include_only_if_not_null_filter"},
        {"field": "updated_at", "filter": {"recency": "P30D", "from": None, "to": None}, "exported": False},
        {"field": "balance", "filter": {"expressions": ["balance > 1.0", "balance < 10"]}},
        {"field": "is_deleted", "filter": "include_all_values_including_nulls_filter", "exported": False},
    ]
    rules = {"column_sets": [{"dataset_id": "acme-users", "fields": fields}]}
    config = load_config(data_stream_config(pg, str(tmp_path / "lake"), receiver.url, data_rules=rules))
    run_extract(config, "acme-users")
    result = run_data_stream(config, "people", now=BASE + dt.timedelta(days=1))
    c = result.counts
    assert c["rows_in"] == USERS["acme"]
    assert c["dropped_by.column_sets[0].fields[0]"] == 2  # ids 1 and 12
    assert c["dropped_by.column_sets[0].fields[1]"] == 1  # u3
    assert c["dropped_by.column_sets[0].fields[2]"] == 1  # First7
    assert c["dropped_by.column_sets[0].fields[3]"] == 1  # 9 has no last name
    assert c["dropped_by.column_sets[0].fields[4]"] == 1  # 4 is 90 days old
    assert c["dropped_by.column_sets[0].fields[5]"] == 2  # 10 and 11 have balances of 10.50 and 11.50
    assert c["rows_out"] == 4 and "dropped_by.column_sets[0].fields[6]" not in c  # (a no-op filter is no rule)
    assert sorted(r["id"] for r in _rows(config)) == [2, 5, 6, 8]
    assert set(_rows(config)[0]) == {"id", "email", "first_name", "last_name", "balance", *SYSTEM}

    freq = {
        "column_sets": [{"dataset_id": "acme-users", "fields": []}],
        "frequency_filter": {"column_references": ["last_name"], "min_inclusive": 2, "max_inclusive": 5},
    }
    raw = data_stream_config(pg, str(tmp_path / "lake2"), receiver.url, data_rules=freq)
    raw["data_streams"][0]["auth_rules"] = None
    config = load_config(raw)
    run_extract(config, "acme-users")
    result = run_data_stream(config, "people")
    assert result.counts["rows_in"] == USERS["acme"] and result.counts["rows_out"] == 2  # the twins
    assert result.counts["dropped_by.frequency_filter"] == USERS["acme"] - 2
    assert sorted(r["id"] for r in _rows(config)) == [5, 6]


SYSTEM = {"_record_id", "_provider_id", "_dataset_id", "_prequel_op"}
