"""Nothing acknowledged is lost: the API process is killed (SIGKILL) in the middle of a stream of
pushes; every record a client was answered 2xx for is in the lake afterwards, and no staged file is
partial (each one reads whole)."""

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

from .servers import free_port

SCHEMA = {"properties": {"id": {"type": "integer"}, "payload": {"type": "string"}}}
BATCH_RECORDS = 500
CLIENTS = 3


def _start(tmp: Path, env: dict[str, str], port: int) -> subprocess.Popen:
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
        ],
        cwd=tmp,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
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


def test_a_killed_server_loses_no_acknowledged_record(tmp_path, monkeypatch):
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
    _, token = push_tokens.create_token(catalog, push_tokens.push_source(catalog, "events", "acme"))
    catalog.close()

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
    server.send_signal(signal.SIGKILL)  # in the middle of the stream
    server.wait(10)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(15)
    assert len(acknowledged) >= 20 * BATCH_RECORDS

    store = LocalStore(lake)
    stored: set[int] = set()
    for path in staged_tables(store, "acme", "events")["events"]:
        stored.update(read_staged(store, path).column("id").to_pylist())  # a partial file would not read
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
        again.kill()
        again.wait(10)
