"""Push datasets: staged batches committed into the dataset by an extract, the highest ``sequence``
winning per key whatever the arrival order (within a request and across requests), re-pushes and
older versions changing nothing, and the stream delivering what was pushed."""

import random

import orjson
import pytest

from prequel_dagster.builder import build_definitions
from prequel_dagster.config import load_config
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.changes import latest_versions
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.push.staging import stage, staged_tables
from prequel_dagster.push.wire import parse_batch
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


def _push(store, messages: list[tuple[int, int, str]]) -> None:
    body = {
        "table_name": "users",
        "schema": SCHEMA,
        "key_names": ["id"],
        "messages": [
            {"action": "upsert", "sequence": seq, "data": {"id": i, "email": email}} for i, seq, email in messages
        ],
    }
    stage(store, "acme", "ev", parse_batch(orjson.dumps(body), "application/json"))


def _current(config) -> dict[int, str]:
    log = DatasetLog(LocalStore(config.resolve_path(config.datalake("lake").local.path)), "acme", "users")
    found = latest_versions(log, __import__("pyarrow").array([1, 2, 3, 4]), "id")
    return dict(zip(found.column("id").to_pylist(), found.column("email").to_pylist()))


def test_sequence_wins_whatever_the_arrival_order_and_the_stream_delivers(tmp_path, receiver):
    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _push(store, [(1, 10, "one@ten"), (2, 5, "two@five"), (1, 7, "one@seven")])  # within a request: 10 wins
    _push(store, [(3, 1, "three@one"), (2, 9, "two@nine")])
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
        assert push("pairs", ["id", "n"], [(1, 1)]) == 201  # a composite key: declared by hand
        datasets = [d for d in service.config().datasets if d.source_id == "ev"]
        assert [(d.push.table_name, d.primary_key, d.method) for d in datasets] == [("orders", "id", "push")]
        result = run_extract(service.config(), datasets[0].id)
        assert result.counts.records_new_inserted == 2
        log = DatasetLog(LocalStore(tmp_path / "lake"), "acme", datasets[0].id)
        found = latest_versions(log, __import__("pyarrow").array([1, 2]), "id")
        assert dict(zip(found.column("id").to_pylist(), found.column("n").to_pylist())) == {1: 2, 2: 1}
    catalog.close()


def test_a_field_whose_type_changes_between_batches_stops_the_commit_with_a_clear_message(tmp_path, receiver):
    from prequel_dagster.config.errors import SourceError

    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _push(store, [(1, 1, "a@x")])
    body = {
        "table_name": "users",
        "schema": {"properties": {"id": {"type": "integer"}, "email": {"type": "integer"}}},
        "key_names": ["id"],
        "messages": [{"action": "upsert", "sequence": 2, "data": {"id": 2, "email": 7}}],
    }
    stage(store, "acme", "ev", parse_batch(orjson.dumps(body), "application/json"))
    with pytest.raises(SourceError, match="disagree on a field's type") as caught:
        run_extract(config, "users")
    assert "users" in str(caught.value) and "stay staged" in str(caught.value)
    assert len(staged_tables(store, "acme", "ev")["users"]) == 2  # nothing dropped


def test_a_write_killed_mid_way_leaves_nothing_a_reader_takes(tmp_path, receiver):
    """The temporary file of a staging write that was killed before its atomic link is never read."""
    config = load_config(_config(tmp_path, receiver.url))
    store = LocalStore(tmp_path / "lake")
    _push(store, [(1, 1, "a@x")])
    folder = tmp_path / "lake" / "artifacts" / "acme" / "push" / "ev" / "users" / "staged"
    (folder / ".00000000000000000001-dead.parquet.0123.tmp").write_bytes(b"")  # what SIGKILL mid-write leaves
    assert len(staged_tables(store, "acme", "ev")["users"]) == 1
    assert run_extract(config, "users").counts.records_new_inserted == 1
