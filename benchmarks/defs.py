"""Definitions at scale: ``dagster definitions validate`` on configs of N providers, and the
orchestration cost per provider of the scheduled path.

Each provider has a SQLite source with three datasets and one stream (the shape of the issue's
measurement). The whole ``dagster definitions validate`` process is timed, with its peak memory.
"""

import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

STREAM_SCHEMA = {
    "type": "object",
    "required": ["id"],
    "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
}


def write_config(directory: Path, providers: int, *, datasets: int = 3, rows: int = 0) -> Path:
    """A config of ``providers`` providers, each with its own SQLite file, ``datasets`` datasets and one stream."""
    config: dict = {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}],
        "providers": [],
        "sources": [],
        "datasets": [],
        "streams": [],
        "destinations": [
            {
                "id": "app",
                "name": "app",
                "type": "webhook_batch",
                "max_records_per_minute": 10_000_000,
                "record_schema": STREAM_SCHEMA,
                "webhook_batch": {"request_template": {"uri": "${RECEIVER_URL:-http://127.0.0.1:9}/b"}},
            }
        ],
    }
    for p in range(providers):
        pid = f"tenant{p:05d}"
        config["providers"].append({"id": pid, "name": pid, "datalake_id": "lake", "products": ["all"]})
        config["sources"].append(
            {"id": f"{pid}-db", "name": pid, "vendor": "sqlite", "provider_id": pid, "sqlite": {"path": f"db/{pid}.db"}}
        )
        for d in range(datasets):
            config["datasets"].append(
                {
                    "id": f"{pid}-t{d}",
                    "name": f"t{d}",
                    "source_id": f"{pid}-db",
                    "method": "table",
                    "table": {"source_table_name": f"t{d}"},
                    "type": "dimension",
                    "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
                    "frequency_minutes": 60,
                }
            )
        config["streams"].append(
            {
                "id": f"{pid}-s",
                "name": "s",
                "dataset_id": f"{pid}-t0",
                "destination_id": "app",
                "mappings": [
                    {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}},
                    {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
                ],
            }
        )
        if rows:
            (directory / "db").mkdir(exist_ok=True)
            db = sqlite3.connect(directory / "db" / f"{pid}.db")
            for d in range(datasets):
                db.execute(f"CREATE TABLE t{d} (id INTEGER PRIMARY KEY, email TEXT, updated_at TEXT)")
                db.executemany(
                    f"INSERT INTO t{d} VALUES (?,?,?)",
                    [(i, f"u{i}@{pid}.test", "2026-11-01 00:00:00") for i in range(rows)],
                )
            db.commit()
            db.close()
    path = directory / "prequel.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def validate_seconds(config: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a whole ``dagster definitions validate`` process."""
    env = {**os.environ, "PREQUEL_CONFIG": str(config), "DAGSTER_DISABLE_TELEMETRY": "1"}
    env.pop("DAGSTER_HOME", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "prequel_dagster.definitions"],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) / 1024


def run(sizes: list[int]) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="prequel-defs-") as tmp:
        for n in sizes:
            directory = Path(tmp) / str(n)
            directory.mkdir()
            seconds, rss = validate_seconds(write_config(directory, n))
            print(f"  {n} providers: {seconds:.1f}s, peak {rss:.0f} MB", flush=True)
            figures[f"defs_load_seconds_{n}"] = seconds
            figures[f"defs_peak_rss_mb_{n}"] = rss
    return figures


def orchestration_seconds_per_provider(providers: int = 40, rows: int = 100) -> float:
    """The scheduled path as a user gets it by default: the schedule's tick requests one run per
    provider, and each run is launched in its own process, as Dagster's default run launcher does
    (``dagster asset materialize`` of the run's selection: the provider's extracts, then its stream
    and checks, with the default in-process executor). Wall time over all runs, divided by ``providers``."""
    import dagster as dg

    from prequel_dagster import build_definitions, load_config
    from prequel_dagster.delivery.receiver import Receiver

    with tempfile.TemporaryDirectory(prefix="prequel-orch-") as tmp, Receiver() as receiver:
        directory = Path(tmp)
        config_path = write_config(directory, providers, datasets=1, rows=rows)
        env = {
            **os.environ,
            "PREQUEL_CONFIG": str(config_path),
            "RECEIVER_URL": receiver.url,
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "DAGSTER_HOME": str(directory / "home"),
        }
        (directory / "home").mkdir()
        (directory / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ["RECEIVER_URL"] = receiver.url
        defs = build_definitions(load_config(config_path))
        (schedule,) = [s for s in defs.schedules if s.name == "prequel_extract_every_60_minutes"]
        with dg.instance_for_test() as instance, dg.build_schedule_context(instance=instance) as context:
            requests = schedule.evaluate_tick(context).run_requests
        started = time.perf_counter()
        for request in requests:
            # the run's extracts and everything downstream of them (the provider's streams and checks)
            selection = ",".join(f"{key.to_user_string()}*" for key in request.asset_selection or [])
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "dagster",
                    "asset",
                    "materialize",
                    "-m",
                    "prequel_dagster.definitions",
                    "--select",
                    selection,
                ],
                capture_output=True,
                text=True,
                env=env,
                cwd=directory,
            )
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
        seconds = time.perf_counter() - started
        delivered = len(receiver.store.records())
    if delivered != providers * rows:
        raise SystemExit(f"delivered {delivered} records, expected {providers * rows}")
    return seconds / len(requests)
