"""The management API at scale: how long a create takes on a catalog of N providers, and how long a
created dataset takes to reach Dagster's definitions.

The catalog holds N providers shaped as in ``defs.py`` (a SQLite source, three datasets and a stream
to one shared destination each), written straight into it before any server starts. The API runs as
``prequel-dagster api`` in its own process (uvicorn), driven by an httpx client on loopback.

Create latency: a round-robin of ``POST /import/providers``, ``/import/sources`` (SQLite, with the
company's key), ``/import/datasets`` and ``/import/streams``, each on the entry the previous one
made, against the API pointed at a Dagster URL where nothing listens (its reloads fail at once and
are only logged). The baseline is the same against a catalog without providers.

Definitions refresh: a ``dagster-webserver`` (its own process, DefaultRunCoordinator) on the same
catalog, the API pointed at it; from sending ``POST /import/datasets`` to the dataset's asset key
appearing in the webserver's code location (polled every 0.25 s with the lookup the API's launcher
makes before it launches an extract). The baseline is the same on a
catalog of one provider. ``dagster_reload_seconds_*`` is one reload asked of the webserver directly.

The first create of each kind is made (and shown) before timing: it pays one-off imports.
"""

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from defs import write_config

from prequel_dagster.api.dagster_link import DagsterLink
from prequel_dagster.catalog.store import Catalog

TARGET_CREATE_MS = 100
TARGET_REFRESH_SECONDS = 15
NOWHERE = "http://127.0.0.1:9"
"""A Dagster URL where nothing listens: the API's reloads fail at once (and are only logged)."""
LOCATION = "prequel_dagster"
KINDS = ("providers", "sources", "datasets", "streams")
DESTINATION_URI = "http://127.0.0.1:9/b"
"""``write_config``'s ``${RECEIVER_URL:-http://127.0.0.1:9}/b`` as it resolves: catalog strings are literal."""
POLL_SECONDS = 0.25
START_TIMEOUT = 120.0
LOAD_TIMEOUT = 900.0
DATASET_BODY = {
    "method": "table",
    "type": "dimension",
    "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
    "frequency_minutes": 60,
}
MAPPINGS = [
    {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}},
    {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
]
_ENTRY = """
query PrequelBenchEntry($location: String!) {
  workspaceLocationEntryOrError(name: $location) {
    __typename
    ... on WorkspaceLocationEntry { loadStatus updatedTimestamp }
  }
}
"""


# ---------------------------------------------------------------------- the catalog


def catalog_entries(providers: int) -> Iterator[tuple[str, str, str | None, dict[str, Any]]]:
    """``(kind, id, provider_id, body)`` of every entry of ``write_config(providers)``."""
    with tempfile.TemporaryDirectory(prefix="prequel-api-config-") as tmp:
        text = write_config(Path(tmp), providers).read_text()
    config = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    for destination in config["destinations"]:
        destination["webhook_batch"]["request_template"]["uri"] = DESTINATION_URI
    owner_of_source = {s["id"]: s["provider_id"] for s in config["sources"]}
    owner_of_dataset = {d["id"]: owner_of_source[d["source_id"]] for d in config["datasets"]}
    for body in config["datalakes"]:
        yield "datalakes", body["id"], None, body
    for body in config["destinations"]:
        yield "destinations", body["id"], None, body
    for body in config["providers"]:
        yield "providers", body["id"], body["id"], body
    for body in config["sources"]:
        yield "sources", body["id"], body["provider_id"], body
    for body in config["datasets"]:
        yield "datasets", body["id"], owner_of_source[body["source_id"]], body
    for body in config["streams"]:
        yield "streams", body["id"], owner_of_dataset[body["dataset_id"]], body


def fill_catalog(path: Path, providers: int) -> str:
    """A catalog file of ``providers`` providers (with ``$PREQUEL_CATALOG_KEY`` set); the company's key."""
    catalog = Catalog.open(f"sqlite:///{path}")
    assert catalog is not None
    try:
        started = time.perf_counter()
        for count, (kind, id, owner, body) in enumerate(catalog_entries(providers), 1):
            catalog.create(kind, id, owner, body, actor="bench")
            if count % 2000 == 0:
                print(f"    {count:,} entries ({time.perf_counter() - started:.1f}s)", flush=True)
        _, key = catalog.create_key(label="bench")
    finally:
        catalog.close()
    return key


