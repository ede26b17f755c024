"""Benchmarks, each printing ratios against a baseline measured in the same run.

    python benchmarks/run.py delivery [--records 1000000] [--repeats 3]
    python benchmarks/run.py growth [--commits 2000] [--compact-every 50]   (see growth.py)
    python benchmarks/run.py defs [--providers 1000 5000] [--no-baseline]    (see defs.py)
    python benchmarks/run.py push [--records 1000000] [--batch 5000] [--clients 4] [--workers 2] [--rounds 5]   (see push.py)
    python benchmarks/run.py api [--providers 1000] [--creates 300]          (see api.py)
    python benchmarks/run.py rules [--rows 2000000] [--repeats 3]            (see rules.py)

delivery: 1M records from the lake, mapped by 10 mappings (3 expressions), validated and delivered
to a loopback endpoint (its own process) that parses each body, against the ceiling of the same
endpoint fed the same envelopes, prebuilt (captured from one of our loads before timing), by a
plain httpx client; the same pair
against an endpoint that discards bodies unparsed; and the mapping alone against a per-row Python
loop over the same rows.
The last lines are ``key=value`` figures.
"""

import argparse
import datetime as dt
import decimal
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prequel_dagster.config import load_config
from prequel_dagster.engine import run_load
from prequel_dagster.lake.commits import OP_COLUMN, DatasetLog
from prequel_dagster.stores import LocalStore
from prequel_dagster.transform.mapping import StreamMapper

MAPPINGS = [
    {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}},
    {"target_field": "full_name", "field_type": "expression", "expression": {"expr": 'first_name + " " + last_name'}},
    {"target_field": "tier", "field_type": "expression", "expression": {"expr": 'IF(amount > 100, "high", "low")'}},
    *[
        {"target_field": c, "field_type": "field", "column": {"name": c}}
        for c in ("email", "amount", "is_active", "created_at", "country", "score", "plan")
    ],
]
SCHEMA = {
    "type": "object",
    "required": ["id", "email"],
    "properties": {
        "id": {"type": "string"},
        "full_name": {"type": "string"},
        "tier": {"type": "string", "enum": ["high", "low"]},
        "email": {"type": "string"},
        "amount": {"type": "number"},
        "is_active": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "country": {"type": "string"},
        "score": {"type": "number"},
        "plan": {"type": "string"},
    },
}


def make_rows(n: int, start: int = 0) -> pa.Table:
    ids = pa.array(range(start, start + n), pa.int64())
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return pa.table(
        {
            "id": ids,
            "email": pa.array([f"user{i}@example.com" for i in range(start, start + n)]),
            "first_name": pa.array([("Ann", "Bob", "Cleo", "Dev")[i % 4] for i in range(n)]),
            "last_name": pa.array([("Lee", "Ng", "O'Neil", "Silva")[i % 4] for i in range(n)]),
            "amount": pa.array([decimal.Decimal(i % 20000) / 100 for i in range(n)], pa.decimal128(12, 2)),
            "is_active": pa.array([i % 3 != 0 for i in range(n)]),
            "created_at": pa.array([base + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us", "UTC")),
            "country": pa.array([("US", "DE", "FR", "BR", "JP")[i % 5] for i in range(n)]),
            "score": pa.array([(i % 1000) / 7 for i in range(n)], pa.float64()),
            "plan": pa.array([("free", "pro", "team")[i % 3] for i in range(n)]),
            OP_COLUMN: pa.array(["insert"] * n),
        }
    )


def build_lake(root: Path, records: int) -> None:
    log = DatasetLog(LocalStore(root), "bench", "events")
    writer = log.begin()
    chunk = 100_000
    for start in range(0, records, chunk):
        writer.write(make_rows(min(chunk, records - start), start))
    writer.commit(cursor=None, counts={}, row_count=records, run_id=None)


def config(root: Path, url: str):
    return load_config(
        {
            "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(root)}}],
            "providers": [{"id": "bench", "name": "bench", "datalake_id": "lake", "products": ["all"]}],
            "sources": [
                {"id": "db", "name": "db", "vendor": "sqlite", "provider_id": "bench", "sqlite": {"path": "x.db"}}
            ],
            "datasets": [
                {
                    "id": "events",
                    "name": "events",
                    "source_id": "db",
                    "table": {"source_table_name": "e"},
                    "type": "dimension",
                    "dimension": {"primary_key_column": "id"},
                }
            ],
            "destinations": [
                {
                    "id": "sink",
                    "name": "sink",
                    "type": "webhook_batch",
                    "record_schema": SCHEMA,
                    "max_records_per_minute": 10**9,
                    "webhook_batch": {
                        "request_template": {"uri": url},
                        "max_records_per_batch": 1000,
                        "max_bytes_per_batch": 10_000_000,
                    },
                }
            ],
            "streams": [
                {
                    "id": "bench-stream",
                    "name": "s",
                    "dataset_id": "events",
                    "destination_id": "sink",
                    "mappings": MAPPINGS,
                }
            ],
        },
        base_dir=root,
    )


def start_sink(mode: str = "parse") -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("sink.py")), mode], stdout=subprocess.PIPE, text=True
    )
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/batches"


