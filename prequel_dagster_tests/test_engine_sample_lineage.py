"""random-sample and per-record lineage over a real lake: SQLite extracts, loads to the reference receiver."""

import datetime as dt
import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from prequel_dagster.config import load_config
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.engine import sample as sample_module
from prequel_dagster.engine.lineage import DESTINATION_REJECTED, SCHEMA_VIOLATION, record_lineage
from prequel_dagster.engine.sample import random_sample
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.stores import LocalStore

FIELDS = ("id", "email", "score", "amount", "updated_at")


def raw_config(url: str, *, rejecting_url: str | None = None) -> dict:
    """A SQLite dimension with a cursor and a deleted flag; stream ``users-app`` requires ``email``,
    ``users-audit`` does not (and goes to ``rejecting_url`` when given)."""

    def destination(id: str, uri: str, required: list[str]) -> dict:
        return {
            "id": id,
            "name": id,
            "type": "webhook_batch",
            "max_records_per_minute": 1_000_000,
            "record_schema": {
                "type": "object",
                "required": required,
                "properties": {
                    "id": {"type": "integer"},
                    "email": {"type": ["string", "null"]} if not required else {"type": "string"},
                },
            },
            "webhook_batch": {"request_template": {"uri": uri}, "max_records_per_batch": 50},
        }

    def stream(id: str, destination_id: str) -> dict:
        return {
            "id": id,
            "name": id,
            "dataset_id": "users",
            "destination_id": destination_id,
            "mappings": [{"target_field": f, "field_type": "field", "column": {"name": f}} for f in FIELDS],
        }

    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}],
        "providers": [{"id": "acme", "name": "Acme", "datalake_id": "lake", "products": ["all"]}],
        "sources": [{"id": "db", "name": "db", "vendor": "sqlite", "provider_id": "acme", "sqlite": {"path": "a.db"}}],
        "datasets": [
            {
                "id": "users",
                "name": "users",
                "source_id": "db",
                "table": {"source_table_name": "users"},
                "type": "dimension",
                "dimension": {
                    "primary_key_column": "id",
                    "last_modified_column": "updated_at",
                    "is_deleted_column": "is_deleted",
                },
            },
            {
                "id": "codes",
                "name": "codes",
                "source_id": "db",
                "table": {"source_table_name": "codes"},
                "type": "dimension",
                "dimension": {"primary_key_column": "code", "detect_hard_deletes": True},
            },
        ],
        "destinations": [
            destination("app", url + "/app", ["id", "email"]),
            destination("audit", rejecting_url or url + "/audit", []),
        ],
        "streams": [stream("users-app", "app"), stream("users-audit", "audit")],
    }


