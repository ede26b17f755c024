"""Nothing acknowledged is lost: the API process is killed (SIGKILL) in the middle of a stream of
pushes; every record a client was answered 2xx for is in the lake afterwards, and no staged file is
partial (each one reads whole). Once with our own HTTP clients, once with Stitch's Singer target
against an API of two worker processes."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from prequel_dagster.catalog import push_tokens
from prequel_dagster.catalog.store import Catalog
from prequel_dagster.push.staging import read_staged, staged_tables
from prequel_dagster.stores import LocalStore

from .servers import free_port, need

SCHEMA = {"properties": {"id": {"type": "integer"}, "payload": {"type": "string"}}}
BATCH_RECORDS = 500
CLIENTS = 3


def _start(tmp: Path, env: dict[str, str], port: int, workers: int = 1) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prequel_dagster.cli",
            "api",
            "--port",
            str(port),
            "--dagster-url",
            "http://127.0.0.1:9",
            "--workers",
            str(workers),
        ],
        cwd=tmp,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its workers too are killed with the group
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/import/status", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the API did not start")


def _push_source(tmp_path: Path, monkeypatch) -> tuple[dict[str, str], str, int]:
    """A catalog with provider acme's import_api source ``events`` in a local lake: (env, token, client_id)."""
    env = {
        "PREQUEL_CATALOG_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
        "PREQUEL_CATALOG_KEY": Fernet.generate_key().decode(),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    catalog = Catalog.open()
    assert catalog is not None
    lake = tmp_path / "lake"
    catalog.create(
        "datalakes", "lake", None, {"id": "lake", "name": "l", "storage": "local", "local": {"path": str(lake)}}
    )
    catalog.create("providers", "acme", "acme", {"id": "acme", "name": "a", "datalake_id": "lake", "products": ["all"]})
    catalog.create(
        "sources",
        "events",
        "acme",
        {"id": "events", "name": "e", "vendor": "import_api", "provider_id": "acme", "import_api": {}},
    )
    source = push_tokens.push_source(catalog, "events", "acme")
    _, token = push_tokens.create_token(catalog, source)
    catalog.close()
    return env, token, source.id


def _stored_ids(lake: Path) -> set[int]:
    store = LocalStore(lake)
    stored: set[int] = set()
    for path in staged_tables(store, "acme", "events")["events"]:
        stored.update(read_staged(store, path).column("id").to_pylist())  # a partial file would not read
    return stored


def _kill(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(10)


def test_a_killed_server_loses_no_acknowledged_record(tmp_path, monkeypatch):
    env, token, _ = _push_source(tmp_path, monkeypatch)
    port = free_port()
    server = _start(tmp_path, env, port)
    acknowledged: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    next_id = iter(range(10**9))

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                with lock:
                    ids = [next(next_id) for _ in range(BATCH_RECORDS)]
                body = {
                    "table_name": "events",
                    "schema": SCHEMA,
                    "key_names": ["id"],
                    "messages": [
                        {"action": "upsert", "sequence": i, "data": {"id": i, "payload": "x" * 100}} for i in ids
                    ],
                }
                try:
                    answer = http.post(
                        f"http://127.0.0.1:{port}/v2/import/batch",
                        content=json.dumps(body),
                        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                    )
                except httpx.HTTPError:
                    continue  # no answer: not acknowledged (a real client sends it again)
                if answer.status_code in (200, 201, 202):
                    with lock:
                        acknowledged.update(ids)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.time() + 60
    while len(acknowledged) < 20 * BATCH_RECORDS and time.time() < deadline:
        time.sleep(0.05)
    _kill(server)  # in the middle of the stream
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(15)
    assert len(acknowledged) >= 20 * BATCH_RECORDS

    stored = _stored_ids(tmp_path / "lake")
    assert acknowledged <= stored, f"{len(acknowledged - stored)} acknowledged records lost"

    again = _start(tmp_path, env, port)  # and the service takes pushes again after the crash
    try:
        body = {
            "table_name": "events",
            "schema": SCHEMA,
            "key_names": ["id"],
            "messages": [{"action": "upsert", "sequence": 1, "data": {"id": -1, "payload": "after"}}],
        }
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v2/import/batch",
            content=json.dumps(body),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 201
    finally:
        _kill(again)


def test_target_stitch_killed_mid_stream_loses_nothing_it_was_told_was_accepted(tmp_path, monkeypatch):
    """Singer's target-stitch prints a STATE only once every batch before it was accepted: after a
    kill -9 of the (two-process) API mid-stream, every record up to the last printed STATE is in the
    lake, whole."""
    exe = Path(__file__).resolve().parents[1] / ".venv-clients" / "bin" / "target-stitch"
    if not exe.exists():
        need("target-stitch", "bash scripts/test.sh installs it into .venv-clients")
    env, token, client_id = _push_source(tmp_path, monkeypatch)
    port = free_port()
    server = _start(tmp_path, env, port, workers=2)
    config = tmp_path / "target-stitch.json"
    url = f"http://127.0.0.1:{port}/v2/import/batch"
    config.write_text(
        json.dumps(
            {
                "token": token,
                "client_id": client_id,
                "small_batch_url": url,
                "big_batch_url": url,
                "batch_size_preferences": {},
            }
        )
    )
    target = subprocess.Popen(
        [str(exe), "-c", str(config), "--max-batch-records", str(BATCH_RECORDS), "--batch-delay-seconds", "0.2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert target.stdin is not None and target.stdout is not None
    states: list[int] = []

    def read_states() -> None:
        assert target.stdout is not None
        for line in target.stdout:
            states.append(json.loads(line)["last_id"])

    reader = threading.Thread(target=read_states, daemon=True)
    reader.start()
    schema = {"type": "object", "properties": SCHEMA["properties"]}
    try:
        target.stdin.write(
            json.dumps({"type": "SCHEMA", "stream": "events", "schema": schema, "key_properties": ["id"]})
        )
        target.stdin.write("\n")
        deadline = time.time() + 90
        last_id = -1
        while len(states) < 10 and time.time() < deadline and target.poll() is None:
            for _ in range(BATCH_RECORDS):
                last_id += 1
                record = {"id": last_id, "payload": "x" * 100}
                target.stdin.write(json.dumps({"type": "RECORD", "stream": "events", "record": record}) + "\n")
            target.stdin.write(json.dumps({"type": "STATE", "value": {"last_id": last_id}}) + "\n")
            target.stdin.flush()
        assert len(states) >= 10, "target-stitch did not get batches accepted"
        _kill(server)  # while records keep coming
        for _ in range(5):
            try:
                for _ in range(BATCH_RECORDS):
                    last_id += 1
                    record = {"id": last_id, "payload": "x"}
                    target.stdin.write(json.dumps({"type": "RECORD", "stream": "events", "record": record}) + "\n")
                target.stdin.flush()
            except (BrokenPipeError, OSError):
                break
        try:
            target.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        target.wait(60)
        reader.join(10)
    finally:
        if target.poll() is None:
            target.kill()
        if server.poll() is None:
            _kill(server)
    assert target.returncode != 0  # it saw the server die: the kill fell in the stream
    acknowledged = set(range(max(states) + 1))
    stored = _stored_ids(tmp_path / "lake")
    assert acknowledged <= stored, f"{len(acknowledged - stored)} records before the last STATE lost"
    catalog = Catalog.open()
    assert catalog is not None
    datasets = [e.body for e in catalog.entries(kinds=("datasets",))]
    catalog.close()
    # the two processes raced to make the table a dataset on its first batches: one of them did
    assert [(d["source_id"], d["push"]["table_name"]) for d in datasets] == [("events", "events")]
