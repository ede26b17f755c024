"""The API's link to Dagster against a real ``dagster-webserver``: code location reloads, asset keys,
launched runs with their materializations and errors, and the Reloader and Launcher threads."""

import copy
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from prequel_dagster.api.dagster_link import (
    DagsterLink,
    DagsterUnavailable,
    Launcher,
    LaunchFailed,
    LocationLoadError,
    Reloader,
    RunInfo,
)
from prequel_dagster.delivery.receiver import Receiver

from .test_delivery_ids import local_config

LOCATION = "prequel_dagster"
USERS = ["prequel", "acme", "users"]
INSTANCE = {
    "telemetry": {"enabled": False},
    # Runs start as soon as they are launched (no daemon needed); each in its own process.
    "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A dagster-webserver on loopback serving ``prequel_dagster.definitions`` from ``config``."""

    def __init__(self, root: Path, base: dict):
        self.root = root
        self.config = root / "prequel.yaml"
        self.base = base
        self.extra: list[dict] = []
        self.write()
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = root / "webserver.log"

    def write(self, raw: dict | None = None) -> None:
        if raw is None:
            raw = copy.deepcopy(self.base)
            raw["datasets"] += self.extra
        self.config.write_text(yaml.safe_dump(raw))

    def add_dataset(self, dataset_id: str) -> list[str]:
        """A dataset of acme's folder source (its own CSV file); its asset key."""
        (self.root / "drop" / f"{dataset_id}.csv").write_text("id,email\n1,x@y\n")
        dataset = copy.deepcopy(self.base["datasets"][0])
        dataset.update(id=dataset_id, name=dataset_id, glob={"pattern": f"{dataset_id}.csv", "file_format": "csv"})
        self.extra.append(dataset)
        self.write()
        return ["prequel", "acme", dataset_id]

    def start(self) -> subprocess.Popen:
        home = self.root / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(INSTANCE))
        (self.root / "workspace.yaml").write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {"python_module": {"module_name": "prequel_dagster.definitions", "location_name": LOCATION}}
                    ]
                }
            )
        )
        env = {**os.environ, "DAGSTER_HOME": str(home), "PREQUEL_CONFIG": str(self.config)}
        port = self.url.rsplit(":", 1)[1]
        webserver = Path(sys.executable).parent / "dagster-webserver"
        return subprocess.Popen(
            [str(webserver), "-h", "127.0.0.1", "-p", port, "-w", "workspace.yaml"],
            cwd=self.root,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server dies with it
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("dagster_link")
    with Receiver() as receiver:
        base = local_config(root, "lake", receiver, {1: "a@x", 2: "b@x"}, as_dict=True)
        base["datasets"][0]["glob"]["pattern"] = "users.csv"
        # A second provider whose folder is missing: its extract fails.
        base["providers"].append({"id": "globex", "name": "globex", "datalake_id": "lake", "products": ["all"]})
        base["sources"].append(
            {"id": "gx", "name": "gx", "vendor": "local", "provider_id": "globex", "local": {"path": "missing"}}
        )
        base["datasets"].append({**base["datasets"][0], "id": "gx-users", "source_id": "gx"})
        server = Server(root, base)
        process = server.start()
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(server.url + "/server_info", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert process.poll() is None, f"dagster-webserver exited:\n{server.tail()}"
                assert time.monotonic() < deadline, f"dagster-webserver did not start:\n{server.tail()}"
                time.sleep(0.1)
            yield server
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def link(server) -> Iterator[DagsterLink]:
    with DagsterLink(server.url, LOCATION) as link:
        yield link


def finished(link: DagsterLink, run_id: str, timeout: float = 60) -> RunInfo:
    deadline = time.monotonic() + timeout
    while True:
        info = link.run(run_id)
        assert info is not None
        if info.finished:
            return info
        assert time.monotonic() < deadline, f"run {run_id} still {info.status}"
        time.sleep(0.1)


def test_asset_keys_and_a_reload_picks_up_a_new_dataset(server, link):
    keys = link.asset_keys()
    assert tuple(USERS) in keys and ("prequel", "acme", "streams", "users-app") in keys
    orders = server.add_dataset("orders")
    assert tuple(orders) not in link.asset_keys()
    assert link.missing_asset_keys([USERS, orders]) == [orders]
    link.reload()
    assert tuple(orders) in link.asset_keys()
    assert link.missing_asset_keys([USERS, orders]) == []


def test_a_config_error_fails_the_reload_with_its_message_until_fixed(server, link):
    broken = copy.deepcopy(server.base)
    broken["datasets"][0]["source_id"] = "nowhere"
    server.write(broken)
    try:
        with pytest.raises(LocationLoadError) as caught:
            link.reload()
        assert "nowhere" in caught.value.detail and server.url in str(caught.value)
        assert "nowhere" in (link.location_error() or "")
        with pytest.raises(LocationLoadError):
            link.asset_keys()
    finally:
        server.write()
        link.reload()
    assert link.location_error() is None and tuple(USERS) in link.asset_keys()


def test_a_launched_extract_runs_with_its_tags_and_materialization_metadata(link):
    run_id = link.launch([USERS], tags={"prequel/api_job": "job-1"})
    info = finished(link, run_id)
    assert info.status == "SUCCESS", info
    assert info.error is None and info.tags["prequel/api_job"] == "job-1"
    assert info.start_time is not None and info.end_time is not None and info.end_time >= info.start_time
    (materialization,) = info.materializations
    assert materialization.asset_key == USERS
    meta = materialization.metadata
    assert meta["records_processed"] == 2 and meta["dagster/row_count"] == 2
    assert isinstance(meta["prequel/seconds"], float) and isinstance(meta["dagster/uri"], str)
    assert {c["name"] for c in meta["dagster/column_schema"]["columns"]} >= {"id", "email"}


def test_a_failed_run_reports_its_first_error(link):
    info = finished(link, link.launch([["prequel", "globex", "gx-users"]]))
    assert info.status == "FAILURE" and info.materializations == []
    assert info.error is not None and info.error.startswith("extract__globex__gx: prequel/globex/gx-users: source 'gx'")
    assert "does not exist" in info.error and len(info.error) <= 1000, info.error


def test_launch_refusals_and_unknown_runs(link):
    with pytest.raises(LaunchFailed) as caught:
        link.launch([["prequel", "acme", "no-such-dataset"]])
    assert "no-such-dataset" in str(caught.value), caught.value
    with pytest.raises(LaunchFailed) as caught:
        link.launch(
            [["prequel", "acme", "streams", "users-app"]],
            run_config={"ops": {"load__acme__app": {"config": {"redeliver_dead_letters": "yes"}}}},
        )
    assert caught.value.kind == "RunConfigValidationInvalid" and "redeliver_dead_letters" in str(caught.value)
    assert link.run("00000000-0000-0000-0000-000000000000") is None


def test_a_closed_port_is_unavailable_naming_the_url_and_the_fix():
    url = f"http://127.0.0.1:{free_port()}"
    with DagsterLink(url, timeout=2) as link:
        with pytest.raises(DagsterUnavailable) as caught:
            link.asset_keys()
    assert (
        url in str(caught.value) and "dagster dev" in str(caught.value) and "PREQUEL_DAGSTER_URL" in str(caught.value)
    )
    env = {"PREQUEL_DAGSTER_URL": url + "/", "PREQUEL_DAGSTER_LOCATION": "elsewhere"}
    with DagsterLink.from_environment(env) as link:
        assert (link.url, link.location) == (url, "elsewhere")


def test_the_launcher_waits_for_a_new_dataset_until_the_reloader_reloads(server, link):
    revision = [0]
    with (
        Reloader(link, lambda: revision[0], poll_seconds=0.2) as reloader,
        Launcher(link, reloader, wait_seconds=60, check_seconds=0.1) as launcher,
    ):
        assert reloader.wait_idle(30)  # the first poll reloads: nothing reloaded yet
        assert reloader.last_reloaded_revision == 0
        launched: dict[str, str] = {}
        failed: dict[str, str] = {}
        done = threading.Event()

        def on_launched(job_id: str, run_id: str) -> None:
            launched[job_id] = run_id
            done.set()

        def on_failed(job_id: str, message: str) -> None:
            failed[job_id] = message
            done.set()

        # Asked before the dataset exists: the launcher asks for a reload, which does not bring it.
        invoices = ["prequel", "acme", "invoices"]
        launcher.submit(
            "job-2", [invoices], tags={"prequel/api_job": "job-2"}, on_launched=on_launched, on_failed=on_failed
        )
        time.sleep(0.3)
        assert reloader.wait_idle(30) and not done.is_set()
        # Another API process changes the catalog: the reloader notices the revision and reloads.
        server.add_dataset("invoices")
        revision[0] = 1
        assert done.wait(30), "the launch never happened"
        assert failed == {} and reloader.wait_idle(30) and reloader.last_reloaded_revision == 1
        info = finished(link, launched["job-2"])
        assert info.status == "SUCCESS" and info.tags["prequel/api_job"] == "job-2"
        assert [m.asset_key for m in info.materializations] == [invoices]
        assert launcher.wait_idle(5)


def test_the_launcher_fails_a_job_whose_asset_never_appears(link):
    failures: list[tuple[str, str]] = []
    with Reloader(link) as reloader, Launcher(link, reloader, wait_seconds=1, check_seconds=0.1) as launcher:
        launcher.submit(
            "job-3",
            [["prequel", "acme", "ghost"]],
            on_launched=lambda *a: None,
            on_failed=lambda *a: failures.append(a),
        )
        assert launcher.wait_idle(30)
        assert reloader.wait_idle(30)
    ((job_id, message),) = failures
    assert job_id == "job-3" and "prequel/acme/ghost" in message and "did not appear" in message


def test_reloader_failures_are_logged_once_and_never_raised(caplog):
    with DagsterLink(f"http://127.0.0.1:{free_port()}", timeout=1) as link, Reloader(link) as reloader:
        for _ in range(3):
            reloader.request()
            assert reloader.wait_idle(10)
    assert reloader.last_error is not None and link.url in reloader.last_error
    warnings = [r for r in caplog.records if r.name == "prequel_dagster.api" and "Reloading" in r.getMessage()]
    assert len(warnings) == 1