def copy_catalog(template: Path, directory: Path) -> Path:
    target = directory / "catalog.db"
    for suffix in ("", "-wal", "-shm"):
        source = template.with_name(template.name + suffix)
        if source.exists():
            shutil.copy(source, target.with_name(target.name + suffix))
    return target


# ---------------------------------------------------------------------- processes


def port_for(wanted: int, what: str) -> int:
    """``wanted`` if it is free on loopback (0: any free port); a clear exit if it is taken."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            sock.bind(("127.0.0.1", wanted))
        except OSError as exc:
            raise SystemExit(
                f"port {wanted} on 127.0.0.1 ({what}) is taken ({exc.strerror}); stop what listens there, "
                "or pass another port (0: a free one)"
            ) from None
        return sock.getsockname()[1]


def nothing_listens(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex((host, int(port))) == 0:
            raise SystemExit(f"something listens at {url}, where the API's reloads must fail at once; stop it")


class Processes:
    """Servers started in their own process groups, all stopped (with their children) at the end."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path) -> subprocess.Popen:
        log_path = cwd / f"{name}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started.append((name, proc, log_path))
        return proc

    def check(self, proc: subprocess.Popen) -> None:
        """Exit with the log's tail if ``proc`` died (a port taken meanwhile, typically)."""
        if proc.poll() is None:
            return
        name, _, log_path = next(s for s in self.started if s[1] is proc)
        tail = log_path.read_text(errors="replace")[-3000:]
        hint = "\n(the port was taken by something else meanwhile; run again)" if "already in use" in tail else ""
        raise SystemExit(f"{name} exited with code {proc.returncode}:\n{tail}{hint}")

    def stop_all(self) -> None:
        for _, proc, _ in reversed(self.started):
            _stop_group(proc)
        self.started.clear()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group ``proc`` leads (the webserver's code server too), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the leader's children, even once it has exited
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@dataclass
class Stack:
    directory: Path
    api: httpx.Client
    api_proc: subprocess.Popen
    processes: Processes
    link: DagsterLink | None = None
    api_started_at: float = 0.0
    location_stamp: float | None = None


@contextlib.contextmanager
def stack(
    name: str,
    template: Path,
    key: str,
    catalog_key: str,
    *,
    webserver: bool,
    api_port: int = 0,
    dagster_port: int = 0,
    expected_key: tuple[str, ...] | None = None,
) -> Iterator[Stack]:
    """The API (and, with ``webserver``, a Dagster webserver) on a copy of the catalog ``template``."""
    directory = Path(tempfile.mkdtemp(prefix=f"prequel-api-{name}-"))
    processes = Processes()
    client: httpx.Client | None = None
    link: DagsterLink | None = None
    try:
        catalog = copy_catalog(template, directory)
        home = directory / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            "telemetry: {enabled: false}\n"
            "run_coordinator: {module: dagster._core.run_coordinator, class: DefaultRunCoordinator}\n"
            "run_launcher: {module: prequel_dagster.run_launcher, class: PreloadedRunLauncher}\n"
        )
        module = {"module_name": "prequel_dagster.definitions", "location_name": LOCATION}
        (directory / "workspace.yaml").write_text(yaml.safe_dump({"load_from": [{"python_module": module}]}))
        env = {
            **os.environ,
            "PREQUEL_CATALOG_URL": f"sqlite:///{catalog}",
            "PREQUEL_CATALOG_KEY": catalog_key,
            "DAGSTER_HOME": str(home),
            "DAGSTER_DISABLE_TELEMETRY": "1",
        }
        for variable in ("PREQUEL_CONFIG", "PREQUEL_DAGSTER_URL", "PREQUEL_CATALOG_REVISION"):
            env.pop(variable, None)

        dagster_url = NOWHERE
        location_stamp = None
        if webserver:
            port = port_for(dagster_port, "the Dagster webserver")
            dagster_url = f"http://127.0.0.1:{port}"
            print(f"  starting dagster-webserver at {dagster_url} ...", flush=True)
            started = time.perf_counter()
            proc = processes.start(
                "webserver",
                [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml"]
                + ["-h", "127.0.0.1", "-p", str(port)],
                env=env,
                cwd=directory,
            )
            link = DagsterLink(dagster_url, LOCATION, timeout=120)
            location_stamp = wait_webserver(link, processes, proc, expected_key)
            print(f"    loaded its code location in {time.perf_counter() - started:.1f}s", flush=True)
        else:
            nothing_listens(NOWHERE)

        port = port_for(api_port, "the API")
        api_url = f"http://127.0.0.1:{port}"
        print(f"  starting the API at {api_url} (Dagster at {dagster_url}) ...", flush=True)
        api_started_at = time.perf_counter()
        api_proc = processes.start(
            "api",
            [sys.executable, "-m", "prequel_dagster.cli", "api"]
            + ["--host", "127.0.0.1", "--port", str(port), "--dagster-url", dagster_url],
            env=env,
            cwd=directory,
        )
        client = httpx.Client(base_url=api_url, headers={"X-API-KEY": key}, timeout=120)
        wait_api(client, processes, api_proc)
        print(f"    answering in {time.perf_counter() - api_started_at:.1f}s", flush=True)
        yield Stack(directory, client, api_proc, processes, link, api_started_at, location_stamp)
    finally:
        if client is not None:
            client.close()
        if link is not None:
            link.close()
        processes.stop_all()
        shutil.rmtree(directory, ignore_errors=True)


def wait_api(client: httpx.Client, processes: Processes, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        processes.check(proc)
        try:
            response = client.get("/")
            if response.status_code == 200:
                return
            raise SystemExit(f"the API answered GET / with {response.status_code}: {response.text[:500]}")
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the API did not answer within {START_TIMEOUT:g}s")
        time.sleep(0.1)


def location_entry(link: DagsterLink) -> dict[str, Any] | None:
    """The code location's ``loadStatus`` and ``updatedTimestamp`` (None: not answering yet)."""
    try:
        entry = link.query(_ENTRY, {"location": LOCATION})["workspaceLocationEntryOrError"]
    except Exception:
        return None
    return entry if entry and entry.get("__typename") == "WorkspaceLocationEntry" else None


def wait_webserver(
    link: DagsterLink, processes: Processes, proc: subprocess.Popen, expected_key: tuple[str, ...] | None
) -> float:
    """Wait until GraphQL answers and the location is loaded (with ``expected_key``); its ``updatedTimestamp``."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        processes.check(proc)
        entry = location_entry(link)
        if entry is not None and entry["loadStatus"] == "LOADED":
            keys = link.asset_keys()  # raises with the load error if the location failed
            if expected_key is None or expected_key in keys:
                return float(entry["updatedTimestamp"])
        if time.monotonic() > deadline:
            raise SystemExit(f"the webserver's code location did not load within {LOAD_TIMEOUT:g}s")
        time.sleep(POLL_SECONDS)


def wait_startup_reload(s: Stack) -> float:
    """Wait for the API's first reload (the location's ``updatedTimestamp`` moves, then it is loaded again);
    the seconds from starting the API."""
    assert s.link is not None and s.location_stamp is not None
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        s.processes.check(s.api_proc)
        entry = location_entry(s.link)
        if (
            entry is not None
            and entry["loadStatus"] == "LOADED"
            and float(entry["updatedTimestamp"]) > s.location_stamp
        ):
            s.link.asset_keys()  # raises with the load error if the reload failed
            return time.perf_counter() - s.api_started_at
        if time.monotonic() > deadline:
            raise SystemExit(f"the API's startup reload did not finish within {LOAD_TIMEOUT:g}s")
        time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------------- measurements


def post(client: httpx.Client, kind: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Milliseconds of one create, and the resource created."""
    started = time.perf_counter()
    response = client.post(f"/import/{kind}", json={kind[:-1]: body})
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"POST /import/{kind} answered {response.status_code}: {response.text[:1000]}")
    return elapsed, response.json()["data"][kind[:-1]]


