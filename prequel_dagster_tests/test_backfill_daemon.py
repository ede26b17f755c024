"""A partition-range backfill through a real Dagster instance, as the UI launches one: a running
``dagster-webserver`` and ``dagster-daemon`` (SQLite storage in a throwaway DAGSTER_HOME, the repo's
preloaded run launcher, the run queue with per-source and per-destination pools), GraphQL's
``launchPartitionBackfill`` over two providers' partitioned datasets and their streams, and the
reference receiver: the window's records, and only them, arrive.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from prequel_dagster.delivery.receiver import Receiver

from .backfill_helpers import create_orders_db, day_key, order_ids, orders_config, secrets
from .processes import log_tails, start_process, stop_process, wait_for
from .servers import free_port

BIN = Path(sys.executable).parent
LOCATION = "prequel_dagster"
PROVIDERS = ("acme", "globex")
INSTANCE = {
    "telemetry": {"enabled": False},
    "run_launcher": {"module": "prequel_dagster.run_launcher", "class": "PreloadedRunLauncher"},
    "run_coordinator": {
        "module": "dagster._core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    },
    # as the repo's dagster.yaml, with one slot per pool: a source or a destination is used by one run at a time
    "concurrency": {
        "pools": {"default_limit": 1, "granularity": "run"},
        "runs": {
            "max_concurrent_runs": 4,
            "tag_concurrency_limits": [
                {"key": "prequel/provider", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
            ],
        },
    },
}
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
POOL = "prequel_destination_ledger"  # the pool of the loads to the destination both providers share

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""
BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      runs(limit: 50) { runId status startTime endTime tags { key value } }
    }
    ... on PythonError { message }
  }
}"""
ASSET = """
query($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) { __typename ... on AssetNode { partitionKeys } }
}"""


class Stack(contextlib.ExitStack):
    def __init__(self, root: Path, url: str, procs: dict[str, subprocess.Popen]):
        super().__init__()
        self.root, self.url, self.procs = root, url, procs
        self.client = self.enter_context(httpx.Client(base_url=url, timeout=30))
        self.instance: dg.DagsterInstance

    def tails(self) -> str:
        return log_tails(self.root, 3000)

    def graphql(self, query: str, **variables: Any) -> dict:
        response = self.client.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def wait(self, what: str, ready: Callable[[], Any], timeout: float) -> Any:
        return wait_for(what, ready, timeout, self.procs, self.root, tolerate=(httpx.HTTPError,))


@pytest.fixture
def stack(pg, tmp_path, monkeypatch) -> Iterator[tuple[Stack, Receiver]]:
    passwords = secrets(PROVIDERS)
    for provider in PROVIDERS:
        create_orders_db(pg, provider, passwords[f"BACKFILL_{provider.upper()}_PASSWORD"])
    with Receiver() as receiver:
        config = tmp_path / "prequel.yaml"
        config.write_text(yaml.safe_dump(orders_config(pg, str(tmp_path / "lake"), receiver.url, PROVIDERS)))
        home = tmp_path / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump({**INSTANCE, "storage": {"sqlite": {"base_dir": str(home)}}}))
        # made here first: the webserver and the daemon would otherwise both create its SQLite databases at once
        instance = dg.DagsterInstance.from_config(str(home))
        (tmp_path / "workspace.yaml").write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {"python_module": {"module_name": "prequel_dagster.definitions", "location_name": LOCATION}}
                    ]
                }
            )
        )
        env = {
            **os.environ,
            **passwords,
            "DAGSTER_HOME": str(home),
            "PREQUEL_CONFIG": str(config),
            "DAGSTER_DISABLE_TELEMETRY": "1",
        }
        port = free_port()
        procs: dict[str, subprocess.Popen] = {}
        stack = Stack(tmp_path, f"http://127.0.0.1:{port}", procs)
        stack.instance = stack.enter_context(instance)
        try:
            procs["webserver"] = start_process(
                "webserver",
                [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
                env,
                tmp_path,
            )
            # the daemon, started beside it: the backfill daemon looks for requested backfills every 30 s
            procs["daemon"] = start_process(
                "daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], env, tmp_path
            )
            yield stack, receiver
        finally:
            stack.close()
            for proc in reversed(procs.values()):
                stop_process(proc)


def _overlaps(runs: list[dict]) -> bool:
    spans = sorted((r["startTime"], r["endTime"]) for r in runs)
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))


