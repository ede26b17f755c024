"""What a data stream must never put out (found by a hostile review): another dataset's undelivered
columns, a record that stopped qualifying, or the values of a record it never delivered."""

import pyarrow as pa

from prequel_dagster.config.loading import load_config
from prequel_dagster.engine.data_stream import run_data_stream
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.stores import open_datalake

PROVIDERS = ("acme", "globex")


def _config(lake: str, rules: dict, constraint: tuple[str, ...] = PROVIDERS) -> dict:
    def source(p: str) -> dict:
        pg = {"host": "db.example.com", "port": 5432, "database": p, "auth_method": "password_auth"}
        pg["password_auth"] = {"username": p, "password": "x"}
        return {"id": f"{p}-pg", "name": p, "vendor": "postgres", "provider_id": p, "postgres": pg}

    def dataset(p: str) -> dict:
        return {
            "id": f"{p}-users",
            "name": "users",
            "source_id": f"{p}-pg",
            "method": "table",
            "table": {"source_table_namespace": "public", "source_table_name": "users"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id", "is_deleted_column": "is_deleted"},
            "attributes": {1: "email"},
        }

    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": lake}}],
        "providers": [{"id": p, "name": p, "datalake_id": "lake", "products": ["all"]} for p in PROVIDERS],
        "sources": [source(p) for p in PROVIDERS],
        "datasets": [dataset(p) for p in PROVIDERS],
        "attributes": [{"id": 1, "name": "email", "schema": {"type": "string"}}],
        "data_streams": [
            {
                "id": "people",
                "name": "People",
                "slug": "people",
                "data_rules": rules,
                "auth_rules": {"company_constraint": {"type": "inclusion", "company_ids": list(constraint)}},
            }
        ],
    }


def _commit(config, provider: str, rows: list[dict]) -> None:
    log = DatasetLog(open_datalake(config.datalake("lake"), config), provider, f"{provider}-users")
    latest = log.refresh().latest
    writer = log.begin()
    writer.write(pa.Table.from_pylist(rows))
    writer.commit(cursor={"n": (latest.seq if latest else 0) + 1}, counts={}, row_count=len(rows), run_id=None)


def _out(config) -> list[dict]:
    log = DatasetLog(open_datalake(config.datalake("lake"), config), "_data_streams", "people")
    return [row for batch in log.scan() for row in batch.to_pylist()]


def test_a_dataset_without_a_column_set_of_its_own_delivers_only_the_streams_exported_fields(tmp_path):
    rules = {
        "column_sets": [{"dataset_id": "acme-users", "fields": [{"field": "email", "exported": True}]}],
        "attributes": [{"attribute_id": 1, "fields": [{"field": "email", "exported": False}], "optional": False}],
    }
    config = load_config(_config(str(tmp_path / "lake"), rules))
    _commit(config, "acme", [{"id": 1, "email": "a@x", "ssn": "111-11-1111"}])
    _commit(config, "globex", [{"id": 1, "email": "g@x", "ssn": "222-22-2222", "salary": 99000}])
    run_data_stream(config, "people")
    rows = _out(config)
    assert {r["_provider_id"] for r in rows} == {"acme", "globex"}
    assert all(set(r) == {"email", "_record_id", "_provider_id", "_dataset_id", "_prequel_op"} for r in rows), rows


def test_a_record_that_stops_qualifying_is_withdrawn_and_an_undelivered_one_is_never_shown(tmp_path):
    rules = {
        "column_sets": [
            {
                "dataset_id": "acme-users",
                "fields": [
                    {"field": "email", "exported": True},
                    {"field": "consent", "filter": {"type": "include", "list": ["true"]}, "exported": False},
                ],
            }
        ]
    }
    config = load_config(_config(str(tmp_path / "lake"), rules, constraint=("acme",)))
    _commit(config, "acme", [{"id": 1, "email": "a@x", "consent": "true", "is_deleted": False}])
    _commit(config, "acme", [{"id": 2, "email": "never@x", "consent": "false", "is_deleted": False}])
    run_data_stream(config, "people")
    _commit(config, "acme", [{"id": 1, "email": "a@x", "consent": "false", "is_deleted": False}])  # withdrawn
    assert run_data_stream(config, "people").counts["retracted"] == 1
    _commit(config, "acme", [{"id": 2, "email": "never@x", "consent": "false", "is_deleted": True}])
    assert run_data_stream(config, "people").counts.get("deletes", 0) == 0  # never delivered: nothing to delete
    rows = _out(config)
    assert [(r["_record_id"], r["_prequel_op"], r["email"]) for r in rows] == [
        ("acme/acme-users/1", "insert", "a@x"),
        ("acme/acme-users/1", "delete", "a@x"),
    ]
    assert "never@x" not in str(rows)