def create_latencies(client: httpx.Client, creates: int, prefix: str = "bench") -> dict[str, list[float]]:
    """``creates`` creates, round-robin over KINDS: a provider, its source, a dataset on it, a stream of that."""
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    made: dict[str, str] = {}
    for i in range(creates):
        kind = KINDS[i % len(KINDS)]
        pid = f"{prefix}{i // len(KINDS):05d}"
        if kind == "providers":
            body: dict[str, Any] = {"id": pid, "name": pid, "datalake_id": "lake", "products": ["all"]}
        elif kind == "sources":
            body = {"name": pid, "vendor": "sqlite", "provider_id": pid, "sqlite": {"path": f"db/{pid}.db"}}
        elif kind == "datasets":
            body = {"name": "t0", "source_id": made["sources"], "table": {"source_table_name": "t0"}, **DATASET_BODY}
        else:
            body = {"name": "s", "dataset_id": made["datasets"], "destination_id": "app", "mappings": MAPPINGS}
        ms, resource = post(client, kind, body)
        made[kind] = resource["id"]
        times[kind].append(ms)
    return times


def get_root_latencies(client: httpx.Client, requests: int) -> list[float]:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get("/")
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


def create_phase(name: str, template: Path, key: str, catalog_key: str, creates: int, port: int) -> dict[str, Any]:
    with stack(name, template, key, catalog_key, webserver=False, api_port=port) as s:
        started = time.perf_counter()
        response = s.api.get("/import/providers", params={"page_size": 1})
        assert response.status_code == 200, response.text
        first_read_ms = (time.perf_counter() - started) * 1000
        get_root_latencies(s.api, 20)  # warm the connection and the server's code paths
        print(f"    first read (the server builds its view of the catalog): {first_read_ms:.0f} ms", flush=True)
        warm = create_latencies(s.api, len(KINDS), prefix="warm")  # untimed: the first create of each kind
        print(
            "    first create of each kind (untimed): " + ", ".join(f"{k} {v[0]:.0f} ms" for k, v in warm.items()),
            flush=True,
        )
        print(f"    {creates} creates ...", flush=True)
        started = time.perf_counter()
        times = create_latencies(s.api, creates)
        seconds = time.perf_counter() - started
        root = get_root_latencies(s.api, 300)
        s.processes.check(s.api_proc)
    every = [ms for kind in KINDS for ms in times[kind]]
    for kind in KINDS:
        if times[kind]:
            print(
                f"    POST /import/{kind}: n={len(times[kind])} p50 {statistics.median(times[kind]):.1f} ms, "
                f"p99 {p99(times[kind]):.1f} ms, max {max(times[kind]):.1f} ms",
                flush=True,
            )
    print(
        f"    all creates: p50 {statistics.median(every):.1f} ms, p99 {p99(every):.1f} ms "
        f"({len(every) / seconds:.0f}/s); GET / p50 {statistics.median(root):.2f} ms, p99 {p99(root):.2f} ms",
        flush=True,
    )
    return {"times": times, "every": every, "root": root, "first_read_ms": first_read_ms, "warm": warm}