def run_ours(cfg, root: Path) -> tuple[float, int, int]:
    shutil.rmtree(root / "artifacts", ignore_errors=True)
    started = time.perf_counter()
    result = run_load(cfg, "bench-stream")
    elapsed = time.perf_counter() - started
    assert result.counts.records_errored == 0, result.counts
    return elapsed, result.counts.records_loaded, result.counts.bytes_sent


def prebuilt_bodies(cfg, root: Path) -> list[bytes]:
    """The very request bodies our load sends (same records, count and size), captured before any clock starts."""
    bodies: list[bytes] = []

    def capture(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(202)

    shutil.rmtree(root / "artifacts", ignore_errors=True)
    run_load(cfg, "bench-stream", transport=httpx.MockTransport(capture))
    return bodies


def run_ceiling(url: str, bodies: list[bytes]) -> float:
    with httpx.Client() as client:
        started = time.perf_counter()
        for i, body in enumerate(bodies):
            response = client.post(
                url, content=body, headers={"Content-Type": "application/json", "Idempotency-Key": str(i)}
            )
            assert response.status_code == 202
        return time.perf_counter() - started


def python_mapping(table: pa.Table) -> list[dict]:
    out = []
    for row in table.to_pylist():
        out.append(
            {
                "id": None if row["id"] is None else str(row["id"]),
                "full_name": None
                if row["first_name"] is None or row["last_name"] is None
                else row["first_name"] + " " + row["last_name"],
                "tier": "high" if row["amount"] is not None and row["amount"] > 100 else "low",
                "email": row["email"],
                "amount": row["amount"],
                "is_active": row["is_active"],
                "created_at": row["created_at"],
                "country": row["country"],
                "score": row["score"],
                "plan": row["plan"],
            }
        )
    return out


def delivery(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="prequel-bench-"))
    sinks = {mode: start_sink(mode) for mode in ("parse", "discard")}
    try:
        print(f"building a lake of {args.records:,} records ...", flush=True)
        build_lake(root, args.records)
        bodies = prebuilt_bodies(config(root, sinks["parse"][1]), root)
        rates: dict[str, list[float]] = {k: [] for k in ("ours", "ceiling", "ours_discard", "ceiling_discard")}
        for rep in range(args.repeats):  # interleaved: ours, then the ceiling, against each endpoint
            for mode, suffix in (("parse", ""), ("discard", "_discard")):
                cfg = config(root, sinks[mode][1])
                seconds, loaded, total_bytes = run_ours(cfg, root)
                rates["ours" + suffix].append(loaded / seconds)
                assert total_bytes == sum(map(len, bodies)), "the ceiling must post what we post"
                rates["ceiling" + suffix].append(args.records / run_ceiling(sinks[mode][1], bodies))
            print(
                f"  rep {rep + 1}: "
                + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items())
                + f" ({total_bytes / loaded:.0f} bytes/record)",
                flush=True,
            )

        cfg = config(root, sinks["parse"][1])
        table = pa.concat_tables(
            pa.Table.from_batches([b]) for b in DatasetLog(LocalStore(root), "bench", "events").scan()
        ).slice(0, min(args.records, 200_000))
        mapper = StreamMapper(cfg.stream("bench-stream"))
        vec, py = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            mapper.apply(table)
            vec.append(time.perf_counter() - t)
            t = time.perf_counter()
            python_mapping(table)
            py.append(time.perf_counter() - t)
        print(
            f"  mapping {table.num_rows:,} rows: vectorised {statistics.median(vec):.3f}s, "
            f"per-row Python {statistics.median(py):.3f}s"
        )
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"delivery_records_per_second={med['ours']:.0f}")
        print(f"ceiling_records_per_second={med['ceiling']:.0f}")
        print(f"delivery_vs_discard_ceiling={med['ours_discard'] / med['ceiling_discard']:.2f}")
        print(f"delivery_vs_ceiling={med['ours'] / med['ceiling']:.2f}")
        print(f"mapping_speedup_vs_python={statistics.median(py) / statistics.median(vec):.1f}")
    finally:
        for proc, _ in sinks.values():
            proc.terminate()
        shutil.rmtree(root, ignore_errors=True)


