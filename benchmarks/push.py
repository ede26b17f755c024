"""Push ingestion: records pushed with ``/v2/import/batch`` by concurrent clients, against the ceiling
of the same HTTP server stack.

Our side: ``prequel-dagster api`` (uvicorn, its own process) validating each batch (Stitch's JSON
Schema rules) and staging it durably in a local lake before answering. The ceiling, in the same run:
uvicorn in its own process with a handler that only reads the body and appends it, fsync'd, to a
file. The clients (threads, one httpx client each) send prebuilt bodies of ``--batch`` records of 10
fields until ``--records`` are acknowledged. ``--rounds`` runs the two alternately, and the medians
are compared (a shared machine's noise moves one run by a fifth).
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prequel_dagster.catalog import push_tokens
from prequel_dagster.catalog.store import Catalog

TARGET_VS_CEILING = 0.5
TARGET_RSS_MB = 500
SCHEMA = {
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string"},
        "name": {"type": "string"},
        "amount": {"type": "number"},
        "active": {"type": "boolean"},
        "country": {"type": "string"},
        "plan": {"type": "string"},
        "score": {"type": "integer"},
        "updated_at": {"type": "string", "format": "date-time"},
        "note": {"type": ["null", "string"]},
    }
}
CEILING_APP = """
import os
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

sink = open(os.environ["PUSH_CEILING_FILE"], "ab")

async def accept(request):
    body = await request.body()
    sink.write(body)
    sink.flush()
    os.fsync(sink.fileno())
    return JSONResponse({"status": "OK", "message": "Batch Accepted!"}, status_code=201)

app = Starlette(routes=[Route("/v2/import/batch", accept, methods=["POST"])])
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def body(client: int, batch: int) -> bytes:
    messages = [
        {
            "action": "upsert",
            "sequence": i,
            "data": {
                "id": client * 10_000_000 + i,
                "email": f"user{i}@example.com",
                "name": f"User {i}",
                "amount": i / 7,
                "active": i % 3 == 0,
                "country": ("US", "DE", "FR", "BR", "JP")[i % 5],
                "plan": ("free", "pro", "team")[i % 3],
                "score": i % 1000,
                "updated_at": "2026-12-01T10:00:00Z",
                "note": None if i % 2 else "n",
            },
        }
        for i in range(batch)
    ]
    return json.dumps({"table_name": "events", "schema": SCHEMA, "key_names": ["id"], "messages": messages}).encode()