class Source:
    """The provider's SQLite table; every change moves ``updated_at`` forward, so extracts see it."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        self.clock = dt.datetime(2026, 1, 1, 12, 0, 0)
        self.db.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, score REAL, amount NUMERIC(10, 2), "
            "updated_at DATETIME, is_deleted BOOLEAN NOT NULL DEFAULT 0, avatar BLOB)"
        )
        self.db.execute("CREATE TABLE codes (code TEXT PRIMARY KEY, label TEXT)")

    def _tick(self) -> str:
        self.clock += dt.timedelta(seconds=1)
        return self.clock.strftime("%Y-%m-%d %H:%M:%S")

    def insert(self, ids: range, *, email: str = "u{}@x.io") -> None:
        now = self._tick()
        self.db.executemany(
            "INSERT INTO users (id, email, score, amount, updated_at, avatar) VALUES (?, ?, ?, ?, ?, ?)",
            [(i, email.format(i), i / 4, f"{i}.25", now, bytes([i % 256, 1, 2])) for i in ids],
        )
        self.db.commit()

    def update(self, ids: list[int], email: str | None) -> None:
        now = self._tick()
        self.db.executemany("UPDATE users SET email = ?, updated_at = ? WHERE id = ?", [(email, now, i) for i in ids])
        self.db.commit()

    def delete(self, ids: list[int]) -> None:
        now = self._tick()
        self.db.executemany("UPDATE users SET is_deleted = 1, updated_at = ? WHERE id = ?", [(now, i) for i in ids])
        self.db.commit()

    def current(self) -> dict[int, str | None]:
        return dict(self.db.execute("SELECT id, email FROM users WHERE is_deleted = 0").fetchall())


@pytest.fixture
def world(tmp_path, receiver):
    source = Source(tmp_path / "a.db")
    config = load_config(raw_config(receiver.url), base_dir=str(tmp_path))
    return source, config, receiver, LocalStore(tmp_path / "lake")


def _ids(sample) -> list[int]:
    return [r["id"] for r in sample.records]


# ---------------------------------------------------------------------------------------------- random-sample


def test_sample_is_current_distinct_keys_from_a_lake_of_many_commits_and_batches(world, monkeypatch):
    source, config, _, storage = world
    source.insert(range(1, 61))
    run_extract(config, "users")
    for round in range(4):  # the same keys updated again and again: many versions each
        source.update(list(range(1, 21)), f"v{round}@x.io")
        run_extract(config, "users")
    source.insert(range(61, 121))
    run_extract(config, "users")
    deleted = list(range(2, 121, 3))
    source.delete(deleted)
    run_extract(config, "users")
    assert len(DatasetLog(storage, "acme", "users").commits()) == 7

    batches = []
    scan_columns = DatasetLog.scan_columns

    def counted(self, columns, **kwargs):
        for batch in scan_columns(self, columns, **kwargs):
            batches.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(sample_module, "SCAN_BATCH_ROWS", 16)  # the key pass streams in small batches
    monkeypatch.setattr(DatasetLog, "scan_columns", counted)
    current = source.current()
    sample = random_sample(config, "users", 25, seed=7)
    assert len(batches) > 10 and max(batches) <= 16
    ids = _ids(sample)
    assert len(ids) == 25 and len(set(ids)) == 25
    assert set(ids) <= set(current) and not set(ids) & set(deleted)
    assert all(r["email"] == current[r["id"]] for r in sample.records)  # each key's latest version

    everything = random_sample(config, "users", 1000, seed=7)  # more than there are: all current keys
    assert sorted(_ids(everything)) == sorted(current)

    again, other = random_sample(config, "users", 25, seed=7), random_sample(config, "users", 25, seed=8)
    assert _ids(again) == ids and set(_ids(other)) != set(ids)
    assert set(_ids(random_sample(config, "users", 25))) != set(_ids(random_sample(config, "users", 25)))


def test_sample_when_deleted_keys_crowd_out_the_first_pool(world):
    source, config, _, _ = world
    source.insert(range(1, 401))
    run_extract(config, "users")
    source.delete(list(range(1, 391)))  # ten live keys among 400
    run_extract(config, "users")
    for seed in range(5):
        assert sorted(_ids(random_sample(config, "users", 10, seed=seed))) == list(range(391, 401))
    assert len(set(_ids(random_sample(config, "users", 3, seed=1))) & set(range(391, 401))) == 3


def test_text_keys_sample_and_lineage(world):
    source, config, _, _ = world
    codes = [f"c-{i:03d}" for i in range(60)] + ["", "é", 'a"b']
    source.db.executemany("INSERT INTO codes VALUES (?, ?)", [(c, f"label {c}") for c in codes])
    source.db.commit()
    run_extract(config, "codes")
    source.db.execute("DELETE FROM codes WHERE code LIKE 'c-00%'")  # a hard delete, found by the next extract
    source.db.execute("UPDATE codes SET label = 'changed' WHERE code = 'é'")
    source.db.commit()
    run_extract(config, "codes")
    live = {c for c in codes if not c.startswith("c-00")}
    drawn = [{r["code"] for r in random_sample(config, "codes", 20, seed=s).records} for s in range(3)]
    assert all(len(d) == 20 and d <= live for d in drawn) and len({frozenset(d) for d in drawn}) == 3
    assert {r["code"] for r in random_sample(config, "codes", 1000).records} == live
    assert record_lineage(config, "codes", "é")["extract"]["data"] == {"code": "é", "label": "changed"}
    assert record_lineage(config, "codes", "c-001")["extract"]["is_deleted"] is True
    assert record_lineage(config, "codes", "nope") is None


def test_key_priorities_depend_on_the_key_and_salt_only():
    import pyarrow as pa

    text = pa.array(["", "a", "ab", "ba", "a", None, "long " * 40]).drop_null()
    p = sample_module.key_priorities(text, 1)
    assert p[1] == p[4] and len(set(p.tolist())) == 5
    assert (sample_module.key_priorities(text.slice(1, 3), 1) == p[1:4]).all()  # offsets of a slice
    assert (sample_module.key_priorities(text, 2) != p).all()
    ints = pa.array([3, 1, 3, -5], pa.int64())
    q = sample_module.key_priorities(ints, 1)
    assert q[0] == q[2] and len(set(q.tolist())) == 3
    stamps = pa.array([0, 10**12], pa.timestamp("us"))
    assert len(set(sample_module.key_priorities(stamps, 1).tolist())) == 2


def test_sample_is_uniform_over_keys_however_often_they_changed(world):
    source, config, _, _ = world
    source.insert(range(1, 41))
    run_extract(config, "users")
    busy = list(range(1, 11))
    for round in range(6):  # ten keys with seven versions each
        source.update(busy, f"r{round}@x.io")
        run_extract(config, "users")
    drawn = Counter(i for seed in range(240) for i in _ids(random_sample(config, "users", 5, seed=seed)))
    assert set(drawn) == set(range(1, 41))  # 30 draws expected per key
    busy_mean = sum(drawn[i] for i in busy) / len(busy)
    quiet_mean = sum(drawn[i] for i in range(11, 41)) / 30
    assert 0.7 < busy_mean / quiet_mean < 1.3


def test_sample_schema_and_json_ready_records(world):
    source, config, _, _ = world
    source.insert(range(1, 4))
    run_extract(config, "users")
    sample = random_sample(config, "users", 3, seed=1)
    types = {c["name"]: (c["database_type_name"], c["precision"], c["scale"]) for c in sample.schema}
    assert types == {
        "id": ("BIGINT", 0, 0),
        "email": ("VARCHAR", 0, 0),
        "score": ("DOUBLE", 0, 0),
        "amount": ("DECIMAL", 10, 2),
        "updated_at": ("TIMESTAMP", 0, 0),
        "is_deleted": ("BOOLEAN", 0, 0),
        "avatar": ("VARBINARY", 0, 0),
    }
    assert all(
        set(c) == {"name", "database_type_name", "length", "precision", "scale", "nullable"} for c in sample.schema
    )
    record = next(r for r in sample.records if r["id"] == 2)
    assert record == {
        "id": 2,
        "email": "u2@x.io",
        "score": 0.5,
        "amount": "2.25",
        "updated_at": "2026-01-01T12:00:01.000000Z",
        "is_deleted": False,
        "avatar": "AgEC",
    }
    json.dumps(sample.as_json())  # JSON as it is


def test_sample_of_an_empty_lake_and_bad_sizes(world):
    _, config, _, _ = world
    assert random_sample(config, "users", 10).as_json() == {"schema": [], "records": []}
    for size in (0, 1001, -3, True, 2.5):
        with pytest.raises(ValueError, match="from 1 to 1000"):
            random_sample(config, "users", size)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- lineage


def _delivered(receiver: Receiver, stream_id: str, record_id: int) -> list[dict]:
    return [r["record"] for r in receiver.store.records(stream_id=stream_id) if r["record"]["id"] == record_id]


def test_lineage_follows_updates_deletes_and_loads(world):
    source, config, receiver, _ = world
    source.insert(range(1, 11))
    run_extract(config, "users")
    run_load(config, "users-app")
    first = record_lineage(config, "users", "5")
    assert first is not None and first["record_id"] == "5" and first["extract"]["data"]["email"] == "u5@x.io"
    assert first["extract"]["last_extracted_at"].endswith("Z") and first["extract"]["is_deleted"] is False
    loaded = first["load"]
    assert loaded["last_loaded_at"] is not None and loaded["error"] is None
    assert [loaded["data"]] == _delivered(receiver, "users-app", 5)  # what went on the wire
    assert first["transform"]["data"]["email"] == "u5@x.io" and first["validate_schema"]["error"] is None
    audit = first["streams"][1]
    assert audit["stream_id"] == "users-audit" and audit["load"]["last_loaded_at"] is None  # not loaded yet
    assert audit["transform"]["data"] == first["transform"]["data"]
    assert {k: first[k] for k in ("transform", "validate_schema", "load")} == {
        k: first["streams"][0][k] for k in ("transform", "validate_schema", "load")
    }

    before_update = dt.datetime.now(dt.UTC)
    source.update([5], "new5@x.io")
    run_extract(config, "users")
    now = record_lineage(config, "users", "5")
    assert now["extract"]["data"]["email"] == "new5@x.io"
    assert now["extract"]["last_extracted_at"] > first["extract"]["last_extracted_at"]
    assert now["load"]["last_loaded_at"] is None and now["load"]["data"] is None  # extracted again since the load
    assert now["transform"]["data"]["email"] == "new5@x.io"
    then = record_lineage(config, "users", "5", as_of=before_update)
    assert then["extract"]["data"]["email"] == "u5@x.io" and then["as_of"] is not None
    assert then["load"]["last_loaded_at"] == loaded["last_loaded_at"]
    assert record_lineage(config, "users", "5", as_of=before_update - dt.timedelta(days=1)) is None

    source.delete([7])
    run_extract(config, "users")
    gone = record_lineage(config, "users", "7")
    assert gone["extract"]["is_deleted"] is True and gone["load"]["is_deleted"] is True
    assert gone["extract"]["data"]["email"] == "u7@x.io"  # the last values it had
    assert record_lineage(config, "users", "7", as_of=before_update)["extract"]["is_deleted"] is False

    run_load(config, "users-app")
    after = record_lineage(config, "users", "5")
    assert after["load"]["last_loaded_at"] > loaded["last_loaded_at"]
    assert [after["load"]["data"]] == _delivered(receiver, "users-app", 5)[-1:]
    deleted_sent = [r for r in receiver.store.records(stream_id="users-app") if r["is_deleted"]]
    assert [r["record"]["id"] for r in deleted_sent] == [7]
    assert record_lineage(config, "users", "7")["load"]["last_loaded_at"] is not None


def test_lineage_shows_the_schema_violation_and_the_dead_letter(world):
    source, config, receiver, _ = world
    source.insert(range(1, 6))
    source.update([3], None)  # the app's record_schema requires email
    run_extract(config, "users")
    result = run_load(config, "users-app")
    assert result.counts.records_errored == 1
    lineage = record_lineage(config, "users", "3")
    violation = lineage["validate_schema"]["error"]
    assert violation["error_code"] == SCHEMA_VIOLATION and "email" in violation["error_trace"]
    assert lineage["load"]["error"]["error_code"] == SCHEMA_VIOLATION
    assert lineage["load"]["error"]["error_trace"].startswith("record_schema:")
    assert lineage["load"]["last_loaded_at"] is None and lineage["load"]["data"] is None
    assert lineage["validate_schema"]["last_validated_at"] is not None  # the load checked it
    assert not _delivered(receiver, "users-app", 3)
    audit = lineage["streams"][1]  # the same record is fine for a stream without that requirement
    assert audit["validate_schema"]["error"] is None and audit["load"]["error"] is None
    assert record_lineage(config, "users", "4")["load"]["error"] is None  # its neighbours went through

    source.update([3], "fixed@x.io")  # a new version: the old one's dead letter is not its error
    run_extract(config, "users")
    fixed = record_lineage(config, "users", "3")
    assert fixed["validate_schema"]["error"] is None and fixed["load"]["error"] is None
    run_load(config, "users-app")
    assert record_lineage(config, "users", "3")["load"]["data"]["email"] == "fixed@x.io"


def test_lineage_shows_a_destination_rejection(tmp_path):
    source = Source(tmp_path / "a.db")
    source.insert(range(1, 4))
    with Receiver() as good, Receiver(fault=lambda request: 400) as refusing:
        config = load_config(raw_config(good.url, rejecting_url=refusing.url + "/audit"), base_dir=str(tmp_path))
        run_extract(config, "users")
        run_load(config, "users-audit")
        lineage = record_lineage(config, "users", "2")
    audit = lineage["streams"][1]
    assert audit["load"]["error"]["error_code"] == DESTINATION_REJECTED and audit["load"]["last_loaded_at"] is None
    assert audit["validate_schema"]["error"] is None


def test_lineage_of_unknown_and_malformed_ids(world):
    source, config, _, _ = world
    assert record_lineage(config, "users", "1") is None  # nothing extracted yet
    source.insert(range(1, 3))
    run_extract(config, "users")
    assert record_lineage(config, "users", "99") is None
    assert record_lineage(config, "users", "002")["record_id"] == "2"
    with pytest.raises(ValueError, match=r"'id' \(BIGINT\)"):
        record_lineage(config, "users", "abc")