def refresh_phase(
    name: str, template: Path, key: str, catalog_key: str, repeats: int, api_port: int, dagster_port: int
) -> tuple[list[float], float]:
    provider, source = "tenant00000", "tenant00000-db"
    expected = ("prequel", provider, f"{provider}-t0")
    with stack(
        name,
        template,
        key,
        catalog_key,
        webserver=True,
        api_port=api_port,
        dagster_port=dagster_port,
        expected_key=expected,
    ) as s:
        assert s.link is not None
        print(f"    the API's startup reload done {wait_startup_reload(s):.1f}s after starting it", flush=True)
        started = time.perf_counter()
        count = len(s.link.asset_keys())
        print(f"    {count:,} asset keys; one asset_keys() call {time.perf_counter() - started:.2f}s", flush=True)
        seconds = []
        for r in range(repeats):
            body = {"name": f"new{r}", "source_id": source, "table": {"source_table_name": f"new{r}"}, **DATASET_BODY}
            started = time.perf_counter()
            _, dataset = post(s.api, "datasets", body)
            wanted = ("prequel", provider, dataset["id"])
            deadline = time.monotonic() + LOAD_TIMEOUT
            while s.link.missing_asset_keys([list(wanted)]):  # the check the API's launcher makes
                s.processes.check(s.api_proc)
                if time.monotonic() > deadline:
                    raise SystemExit(f"asset {'/'.join(wanted)} did not appear within {LOAD_TIMEOUT:g}s")
                time.sleep(POLL_SECONDS)
            seconds.append(time.perf_counter() - started)
            print(f"    dataset {r + 1}: in Dagster's definitions {seconds[-1]:.2f}s after the POST", flush=True)
            wait_idle(s)
        started = time.perf_counter()
        s.link.reload()  # the webserver's part alone: no API, no polling
        direct = time.perf_counter() - started
        print(f"    a reload asked of the webserver directly (link.reload()): {direct:.2f}s", flush=True)
    return seconds, direct