def wait_ready(url: str, proc: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server at {url} exited ({proc.returncode})")
        try:
            httpx.post(url, content=b"{}", timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the server at {url} did not start")


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The worker processes uvicorn started (``--workers`` > 1)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def drive(url: str, token: str, bodies: list[bytes], records: int, batch: int) -> tuple[float, list[float]]:
    """Send until ``records`` are acknowledged; (seconds, per-request latencies in ms)."""
    requests_needed = -(-records // batch)
    counter = iter(range(requests_needed))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def client(n: int) -> None:
        with httpx.Client(timeout=120) as http:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                started = time.perf_counter()
                answer = http.post(
                    url,
                    content=bodies[n],
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                )
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if answer.status_code not in (200, 201, 202):
                        failures.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(len(bodies))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return seconds, latencies


def _measure(
    name: str,
    command: list[str],
    root: Path,
    env: dict[str, str],
    token: str,
    bodies: list[bytes],
    records: int,
    batch: int,
) -> tuple[float, float, float, float]:
    """One side's (records/s, p99 ms, peak RSS MB, server CPU ms a batch) over ``records``."""
    port = free_port()
    proc = subprocess.Popen(
        [part.replace("{port}", str(port)) for part in command],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/v2/import/batch"
        wait_ready(url, proc)
        drive(url, token, bodies[:1], batch, batch)  # warm up: imports, first lake write
        servers = [proc.pid, *children(proc.pid)]
        cpu_before, clients_before = cpu_seconds(servers), time.process_time()
        seconds, latencies = drive(url, token, bodies, records, batch)
        cpu_ms = (cpu_seconds(servers) - cpu_before) * 1000 / -(-records // batch)
        client_ms = (time.process_time() - clients_before) * 1000 / -(-records // batch)
        rss = sum(peak_rss_mb(pid) for pid in [proc.pid, *children(proc.pid)])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    rate = records / seconds
    p99 = statistics.quantiles(latencies, n=100)[98] if len(latencies) >= 2 else latencies[0]
    print(
        f"  {name}: {seconds:.1f} s, {rate:,.0f} records/s, p99 {p99:.0f} ms, peak RSS {rss:.0f} MB,"
        f" server CPU {cpu_ms:.1f} ms a batch (the clients' {client_ms:.1f} ms)",
        flush=True,
    )
    return rate, p99, rss, cpu_ms


def _median(runs: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """Each figure's median over the rounds (peak RSS: the highest)."""
    rate, p99, rss, cpu = zip(*runs, strict=True)
    return statistics.median(rate), statistics.median(p99), max(rss), statistics.median(cpu)


def _tidy(root: Path) -> None:
    """Between runs: the ceiling's file and the staged batches go (gigabytes over a few rounds)."""
    (root / "ceiling.jsonl").unlink(missing_ok=True)
    shutil.rmtree(root / "lake" / "artifacts", ignore_errors=True)


def push(records: int, batch: int, clients: int, workers: int = 1, rounds: int = 5) -> None:
    with tempfile.TemporaryDirectory(prefix="prequel-push-bench-") as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "PREQUEL_CATALOG_URL": f"sqlite:///{root / 'catalog.db'}",
            "PREQUEL_CATALOG_KEY": Fernet.generate_key().decode(),
            "PUSH_CEILING_FILE": str(root / "ceiling.jsonl"),
        }
        os.environ.update({k: env[k] for k in ("PREQUEL_CATALOG_URL", "PREQUEL_CATALOG_KEY")})
        catalog = Catalog.open()
        assert catalog is not None
        lake = {"id": "lake", "name": "l", "storage": "local", "local": {"path": str(root / "lake")}}
        catalog.create("datalakes", "lake", None, lake)
        catalog.create(
            "providers", "acme", "acme", {"id": "acme", "name": "a", "datalake_id": "lake", "products": ["all"]}
        )
        source = {"id": "ev", "name": "e", "vendor": "import_api", "provider_id": "acme", "import_api": {}}
        catalog.create("sources", "ev", "acme", source)
        _, token = push_tokens.create_token(catalog, push_tokens.push_source(catalog, "ev", "acme"))
        catalog.close()
        bodies = [body(n, batch) for n in range(clients)]
        print(
            f"{records:,} records in bodies of {batch:,} ({len(bodies[0]) / 1e6:.1f} MB) from {clients} clients,"
            f" {workers} server process(es) on each side",
            flush=True,
        )

        commands = {
            "ceiling": [
                *(sys.executable, "-m", "uvicorn", "ceiling:app", "--port", "{port}", "--log-level", "warning"),
                *("--workers", str(workers)),
            ],
            "push": [
                *(sys.executable, "-m", "prequel_dagster.cli", "api", "--port", "{port}"),
                *("--dagster-url", "http://127.0.0.1:9", "--workers", str(workers)),
            ],
        }
        (root / "ceiling.py").write_text(CEILING_APP)
        runs: dict[str, list[tuple[float, float, float, float]]] = {"ceiling": [], "push": []}
        for round_ in range(rounds):  # alternating, so both sides see the machine's moods alike
            for name, command in commands.items():
                runs[name].append(_measure(name, command, root, env, token, bodies, records, batch))
                print(f"    (round {round_ + 1} of {rounds})", flush=True)
                _tidy(root)
        figures = {name: _median(found) for name, found in runs.items()}
        ratios = [p[0] / c[0] for p, c in zip(runs["push"], runs["ceiling"], strict=True)]
        print(f"  push/ceiling per round: {', '.join(f'{r:.2f}' for r in ratios)}")

        rate, p99, rss, cpu_ms = figures["push"]
        ceiling, ceiling_cpu_ms = figures["ceiling"][0], figures["ceiling"][3]
        print(f"push_records_per_second={rate:.0f}")
        print(f"push_ceiling_records_per_second={ceiling:.0f}")
        print(f"push_workers={workers}")
        print(f"push_rounds={rounds}")
        # each round's two runs saw the same machine: the median of their ratios is the figure; the
        # ratio of the medians (runs of different minutes) is shown beside it
        print(f"push_vs_ceiling={statistics.median(ratios):.2f}")
        print(f"push_vs_ceiling_of_medians={rate / ceiling:.2f}")
        print(f"push_p99_ms={p99:.0f}")
        print(f"push_peak_rss_mb={rss:.0f}")
        print(f"push_server_cpu_ms_per_batch={cpu_ms:.1f}")
        print(f"push_ceiling_server_cpu_ms_per_batch={ceiling_cpu_ms:.1f}")
        print(f"push_vs_ceiling_target={TARGET_VS_CEILING}")
        print(f"push_peak_rss_target_mb={TARGET_RSS_MB}")
