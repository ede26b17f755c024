"""A run killed at the worst moment leaves nothing half-visible; the next run continues correctly."""

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from prequel_dagster.config import load_config
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.stores import LocalStore


def _config(tmp: Path, receiver_url: str) -> dict:
    return {
        "datalakes": [{"id": "lake", "name": "l", "storage": "local", "local": {"path": "lake"}}],
        "providers": [{"id": "acme", "name": "Acme", "datalake_id": "lake", "products": ["all"]}],
        "sources": [{"id": "db", "name": "db", "vendor": "sqlite", "provider_id": "acme", "sqlite": {"path": "a.db"}}],
        "datasets": [
            {
                "id": "events",
                "name": "events",
                "source_id": "db",
                "table": {"source_table_name": "events"},
                "type": "fact",
                "fact": {"primary_key_column": "id", "created_at_column": "created_at"},
            }
        ],
        "destinations": [
            {
                "id": "app",
                "name": "app",
                "type": "webhook_batch",
                "max_records_per_minute": 10_000_000,
                "record_schema": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "integer"}, "kind": {"type": "string"}},
                },
                "webhook_batch": {"request_template": {"uri": receiver_url}, "max_records_per_batch": 1000},
            }
        ],
        "streams": [
            {
                "id": "events-app",
                "name": "e",
                "dataset_id": "events",
                "destination_id": "app",
                "mappings": [
                    {"target_field": "id", "field_type": "field", "column": {"name": "id"}},
                    {"target_field": "kind", "field_type": "field", "column": {"name": "kind"}},
                ],
            }
        ],
    }


def _make_source(path: Path, start: int, stop: int) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, kind TEXT, created_at DATETIME)")
    db.executemany(
        "INSERT INTO events VALUES (?, ?, ?)",
        [(i, f"k{i % 7}", f"2026-11-01 00:{i // 6000 % 60:02d}:{i // 100 % 60:02d}") for i in range(start, stop)],
    )
    db.commit()
    db.close()


KILL_AT_COMMIT = textwrap.dedent("""
    import json, os, signal, sys
    from prequel_dagster.config import load_config
    from prequel_dagster.engine import run_extract
    from prequel_dagster.lake import commits

    def die(self, **kwargs):  # the data files are written; the manifest is not
        os.kill(os.getpid(), signal.SIGKILL)

    commits.CommitWriter.commit = die
    config = load_config(json.loads(sys.argv[1]), base_dir=sys.argv[2])
    run_extract(config, "events")
""")


def test_kill_9_before_the_commit_point_leaves_nothing_visible(tmp_path):
    _make_source(tmp_path / "a.db", 1, 120_001)  # several source batches, so real data files get written
    with Receiver() as receiver:
        raw = _config(tmp_path, receiver.url)
        import json

        proc = subprocess.run(
            [sys.executable, "-c", KILL_AT_COMMIT, json.dumps(raw), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        storage = LocalStore(tmp_path / "lake")
        log = DatasetLog(storage, "acme", "events")
        orphans = list((tmp_path / "lake" / "lakehouse" / "acme" / "events" / "data").glob("*.parquet"))
        assert orphans, "the killed run should have written data files"
        assert log.commits() == [] and log.latest() is None  # ... that no reader sees

        config = load_config(raw, base_dir=str(tmp_path))
        assert run_load(config, "events-app").load_id is None  # nothing committed, nothing to deliver
        result = run_extract(config, "events")  # starts again from the last committed cursor (none)
        assert result.counts.records_new_inserted == 120_000 and result.commit.seq == 1
        _make_source(tmp_path / "a.db", 120_001, 120_051)
        assert run_extract(config, "events").counts.records_new_inserted == 50
        load = run_load(config, "events-app")
        ids = [r["record"]["id"] for r in receiver.store.records(stream_id="events-app")]
    assert load.counts.records_loaded == 120_050
    assert sorted(ids) == list(range(1, 120_051))  # every row once: none lost, none doubled


def test_a_torn_last_line_of_the_ack_log_is_not_taken_as_acknowledged(tmp_path):
    from prequel_dagster.lake.deliveries import LoadPlan, StreamState

    state = StreamState(LocalStore(tmp_path), "acme", "s")
    plan = LoadPlan("load1", 0, 3, acked={"0"})
    state.save_plan(plan)
    log = state.open_ack_log(plan)
    log.write(b"1\n2\n1")  # "1" again, then the kill lands in the middle of "10\n"
    log.close()
    assert state.open_plan().acked == {"0", "1", "2"}
    state.finish(plan, {})
    assert state.open_plan() is None and not LocalStore(tmp_path).exists(state.ack_log_path("load1"))


def test_the_commit_point_is_exclusive_on_disk(tmp_path):
    from .lake_contract import assert_exclusive_commits

    assert_exclusive_commits(LocalStore(tmp_path / "lake"))
