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

REPO = Path(__file__).resolve().parents[1]
SCHEDULE = "prequel_extract_every_1_minutes"
STREAM_SCHEMA = {
    "type": "object",
    "required": ["id"],
    "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
}


def write_config(
    directory: Path, providers: int, *, datasets: int = 3, rows: int = 0, frequency_minutes: int = 60
) -> Path:
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
                    "frequency_minutes": frequency_minutes,
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


def orchestration_seconds_per_provider(
    providers: int = 40, rows: int = 100, *, launcher: str = "repo", timeout: float = 900
) -> float:
    """The scheduled path as a user gets it by default: ``dagster-daemon run`` on the repo's
    ``dagster.yaml`` (its run queue, concurrency limits and run launcher) and ``workspace.yaml``
    shape, and a schedule whose first tick requests one run per provider (its extract, then its
    stream and checks). Wall time from the tick's first run being created to its last run ending,
    divided by ``providers``. ``launcher="dagster-default"`` drops the repo's run launcher: Dagster's
    default, a new Python process per run (the baseline)."""
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

    from prequel_dagster.delivery.receiver import Receiver

    with tempfile.TemporaryDirectory(prefix="prequel-orch-") as tmp, Receiver() as receiver:
        directory = Path(tmp)
        config_path = write_config(directory, providers, datasets=1, rows=rows, frequency_minutes=1)
        home = directory / "home"
        home.mkdir()
        instance_config = yaml.safe_load((REPO / "dagster.yaml").read_text())
        instance_config["storage"] = {"sqlite": {"base_dir": str(home / "storage")}}
        for key in ("local_artifact_storage", "compute_logs"):
            instance_config[key]["config"]["base_dir"] = str(home / "storage")
        if launcher == "dagster-default":
            instance_config.pop("run_launcher", None)
        (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
        workspace = directory / "workspace.yaml"
        module = {"module_name": "prequel_dagster.definitions", "working_directory": str(directory)}
        workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": module}]}))
        env = {
            **os.environ,
            "PREQUEL_CONFIG": str(config_path),
            "RECEIVER_URL": receiver.url,
            "DAGSTER_DISABLE_TELEMETRY": "1",
            "DAGSTER_HOME": str(home),
        }
        log = (directory / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
            env=env,
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        try:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                records = _first_tick_runs(instance, providers, daemon, deadline, directory / "daemon.log")
                for state in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE):
                    # one tick is the measurement: later ticks would compete for the CPU
                    instance.update_instigator_state(state.with_status(InstigatorStatus.STOPPED))
                while not all(r.dagster_run.is_finished for r in records):
                    _check_alive(daemon, deadline, directory / "daemon.log")
                    time.sleep(0.5)
                    records = instance.get_run_records(dg.RunsFilter(run_ids=[r.dagster_run.run_id for r in records]))
        finally:
            daemon.terminate()
            daemon.wait(60)
            log.close()
        failed = [r.dagster_run.run_id for r in records if not r.dagster_run.is_success]
        if failed:
            raise SystemExit(f"{len(failed)} runs failed, e.g. {failed[0]}; see {directory}")
        started = min(r.create_timestamp.timestamp() for r in records)
        ended = max(r.end_time or 0.0 for r in records)
        if os.environ.get("PREQUEL_BENCH_VERBOSE"):
            for r in sorted(records, key=lambda r: r.start_time or 0):
                print(
                    f"    run {r.dagster_run.tags['prequel/provider']}: queued {r.create_timestamp.timestamp() - started:6.2f}"
                    f" started {(r.start_time or 0) - started:6.2f} ended {(r.end_time or 0) - started:6.2f}"
                )
        delivered = len(receiver.store.records())
    if delivered != providers * rows:
        raise SystemExit(f"delivered {delivered} records, expected {providers * rows}")
    return (ended - started) / providers


def _first_tick_runs(instance, providers: int, daemon, deadline: float, log: Path) -> list:
    """The runs of the schedule's first tick, once it has requested all of them."""
    import dagster as dg

    while True:
        _check_alive(daemon, deadline, log)
        records = instance.get_run_records(dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE}))
        by_tick: dict[str, list] = {}
        for record in records:
            tick = record.dagster_run.tags.get("dagster/run_key", "").split(":", 1)[-1]
            by_tick.setdefault(tick, []).append(record)
        if by_tick:
            first = by_tick[min(by_tick)]
            if len(first) >= providers:
                return first
        time.sleep(0.5)


def _check_alive(daemon, deadline: float, log: Path) -> None:
    if daemon.poll() is not None:
        raise SystemExit(f"dagster-daemon exited ({daemon.returncode}):\n{log.read_text()[-3000:]}")
    if time.monotonic() > deadline:
        raise SystemExit(f"the runs did not finish in time; daemon log:\n{log.read_text()[-3000:]}")
