"""The extract benchmark (``python benchmarks/run.py extract``): PostgreSQL -> datalake, against the
COPY floor and dlt, each measurement in a fresh child process (so peak RSS is its own).

Children are ``python benchmarks/extract.py <what> <json>``; each prints one JSON line with
``seconds`` (the work only, imports excluded) and ``peak_rss_mb``.
"""

import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TABLE_SQL = """
CREATE TABLE events (
  id bigint PRIMARY KEY, provider_id text, user_id bigint, event_type text, amount numeric(12,2),
  is_active boolean, payload jsonb, created_at timestamptz, updated_at timestamptz);
INSERT INTO events
SELECT g, 'prov_' || (g % 50), (g * 7919) % 100000, (ARRAY['click','view','purchase','signup'])[1 + g % 4],
       ((g % 100000) / 100.0)::numeric(12,2), g % 3 <> 0,
       jsonb_build_object('k', g, 'tag', 't' || (g % 10), 'nested', jsonb_build_object('a', g % 5)),
       timestamptz '2026-01-01' + g * interval '1 second', timestamptz '2026-01-01' + g * interval '1 second'
FROM generate_series(1::bigint, {rows}::bigint) g;
CREATE INDEX ON events (updated_at);
"""
CHANGE_SQL = "UPDATE events SET amount = amount + 1, updated_at = timestamptz '2030-01-01' + id * interval '1 ms' WHERE id % 10 = 0"


def config(pg: dict, lake: str) -> dict:
    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": lake}}],
        "providers": [{"id": "bench", "name": "bench", "datalake_id": "lake", "products": ["all"]}],
        "sources": [
            {
                "id": "pg",
                "name": "pg",
                "vendor": "postgres",
                "provider_id": "bench",
                "postgres": {
                    "host": pg["host"],
                    "port": pg["port"],
                    "database": "bench",
                    "auth_method": "password_auth",
                    "password_auth": {"username": "postgres", "password": "${BENCH_PG_PASSWORD}"},
                    "disable_ssl": True,
                },
            }
        ],
        "datasets": [
            {
                "id": "events",
                "name": "events",
                "source_id": "pg",
                "method": "table",
                "table": {"source_table_namespace": "public", "source_table_name": "events"},
                "type": "dimension",
                "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
            }
        ],
    }


# ---------------------------------------------------------------- children: one measurement each


def _copy(args: dict):
    import psycopg

    return lambda: _copy_run(psycopg, args)


def _copy_run(psycopg, args: dict) -> None:
    with psycopg.connect(args["dsn"]) as conn:
        query = (
            "COPY (SELECT * FROM events"
            + (f" WHERE updated_at >= '{args['since']}'" if args.get("since") else "")
            + ") TO STDOUT (FORMAT binary)"
        )
        with conn.cursor().copy(query) as copy:
            for _ in copy:
                pass


def _ours(args: dict):
    # prequel_dagster before anything that imports pyarrow, as in a Dagster step: it picks Arrow's allocator
    from prequel_dagster.config import load_config  # noqa: I001
    from prequel_dagster.engine import run_extract

    import adbc_driver_postgresql.dbapi  # noqa: F401  (imported by the first read otherwise)

    os.environ["BENCH_PG_PASSWORD"] = args["pg"]["password"]
    cfg = load_config(config(args["pg"], args["lake"]), base_dir=args["lake"])

    def work() -> None:
        result = run_extract(cfg, "events")
        print(json.dumps({"counts": result.counts.as_dict(), "rows_written": result.rows_written}), file=sys.stderr)

    return work


def _dlt(args: dict):
    import dlt
    from dlt.sources.sql_database import sql_table

    return lambda: _dlt_run(dlt, sql_table, args)


