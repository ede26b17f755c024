"""Push datasets: staged batches committed into the dataset by an extract, the highest ``sequence``
winning per key whatever the arrival order (within a request and across requests), re-pushes and
older versions changing nothing, and the stream delivering what was pushed."""

import random

import orjson
import pyarrow as pa
import pytest

from prequel_dagster.builder import build_definitions
from prequel_dagster.config import load_config
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.changes import latest_versions
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.push.staging import stage, stage_request, staged_tables
from prequel_dagster.push.wire import check_batch, parse_batch
from prequel_dagster.stores import LocalStore

SCHEMA = {"properties": {"id": {"type": "integer"}, "email": {"type": "string"}}}


def _config(tmp_path, receiver_url: str) -> dict:
    return {
        "datalakes": [{"id": "lake", "name": "l", "storage": "local", "local": {"path": str(tmp_path / "lake")}}],
        "providers": [{"id": "acme", "name": "a", "datalake_id": "lake", "products": ["all"]}],
        "sources": [{"id": "ev", "name": "e", "vendor": "import_api", "provider_id": "acme", "import_api": {}}],
        "datasets": [
            {
                "id": "users",
                "name": "users",
                "source_id": "ev",
                "method": "push",
                "push": {"table_name": "users"},
                "type": "dimension",
                "dimension": {"primary_key_column": "id"},
            }
        ],
        "destinations": [
            {
                "id": "app",
                "name": "app",
                "type": "webhook_batch",
                "record_schema": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
                },
                "webhook_batch": {"request_template": {"uri": receiver_url}},
            }
        ],
        "streams": [
            {
                "id": "users-app",
                "name": "users",
                "dataset_id": "users",
                "destination_id": "app",
                "mappings": [
                    {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}},
                    {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
                ],
            }
        ],
    }


def _stage_request(store, body: dict) -> None:
    """What ``/v2/import/batch`` does with a body: check it, then keep it as it arrived."""
    raw = orjson.dumps(body)
    head = check_batch(raw, "application/json")
    stage_request(store, "acme", "ev", head.table_name, raw, records=head.count)


def _push(store, messages: list[tuple[int, int, str]], *, as_parquet: bool = False) -> None:
    body = {
        "table_name": "users",
        "schema": SCHEMA,
        "key_names": ["id"],
        "messages": [
            {"action": "upsert", "sequence": seq, "data": {"id": i, "email": email}} for i, seq, email in messages
        ],
    }
    if as_parquet:  # how a Push request's tables are staged
        stage(store, "acme", "ev", parse_batch(orjson.dumps(body), "application/json"))
    else:
        _stage_request(store, body)


def _current(config) -> dict[int, str]:
    log = DatasetLog(LocalStore(config.resolve_path(config.datalake("lake").local.path)), "acme", "users")
    found = latest_versions(log, pa.array([1, 2, 3, 4]), "id")
    live = [row for row in found.to_pylist() if row["_prequel_op"] != "delete"]
    return {row["id"]: row["email"] for row in live}


def test_sequence_wins_whatever_the_arrival_order_and_the_stream_delivers(tmp_path, receiver):
    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _push(store, [(1, 10, "one@ten"), (2, 5, "two@five"), (1, 7, "one@seven")])  # within a request: 10 wins
    _push(store, [(3, 1, "three@one"), (2, 9, "two@nine")], as_parquet=True)  # both staged forms commit together
    _push(store, [(1, 8, "one@eight")])  # older than what an earlier request held
    first = run_extract(config, "users")
    assert first.counts.records_new_inserted == 3
    assert _current(config) == {1: "one@ten", 2: "two@nine", 3: "three@one"}
    assert staged_tables(store, "acme", "ev") == {}  # the committed batches are gone from staging

    _push(store, [(1, 3, "one@three"), (2, 9, "two@nine")])  # an older version and a re-push
    again = run_extract(config, "users")
    assert again.counts.records_new_inserted == again.counts.records_existing_updated == 0
    assert _current(config) == {1: "one@ten", 2: "two@nine", 3: "three@one"}

    _push(store, [(3, 2, "three@two"), (4, 1, "four@one")])
    run_extract(config, "users")
    assert _current(config) == {1: "one@ten", 2: "two@nine", 3: "three@two", 4: "four@one"}

    loaded = run_load(config, "users-app")
    assert loaded.counts.records_loaded == 5  # each committed version, in commit order (3 changed once)
    got = {r["record"]["id"]: r["record"]["email"] for r in receiver.store.records(stream_id="users-app")}
    assert got == {"1": "one@ten", "2": "two@nine", "3": "three@two", "4": "four@one"}


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_arrival_across_requests_gives_the_same_dataset(tmp_path, receiver, seed):
    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    versions = [(key, seq, f"{key}@{seq}") for key in range(1, 5) for seq in range(1, 8)]
    random.Random(seed).shuffle(versions)
    for start in range(0, len(versions), 5):
        _push(store, versions[start : start + 5])
        if random.Random(seed + start).random() < 0.4:
            run_extract(config, "users")  # commits between requests, at random points
    run_extract(config, "users")
    assert _current(config) == {key: f"{key}@7" for key in range(1, 5)}