def extract(args: argparse.Namespace) -> None:
    from extract import run as run_extract_benchmark

    figures = run_extract_benchmark(args.rows, args.repeats, peers=not args.no_peers)
    for key, value in figures.items():
        print(f"{key}={value:.2f}")


def growth(args: argparse.Namespace) -> None:
    from growth import run as run_growth_benchmark

    figures = run_growth_benchmark(args.commits, args.compact_every, args.window)
    for key, value in figures.items():
        print(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}")


def defs(args: argparse.Namespace) -> None:
    from defs import orchestration_seconds_per_provider
    from defs import run as run_defs_benchmark

    figures = run_defs_benchmark(args.providers)
    n = args.orchestration_providers
    figures["orchestration_seconds_per_provider"] = orchestration_seconds_per_provider(n)
    print(f"  {n} providers, scheduled, repo's dagster.yaml: {figures['orchestration_seconds_per_provider']:.2f}s each")
    if not args.no_baseline:
        baseline = orchestration_seconds_per_provider(n, launcher="dagster-default")
        print(f"  {n} providers, scheduled, Dagster's default launcher (a new process per run): {baseline:.2f}s each")
        figures["orchestration_seconds_per_provider_dagster_default_launcher"] = baseline
        figures["orchestration_speedup_vs_default_launcher"] = baseline / figures["orchestration_seconds_per_provider"]
    for key, value in figures.items():
        print(f"{key}={value:.2f}")


def push(args: argparse.Namespace) -> None:
    from push import push as run_push_benchmark

    run_push_benchmark(args.records, args.batch, args.clients, args.workers, args.rounds)


def api(args: argparse.Namespace) -> None:
    from api import run as run_api_benchmark

    figures = run_api_benchmark(
        args.providers, args.creates, repeats=args.repeats, api_port=args.api_port, dagster_port=args.dagster_port
    )
    for key, value in figures.items():
        print(f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}")


def rules(args: argparse.Namespace) -> None:
    from rules import rules as run_rules_benchmark

    run_rules_benchmark(args.rows, args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="which", required=True)
    p = sub.add_parser("delivery")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=delivery)
    p = sub.add_parser("extract")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-peers", action="store_true", help="skip dlt (needs the bench extra)")
    p.set_defaults(func=extract)
    p = sub.add_parser("growth")
    p.add_argument("--commits", type=int, default=2_000)
    p.add_argument("--compact-every", type=int, default=50)
    p.add_argument("--window", type=int, default=40)
    p.set_defaults(func=growth)
    p = sub.add_parser("defs")
    p.add_argument("--providers", type=int, nargs="+", default=[1_000, 5_000])
    p.add_argument("--orchestration-providers", type=int, default=40)
    p.add_argument("--no-baseline", action="store_true", help="skip the run with Dagster's default run launcher")
    p.set_defaults(func=defs)
    p = sub.add_parser("push")
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="server processes, ours and the ceiling's alike")
    p.add_argument("--rounds", type=int, default=5, help="ceiling and push alternately; the medians are compared")
    p.set_defaults(func=push)
    p = sub.add_parser("api")
    p.add_argument("--providers", type=int, default=1_000)
    p.add_argument("--creates", type=int, default=300)
    p.add_argument("--repeats", type=int, default=2, help="definitions refreshes timed per catalog")
    p.add_argument("--api-port", type=int, default=0, help="the API's port (0: a free one)")
    p.add_argument("--dagster-port", type=int, default=0, help="the Dagster webserver's port (0: a free one)")
    p.set_defaults(func=api)
    p = sub.add_parser("rules")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.set_defaults(func=rules)
    args = parser.parse_args()
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
    args.func(args)


if __name__ == "__main__":
    main()