def test_one_providers_values_never_stop_the_others_nor_reach_the_error(tmp_path):
    """globex's value breaks its attribute mapping: acme's rows are committed, globex's wait (its
    cursor does not move), and the error names the dataset and the expression, never the value."""
    import pytest

    from prequel_dagster.engine.data_stream import DataStreamError

    raw = _config(str(tmp_path / "lake"), {"attributes": [{"attribute_id": 1, "fields": [{"field": "email"}]}]})
    for dataset in raw["datasets"]:
        dataset["attributes"] = {1: "string(int(code))"}
    config = load_config(raw)
    _commit(config, "acme", [{"id": 1, "code": "12"}])
    _commit(config, "globex", [{"id": 1, "code": "secret-value-7"}])
    with pytest.raises(DataStreamError, match="globex/globex-users") as caught:
        run_data_stream(config, "people")
    assert "secret-value-7" not in str(caught.value) and "the other datasets' rows were committed" in str(caught.value)
    assert [r["_provider_id"] for r in _out(config)] == ["acme"]
    with pytest.raises(DataStreamError, match="globex/globex-users"):  # its rows still wait, acme's are not redone
        run_data_stream(config, "people")
    assert [r["_provider_id"] for r in _out(config)] == ["acme"]
    for dataset in raw["datasets"]:  # the mapping made to hold for every value: globex's rows are taken
        dataset["attributes"] = {1: "code"}
    run_data_stream(load_config(raw), "people")
    assert sorted(r["_record_id"] for r in _out(config)) == ["acme/acme-users/1", "globex/globex-users/1"]