def test_push_datasets_are_assets_and_need_an_import_api_source(tmp_path, receiver):
    defs = build_definitions(_config(tmp_path, receiver.url))
    keys = {"/".join(k.path) for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"prequel/acme/users", "prequel/acme/streams/users-app"} <= keys
    wrong = _config(tmp_path, receiver.url)
    wrong["datasets"][0]["method"] = "table"
    wrong["datasets"][0]["table"] = {"source_table_name": "users"}
    del wrong["datasets"][0]["push"]
    with pytest.raises(Exception, match="use method: push"):
        load_config(wrong)
    twice = _config(tmp_path, receiver.url)
    twice["datasets"].append({**twice["datasets"][0], "id": "users-again"})
    with pytest.raises(
        Exception, match=r"datasets\[1\]\.push\.table_name.*dataset 'users' already reads table 'users'"
    ):
        load_config(twice)


def test_the_sensor_requests_an_extract_when_batches_are_staged(tmp_path, receiver):
    import dagster as dg

    cfg = _config(tmp_path, receiver.url)
    defs = build_definitions(cfg)
    sensor = next(s for s in defs.sensors if s.name == "prequel_glob_new_files")
    store = LocalStore(tmp_path / "lake")
    with dg.instance_for_test() as instance:

        def tick(cursor=None):
            return sensor(
                dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
            )

        assert not tick().run_requests  # nothing staged
        _push(store, [(1, 1, "a@x")])
        result = tick()
        assert [r.asset_selection for r in result.run_requests] == [[dg.AssetKey(["prequel", "acme", "users"])]]
        assert result.run_requests[0].tags["prequel/provider"] == "acme"  # the provider's run limit holds
        assert not tick(result.cursor).run_requests  # the same batches: not requested twice
        run_extract(load_config(cfg), "users")
        assert not tick(result.cursor).run_requests  # committed: nothing pending
        _push(store, [(2, 1, "b@x")])
        assert len(tick(result.cursor).run_requests) == 1


def test_a_tables_first_batch_makes_it_a_dataset(tmp_path, monkeypatch):
    """Through the API: the first accepted batch of a table with one key creates the provider's push
    dataset (once, whatever follows); an extract then commits what was staged."""
    from cryptography.fernet import Fernet

    from prequel_dagster.api.app import create_app
    from prequel_dagster.api.service import Service
    from prequel_dagster.catalog import push_tokens
    from prequel_dagster.catalog.store import Catalog

    from .api_helpers import api_server

    monkeypatch.setenv("PREQUEL_CATALOG_KEY", Fernet.generate_key().decode())
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert catalog is not None
    catalog.create(
        "datalakes",
        "lake",
        None,
        {"id": "lake", "name": "l", "storage": "local", "local": {"path": str(tmp_path / "lake")}},
    )
    catalog.create("providers", "acme", "acme", {"id": "acme", "name": "a", "datalake_id": "lake", "products": ["all"]})
    catalog.create(
        "sources",
        "ev",
        "acme",
        {"id": "ev", "name": "e", "vendor": "import_api", "provider_id": "acme", "import_api": {}},
    )
    _, token = push_tokens.create_token(catalog, push_tokens.push_source(catalog, "ev", "acme"))
    service = Service(catalog)
    import httpx

    def push(table: str, keys: list[str], rows: list[tuple[int, int]]) -> int:
        body = {
            "table_name": table,
            "schema": {"properties": {"id": {"type": "integer"}, "n": {"type": "integer"}}},
            "key_names": keys,
            "messages": [{"action": "upsert", "sequence": s, "data": {"id": i, "n": s}} for i, s in rows],
        }
        answer = httpx.post(
            base + "/v2/import/batch",
            content=orjson.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=30,
        )
        return answer.status_code

    with api_server(create_app(service=service)) as base:
        assert push("orders", ["id"], [(1, 1), (2, 1)]) == 201
        assert push("orders", ["id"], [(1, 2)]) == 201
        assert push("pairs", ["id", "n"], [(1, 1), (1, 2)]) == 201  # a composite key
        assert push("pairs", ["id", "n"], [(1, 1)]) == 201  # the same key again: one record
        assert push("events", [], [(1, 1), (1, 1)]) == 201  # no key_names: append-only
        assert push("events", [], [(1, 1)]) == 201
        datasets = {d.push.table_name: d for d in service.config().datasets if d.source_id == "ev"}
        assert {name: (d.primary_key, d.type) for name, d in datasets.items()} == {
            "orders": ("id", "dimension"),
            "pairs": ("_sdc_primary_key", "dimension"),
            "events": ("_sdc_record_id", "fact"),
        }
        result = run_extract(service.config(), datasets["orders"].id)
        assert result.counts.records_new_inserted == 2
        log = DatasetLog(LocalStore(tmp_path / "lake"), "acme", datasets["orders"].id)
        found = latest_versions(log, pa.array([1, 2]), "id")
        assert dict(zip(found.column("id").to_pylist(), found.column("n").to_pylist())) == {1: 2, 2: 1}
        assert run_extract(service.config(), datasets["pairs"].id).counts.records_new_inserted == 2
        assert run_extract(service.config(), datasets["events"].id).counts.records_new_inserted == 3
        assert push("events", [], [(1, 1)]) == 201  # the same record pushed again is another record
        assert run_extract(service.config(), datasets["events"].id).counts.records_new_inserted == 1
    catalog.close()