def wait_idle(s: Stack) -> None:
    """Let any reload still asked for finish: the location stays loaded and unchanged for two seconds."""
    assert s.link is not None
    quiet_since, last = time.monotonic(), None
    deadline = time.monotonic() + LOAD_TIMEOUT
    while time.monotonic() - quiet_since < 2 and time.monotonic() < deadline:
        entry = location_entry(s.link)
        state = (entry or {}).get("loadStatus"), (entry or {}).get("updatedTimestamp")
        if state != last or state[0] != "LOADED":
            quiet_since, last = time.monotonic(), state
        time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------------- the benchmark


def run(
    providers: int = 1000, creates: int = 300, *, repeats: int = 2, api_port: int = 0, dagster_port: int = 0
) -> dict[str, Any]:
    catalog_key = Fernet.generate_key().decode()
    saved = os.environ.get("PREQUEL_CATALOG_KEY")
    os.environ["PREQUEL_CATALOG_KEY"] = catalog_key
    work = Path(tempfile.mkdtemp(prefix="prequel-api-bench-"))
    try:
        templates: dict[int, tuple[Path, str]] = {}
        for n in sorted({0, 1, providers}):
            print(f"filling a catalog of {n:,} providers ...", flush=True)
            started = time.perf_counter()
            path = work / f"catalog-{n}.db"
            templates[n] = path, fill_catalog(path, n)
            print(f"  done in {time.perf_counter() - started:.1f}s", flush=True)

        print("create latency, catalog without providers (the baseline):", flush=True)
        empty = create_phase("empty", *templates[0], catalog_key, creates, api_port)
        print(f"create latency, catalog of {providers:,} providers:", flush=True)
        full = create_phase(str(providers), *templates[providers], catalog_key, creates, api_port)

        refresh: dict[int, float] = {}
        reload: dict[int, float] = {}
        for n in (1, providers):
            print(f"definitions refresh, catalog of {n:,} providers:", flush=True)
            times, reload[n] = refresh_phase(
                f"refresh-{n}", *templates[n], catalog_key, repeats, api_port, dagster_port
            )
            refresh[n] = statistics.median(times)
    finally:
        if saved is None:
            os.environ.pop("PREQUEL_CATALOG_KEY", None)
        else:
            os.environ["PREQUEL_CATALOG_KEY"] = saved
        shutil.rmtree(work, ignore_errors=True)

    n = providers
    figures: dict[str, Any] = {"api_create_p50_ms": statistics.median(full["every"])}
    for kind in KINDS:
        if full["times"][kind]:
            figures[f"api_create_p99_ms_{kind}"] = p99(full["times"][kind])
    for kind in KINDS:
        if empty["times"][kind]:
            figures[f"api_create_p99_ms_{kind}_empty"] = p99(empty["times"][kind])
    figures["api_first_read_ms"] = full["first_read_ms"]
    figures["api_first_create_ms"] = max(v[0] for v in full["warm"].values())
    figures["api_get_root_p99_ms_empty"] = p99(empty["root"])
    figures["api_get_root_p99_ms"] = p99(full["root"])
    figures["api_create_p99_ms_empty"] = p99(empty["every"])
    figures["api_create_p99_ms"] = p99(full["every"])
    figures[f"api_create_p99_ratio_{n}_vs_empty"] = figures["api_create_p99_ms"] / figures["api_create_p99_ms_empty"]
    figures["dagster_reload_seconds_1"] = reload[1]
    figures[f"dagster_reload_seconds_{n}"] = reload[n]
    figures["api_defs_refresh_seconds_1"] = refresh[1]
    figures[f"api_defs_refresh_seconds_{n}"] = refresh[n]
    figures[f"defs_reload_ratio_{n}_vs_1"] = refresh[n] / refresh[1]
    figures["api_create_target_ms"] = TARGET_CREATE_MS
    figures["api_defs_refresh_target_seconds"] = TARGET_REFRESH_SECONDS
    figures["api_create_p99_within_target"] = str(figures["api_create_p99_ms"] <= TARGET_CREATE_MS).lower()
    figures["api_defs_refresh_within_target"] = str(refresh[n] <= TARGET_REFRESH_SECONDS).lower()
    return figures