def _dlt_run(dlt, sql_table, args: dict) -> None:
    os.environ.update(
        {
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "RUNTIME__LOG_LEVEL": "WARNING",
            "DATA_WRITER__DISABLE_COMPRESSION": "false",
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{args['backend']}",
        pipelines_dir=args["work"] + "/pipelines",
        destination=dlt.destinations.filesystem(bucket_url="file://" + args["work"] + "/out"),
        dataset_name="bench",
    )
    source = sql_table(credentials=args["dsn"], table="events", schema="public", backend=args["backend"])
    pipeline.run(source, loader_file_format="parquet")


CHILDREN = {"copy": _copy, "ours": _ours, "dlt": _dlt}


def child_main() -> None:
    what, args = sys.argv[1], json.loads(sys.argv[2])
    work = CHILDREN[what](args)  # imports happen here, before the clock
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# ---------------------------------------------------------------- parent


def measure(what: str, **args) -> dict:
    proc = subprocess.run([sys.executable, __file__, what, json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(rows: int, repeats: int, peers: bool) -> dict[str, float]:
    import statistics

    import psycopg

    from prequel_dagster.lake.commits import DatasetLog
    from prequel_dagster.stores import LocalStore
    from prequel_dagster_tests.servers import postgres_server

    work = Path(tempfile.mkdtemp(prefix="prequel-extract-bench-"))
    try:
        with postgres_server() as pg:
            dsn = pg["dsn"].rsplit("/", 1)[0] + "/bench"
            with psycopg.connect(pg["dsn"], autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench")
            print(f"creating events with {rows:,} rows ...", flush=True)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(TABLE_SQL.format(rows=rows))
                conn.execute("VACUUM ANALYZE events")
            base = str(work / "base-lake")
            first = measure("ours", pg=pg, lake=base)  # the lake the incremental runs start from
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(CHANGE_SQL)
                conn.execute("VACUUM ANALYZE events")
                changed = conn.execute(
                    "SELECT count(*) FROM events WHERE updated_at >= timestamptz '2030-01-01'"
                ).fetchone()[0]
            print(
                f"  first extract {first['seconds']:.2f}s; then changed {changed:,} rows ({changed / rows:.0%})",
                flush=True,
            )
            # the incremental re-reads from its cursor minus the 30 s lookback: its floor reads the same rows
            cursor = DatasetLog(LocalStore(Path(base)), "bench", "events").latest().cursor
            since = (cursor - dt.timedelta(seconds=30)).isoformat()

            results: dict[str, list[dict]] = {}
            for rep in range(repeats):
                plan = [
                    ("copy_full", "copy", {"dsn": dsn}),
                    ("ours_full", "ours", {"pg": pg, "lake": str(work / f"lake-full-{rep}")}),
                    ("copy_incremental", "copy", {"dsn": dsn, "since": since}),
                    ("ours_incremental", "ours", {"pg": pg, "lake": str(work / f"lake-inc-{rep}")}),
                ]
                if peers:
                    plan += [
                        ("dlt_pyarrow", "dlt", {"dsn": dsn, "backend": "pyarrow", "work": str(work / f"dlt-pa-{rep}")}),
                        (
                            "dlt_connectorx",
                            "dlt",
                            {"dsn": dsn, "backend": "connectorx", "work": str(work / f"dlt-cx-{rep}")},
                        ),
                    ]
                for name, what, args in plan:
                    if name == "ours_incremental":
                        shutil.copytree(base, args["lake"])
                    results.setdefault(name, []).append(measure(what, **args))
                    for key in ("lake", "work"):
                        if key in args:
                            shutil.rmtree(args[key], ignore_errors=True)
                print(
                    f"  rep {rep + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.2f}s" for k, v in results.items()),
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in results.items()}
    figures = {
        "extract_full_seconds": med["ours_full"],
        "copy_full_seconds": med["copy_full"],
        "extract_full_vs_copy": med["ours_full"] / med["copy_full"],
        "extract_incremental_vs_copy": med["ours_incremental"] / med["copy_incremental"],
    }
    if peers:
        figures["speedup_vs_dlt_pyarrow"] = med["dlt_pyarrow"] / med["ours_full"]
        figures["speedup_vs_dlt_connectorx"] = med["dlt_connectorx"] / med["ours_full"]
    figures["extract_incremental_peak_rss_mb"] = max(r["peak_rss_mb"] for r in results["ours_incremental"])
    figures["extract_peak_rss_mb"] = max(r["peak_rss_mb"] for r in results["ours_full"])
    return figures


if __name__ == "__main__":
    child_main()