def _stage_typed(store, sequence: int, data: dict, types: dict[str, str]) -> None:
    body = {
        "table_name": "users",
        "schema": {"properties": {name: {"type": kind} for name, kind in types.items()}},
        "key_names": ["id"],
        "messages": [{"action": "upsert", "sequence": sequence, "data": data}],
    }
    _stage_request(store, body)


def _lake_rows(config) -> dict:
    log = DatasetLog(LocalStore(config.resolve_path(config.datalake("lake").local.path)), "acme", "users")
    found = latest_versions(log, pa.array([1, 2, 3]), "id")
    rows = found.drop_columns([c for c in found.column_names if c.startswith("_") and c != "_sdc_sequence"])
    return {row["id"]: row for row in rows.to_pylist()}


def test_a_field_whose_type_changes_becomes_a_column_of_its_own_as_stitch_splits_it(tmp_path, receiver):
    """``email`` pushed as a string, then as an integer: the integers go to ``email__it`` (in the same
    commit, and in a later one against the lake's type); nothing is dropped or converted."""
    from prequel_dagster.config.errors import SourceError

    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _stage_typed(store, 1, {"id": 1, "email": "a@x"}, {"id": "integer", "email": "string"})
    _stage_typed(store, 2, {"id": 2, "email": 7}, {"id": "integer", "email": "integer"})
    assert run_extract(config, "users").counts.records_new_inserted == 2
    rows = _lake_rows(config)
    assert (rows[1]["email"], rows[1]["email__it"]) == ("a@x", None)
    assert (rows[2]["email"], rows[2]["email__it"]) == (None, 7)
    _stage_typed(store, 3, {"id": 3, "email": True}, {"id": "integer", "email": "boolean"})  # a later commit
    assert run_extract(config, "users").counts.records_new_inserted == 1
    assert (_lake_rows(config)[3]["email"], _lake_rows(config)[3]["email__bo"]) == (None, True)

    _stage_typed(store, 4, {"id": "4", "email": "d@x"}, {"id": "string", "email": "string"})  # a key cannot split
    with pytest.raises(SourceError, match="key column 'id' was pushed as string after int64") as caught:
        run_extract(config, "users")
    assert "stay staged" in str(caught.value) and "users" in str(caught.value)
    assert len(staged_tables(store, "acme", "ev")["users"]) == 1  # nothing dropped


def _stage_version(store, version: int, ids: list[int], *, activate: bool, start: int = 1) -> None:
    messages: list[dict] = [
        {"action": "upsert", "sequence": start + n, "data": {"id": i, "email": f"{i}@v{version}"}}
        for n, i in enumerate(ids)
    ]
    if activate:
        messages.append({"action": "activate_version", "sequence": start + len(ids)})
    body = {
        "table_name": "users",
        "schema": SCHEMA,
        "key_names": ["id"],
        "table_version": version,
        "messages": messages,
    }
    _stage_request(store, body)


def test_activate_version_retires_the_records_of_older_versions_and_the_stream_deletes_them(tmp_path, receiver):
    """Singer's full-table replication: version 2 of the table brings ids 1 and 2, then
    ``activate_version``: id 3 (only in version 1) is delivered as a delete; version-1 rows staged
    with the activation are dropped, not loaded."""
    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _stage_version(store, 1, [1, 2, 3], activate=True)
    assert run_extract(config, "users").counts.records_new_inserted == 3
    _stage_version(store, 2, [1, 2], activate=False, start=10)
    _stage_version(store, 1, [4], activate=False, start=5)  # a straggler of the old version
    _stage_version(store, 2, [], activate=True, start=20)
    second = run_extract(config, "users")
    assert (second.counts.records_existing_deleted, second.counts.records_new_inserted) == (1, 0)
    assert _current(config) == {1: "1@v2", 2: "2@v2"}
    run_load(config, "users-app")
    deleted = [r["record"]["id"] for r in receiver.store.records(stream_id="users-app") if r["is_deleted"]]
    assert deleted == ["3"]