def _delivered(tmp_path, receiver_url: str) -> dict:
    """acme's people data stream, streamed to the receiver in batches of 4, priced per record."""
    rules = {"attributes": [{"attribute_id": 1, "fields": [{"field": "email"}], "optional": False}]}
    raw = _config(str(tmp_path / "lake"), rules, constraint=("acme",))
    offer = {"id": "o1", "channel": "data_streams_market", "pricing": {"type": "per_record", "micro_cents_usd": 500000}}
    raw["data_streams"][0]["offers"] = [offer]
    template = {"uri": receiver_url + "/batches", "headers": {"Authorization": "Bearer ${APP_TOKEN}"}}
    raw["destinations"] = [
        {
            "id": "app",
            "name": "app",
            "type": "webhook_batch",
            "record_schema": {"type": "object"},
            "webhook_batch": {"request_template": template, "max_records_per_batch": 4},
        }
    ]
    mappings = [
        {"target_field": "id", "field_type": "field", "column": {"name": "_record_id"}},
        {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
    ]
    raw["streams"] = [
        {"id": "people-app", "name": "p", "dataset_id": "people", "destination_id": "app", "mappings": mappings}
    ]
    return raw


def test_a_batch_split_by_a_413_resumes_with_its_pending_half_only(tmp_path, monkeypatch):
    """A 413 splits batch 0; half 0.0 is acknowledged, the load stops on 0.1. The next load sends
    0.1 alone (not the whole batch under id 0): the receiver and the usage ledger count each record once."""
    import json

    import pytest

    from prequel_dagster.delivery.receiver import Receiver
    from prequel_dagster.engine import metering, run_load
    from prequel_dagster.lake.usage import read_usage

    monkeypatch.setenv("APP_TOKEN", "t")
    first = {"413": True, "ledger": True}

    def fault(request):
        if first["413"] and len(json.loads(request.body)["records"]) == 4:
            first["413"] = False
            return 413
        return None

    real, calls = metering.record_usage, []

    def flaky(store, **kwargs):
        calls.append(kwargs["batch_id"])
        if len(calls) == 2 and first["ledger"]:  # the second half's ledger write fails once
            first["ledger"] = False
            raise OSError("injected: the store is unavailable")
        return real(store, **kwargs)

    monkeypatch.setattr(metering, "record_usage", flaky)
    with Receiver(fault=fault) as receiver:
        config = load_config(_delivered(tmp_path, receiver.url))
        _commit(config, "acme", [{"id": i, "email": f"u{i}@x"} for i in range(4)])
        run_data_stream(config, "people")
        with pytest.raises(OSError, match="injected"):
            run_load(config, "people-app")
        run_load(config, "people-app")
        records = receiver.store.records(stream_id="people-app")
        assert sorted(r["record"]["id"] for r in records) == [f"acme/acme-users/{i}" for i in range(4)]
        store = open_datalake(config.datalake("lake"), config)
        assert sum(u.records for u in read_usage(store)) == 4


def test_a_provider_the_constraint_no_longer_admits_leaves_the_stream(tmp_path):
    rules = {"attributes": [{"attribute_id": 1, "fields": [{"field": "email"}], "optional": False}]}
    raw = _config(str(tmp_path / "lake"), rules)
    config = load_config(raw)
    _commit(config, "acme", [{"id": 1, "email": "a@x"}])
    _commit(config, "globex", [{"id": 9, "email": "g@x"}])
    run_data_stream(config, "people")
    raw["data_streams"][0]["auth_rules"]["company_constraint"]["company_ids"] = ["acme"]  # globex's contract ended
    assert run_data_stream(load_config(raw), "people").counts["withdrawn_by_constraint"] == 1
    assert run_data_stream(load_config(raw), "people").commit is None  # once
    latest = {r["_record_id"]: r["_prequel_op"] for r in _out(config)}
    assert latest == {"acme/acme-users/1": "insert", "globex/globex-users/9": "delete"}


def test_resends_and_redeliveries_are_metered_as_deliveries_and_the_metadata_says_so(tmp_path, monkeypatch):
    from prequel_dagster.delivery.receiver import Receiver
    from prequel_dagster.engine import run_load
    from prequel_dagster.lake.usage import read_usage

    monkeypatch.setenv("APP_TOKEN", "t")
    with Receiver() as receiver:
        config = load_config(_delivered(tmp_path, receiver.url))
        _commit(config, "acme", [{"id": i, "email": f"u{i}@x"} for i in range(4)])
        run_data_stream(config, "people")
        store = open_datalake(config.datalake("lake"), config)

        def ledger() -> int:
            return sum(u.records for u in read_usage(store))

        assert run_load(config, "people-app").metering["records_metered"] == ledger() == 4
        resent = run_load(config, "people-app", resend=True)
        assert resent.metering["records_metered"] == 4 and ledger() == 8  # the re-sent 4, nothing pending
        again = run_load(config, "people-app", record_ids=["acme/acme-users/1"])
        assert again.metering["records_metered"] == 1 and ledger() == 9


def test_after_a_constraint_change_only_what_was_delivered_is_withdrawn_and_nothing_else_goes_out(
    tmp_path, monkeypatch
):
    """globex's record 9 was delivered, record 10 only committed, when the company removed globex:
    the receiver gets 9's delete, and never 10 (nor a delete carrying its values)."""
    from prequel_dagster.delivery.receiver import Receiver
    from prequel_dagster.engine import run_load

    monkeypatch.setenv("APP_TOKEN", "t")
    with Receiver() as receiver:
        raw = _delivered(tmp_path, receiver.url)
        raw["data_streams"][0]["auth_rules"]["company_constraint"]["company_ids"] = ["acme", "globex"]
        config = load_config(raw)
        _commit(config, "acme", [{"id": 1, "email": "a@x"}])
        _commit(config, "globex", [{"id": 9, "email": "g9@x"}])
        run_data_stream(config, "people")
        run_load(config, "people-app")
        _commit(config, "globex", [{"id": 10, "email": "g10@x"}])
        run_data_stream(config, "people")  # committed, not delivered
        raw["data_streams"][0]["auth_rules"]["company_constraint"]["company_ids"] = ["acme"]
        config = load_config(raw)
        run_data_stream(config, "people")
        run_load(config, "people-app")
        got = [(r["record"]["id"], r["is_deleted"]) for r in receiver.store.records(stream_id="people-app")]
        assert sorted(got) == [
            ("acme/acme-users/1", False),
            ("globex/globex-users/9", False),
            ("globex/globex-users/9", True),
        ]
        assert "g10@x" not in str(receiver.store.records(stream_id="people-app"))