def test_a_partition_range_backfill_launched_through_graphql_delivers_that_window_only(stack):
    stack, receiver = stack
    started = time.monotonic()
    keys = [
        path
        for p in PROVIDERS
        for path in (["prequel", p, f"{p}-orders"], ["prequel", p, "streams", f"{p}-orders-ledger"])
    ]

    def location_loaded() -> list[str] | None:
        node = stack.graphql(ASSET, path=keys[0])["assetNodeOrError"]
        return node.get("partitionKeys") if node["__typename"] == "AssetNode" else None

    partitions = stack.wait("the webserver to serve the code location", location_loaded, 90)
    assert partitions[:3] == [day_key(0), day_key(1), day_key(2)]  # daily from the configured start
    # the destination's pool has no slot for now: the backfill's run must wait in the queue
    stack.instance.event_log_storage.set_concurrency_slots(POOL, 0)

    # what the UI's "Materialize selected" -> backfill dialog sends for a range of two days
    launched = stack.graphql(
        LAUNCH,
        params={
            "assetSelection": [{"path": k} for k in keys],
            "partitionNames": [day_key(1), day_key(2)],
            "title": "orders, two days",
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    expected = {f"{p}-orders-ledger": order_ids(p, 1, 2) for p in PROVIDERS}

    def delivered() -> dict[str, set[str]]:
        return {s: {r["record"]["id"] for r in receiver.store.records(stream_id=s)} for s in expected}

    def runs_of_backfill() -> list[dict]:
        backfill = stack.graphql(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        return backfill["runs"]

    queued = stack.wait("the backfill daemon to submit the runs", runs_of_backfill, 90)
    waited = time.monotonic()
    while time.monotonic() - waited < 4:
        statuses = {r["status"] for r in runs_of_backfill()}
        assert statuses <= {"NOT_STARTED", "QUEUED"}, f"a run started without its pool's slot: {statuses}"
        time.sleep(0.5)
    assert not any(delivered().values())
    stack.instance.event_log_storage.set_concurrency_slots(POOL, 1)

    def done() -> list[dict] | None:
        runs = runs_of_backfill()
        assert all(r["status"] != "FAILURE" for r in runs), f"a backfill run failed:\n{stack.tails()}"
        finished = runs and all(r["status"] in TERMINAL for r in runs)
        return runs if finished and delivered() == expected else None

    runs = stack.wait("the backfill's runs to deliver both providers' window", done, 150)
    # the window's records, and only them: nothing of day 0 (nor of the customers, not selected)
    assert delivered() == expected
    assert not receiver.store.records(stream_id="acme-customers-crm")
    assert all(r["status"] == "SUCCESS" for r in runs)
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert tags["dagster/backfill"] == backfill_id
        assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == (
            day_key(1),
            day_key(2),
        )  # one run per range (BackfillPolicy.single_run), not one per day
    assert {r["runId"] for r in queued} <= {r["runId"] for r in runs}
    # both providers deliver to one destination, whose pool has one slot: no two runs overlapped
    assert not _overlaps(runs)
    print(f"\nbackfill of 2 days x {len(PROVIDERS)} providers: {len(runs)} runs, {time.monotonic() - started:.1f} s")
    _screenshot(stack, backfill_id)


SCREENSHOT_ENV_VAR = "PREQUEL_BACKFILL_SCREENSHOT"


def _screenshot(stack: "Stack", backfill_id: str) -> None:
    """With ``PREQUEL_BACKFILL_SCREENSHOT=<file.png>``: headless Chromium's picture of the backfill's
    page in the Dagster UI (README "In the Dagster UI"), once the daemon marks it complete. Not taken
    otherwise."""
    target = os.environ.get(SCREENSHOT_ENV_VAR)
    if not target:
        return
    url = stack.url
    stack.graphql("mutation { setNuxSeen }")  # no "join the community" dialog over the page

    def completed() -> bool:
        found = stack.graphql(
            "query B($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }",
            id=backfill_id,
        )["partitionBackfillOrError"]
        return found.get("status") == "COMPLETED_SUCCESS" or found.get("status") == "COMPLETED"

    stack.wait("the daemon to mark the backfill complete", completed, 90)
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "install Chromium (Debian: apt-get install chromium) to take the screenshot"
    subprocess.run(
        [
            browser,
            *("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"),
            *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
            "--window-size=1440,900",
            "--virtual-time-budget=60000",
            "--run-all-compositor-stages-before-draw",
            f"--screenshot={Path(target).resolve()}",
            f"{url}/runs/b/{backfill_id}?tab=overview",
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