def test_a_pushed_soft_delete_column_deletes_the_record(tmp_path, receiver):
    """A push dataset with ``is_deleted_column``: a record pushed again with the column true is
    delivered in ``deleted_records``."""
    cfg = _config(tmp_path, receiver.url)
    cfg["datasets"][0]["dimension"]["is_deleted_column"] = "deleted"
    config = load_config(cfg)
    store = LocalStore(tmp_path / "lake")
    types = {"id": "integer", "email": "string", "deleted": "boolean"}
    _stage_typed(store, 1, {"id": 1, "email": "a@x", "deleted": False}, types)
    _stage_typed(store, 1, {"id": 2, "email": "b@x", "deleted": False}, types)
    run_extract(config, "users")
    _stage_typed(store, 2, {"id": 1, "email": "a@x", "deleted": True}, types)
    assert run_extract(config, "users").counts.records_existing_deleted == 1
    run_load(config, "users-app")
    got = {(r["record"]["id"], r["is_deleted"]) for r in receiver.store.records(stream_id="users-app")}
    assert got == {("1", False), ("2", False), ("1", True)}


def test_a_write_killed_mid_way_leaves_nothing_a_reader_takes(tmp_path, receiver):
    """The temporary file of a staging write that was killed before its atomic link is never read."""
    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _push(store, [(1, 1, "a@x")])
    folder = tmp_path / "lake" / "artifacts" / "acme" / "push" / "ev" / "users" / "staged"
    (folder / ".00000000000000000001-dead.parquet.0123.tmp").write_bytes(b"")  # what SIGKILL mid-write leaves
    assert len(staged_tables(store, "acme", "ev")["users"]) == 1
    assert run_extract(config, "users").counts.records_new_inserted == 1


def test_a_staged_request_the_commit_cannot_read_stops_it_by_name_and_loses_nothing(tmp_path, receiver):
    """A staged body is parsed again by the commit; one that no longer parses (damaged on disk, or
    written by hand) stops the extract with its path and the fix, and every batch stays staged."""
    from prequel_dagster.config.errors import SourceError

    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _push(store, [(1, 1, "a@x")])
    folder = tmp_path / "lake" / "artifacts" / "acme" / "push" / "ev" / "users" / "staged"
    damaged = folder / f"{'0' * 19}1-damaged.json"
    damaged.write_bytes(b'{"table_name": "users", "messages": [')
    with pytest.raises(SourceError, match="cannot be read") as caught:
        run_extract(config, "users")
    assert "damaged.json" in str(caught.value) and "move it out of the staged folder" in str(caught.value)
    assert len(staged_tables(store, "acme", "ev")["users"]) == 2
    damaged.unlink()
    assert run_extract(config, "users").counts.records_new_inserted == 1


def test_housekeeping_removes_committed_batches_a_crash_left_and_dead_temp_files(tmp_path, receiver, monkeypatch):
    """An extract that died between its commit and removing the batches it took leaves them staged;
    housekeeping removes those (at or before the commit's cursor) and old temp files, and keeps the
    batches staged since."""
    import datetime as dt
    import os

    from prequel_dagster.lake.housekeeping import run_housekeeping
    from prequel_dagster.push.reader import PushReader

    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _push(store, [(1, 1, "a@x")])
    _push(store, [(2, 1, "b@x")])
    monkeypatch.setattr(PushReader, "after_commit", lambda self: None)  # the crash, after the commit
    assert run_extract(config, "users").counts.records_new_inserted == 2
    monkeypatch.undo()
    _push(store, [(3, 1, "c@x")])  # staged after the commit: not committed yet
    folder = tmp_path / "lake" / "artifacts" / "acme" / "push" / "ev" / "users" / "staged"
    dead = folder / f".{'0' * 20}-x.parquet.{'ab' * 16}.tmp"
    dead.write_bytes(b"half a batch")
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).timestamp()
    os.utime(dead, (old, old))

    result = run_housekeeping(config, "lake")
    assert result.removed["committed_push_batches"].files == 2
    assert result.removed["temp_files"].files == 1
    assert len(staged_tables(store, "acme", "ev")["users"]) == 1
    assert run_extract(config, "users").counts.records_new_inserted == 1
    assert _current(config) == {1: "a@x", 2: "b@x", 3: "c@x"}
