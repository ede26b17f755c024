"""The production instance, exercised: README "Scaling out"'s ``dagster.yaml``, read from the README
as it is (PostgreSQL storage through dagster-postgres, the run queue and its per-provider limit, run
retries, the preloaded run launcher), under real ``dagster code-server start``, ``dagster-daemon
run`` and ``dagster-webserver`` processes sharing one code server (the topology of
``deploy/helm/values.yaml``).

Three providers on the session's PostgreSQL cluster: acme (schedule every minute; its first load is
answered 500 half-way, so it fails and the daemon's run retry resumes it), globex (its source points
at a closed port: down) and initech (extracted by hand three times at once, its stream then loaded
by the automation sensor). Nothing is triggered by hand except initech's runs and the acme run held
by a table lock to show that one provider's long run does not hold back another's.
"""

import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.storage.tags import PARENT_RUN_ID_TAG, RETRY_NUMBER_TAG, SCHEDULE_NAME_TAG

from prequel_dagster.api.dagster_link import DagsterLink
from prequel_dagster.delivery.receiver import ReceivedRequest, Receiver

from .pg_helpers import create_provider_db, dsn, execute
from .processes import log_tails, start_process, stop_process, wait_for
from .servers import free_port

pytestmark = pytest.mark.instance

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCATION = "prequel_dagster"
PREFIX = "prodinst"  # this module's databases and roles (the session's cluster is shared)
USERS = {"acme": 100, "initech": 30}
BATCH = 20
EVERY_MINUTE = "prequel_extract_every_1_minutes"
SENSOR = "prequel_streams_follow_datasets"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def readme_instance_yaml() -> str:
    """The ``dagster.yaml`` of README "Scaling out": the one yaml block there with ``postgres_db``."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Scaling out\n", 1)[1].split("\n## ", 1)[0]
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", section, re.S) if "postgres_db:" in b]
    return block


def prequel_config(pg: dict, lake: Path, receiver_url: str, down_port: int) -> dict:
    def source(provider: str, port: int) -> dict:
        name = f"{PREFIX}_{provider}"
        return {
            "id": f"{provider}-pg",
            "name": f"{provider}-postgres",
            "vendor": "postgres",
            "provider_id": provider,
            "postgres": {
                "host": pg["host"],
                "port": port,
                "database": name,
                "auth_method": "password_auth",
                "password_auth": {"username": name, "password": "${" + provider.upper() + "_PG_PASSWORD}"},
            },
        }

    def dataset(provider: str, minutes: int) -> dict:
        return {
            "id": f"{provider}-users",
            "name": "users",
            "source_id": f"{provider}-pg",
            "method": "table",
            "table": {"source_table_namespace": "public", "source_table_name": "users"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
            "frequency_minutes": minutes,
        }

    def stream(provider: str) -> dict:
        return {
            "id": f"{provider}-users-app",
            "name": "users-stream",
            "dataset_id": f"{provider}-users",
            "destination_id": "app",
            "mappings": [
                {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}},
                {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
            ],
        }

    providers = ("acme", "globex", "initech")
    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(lake)}}],
        "providers": [{"id": p, "name": p.title(), "datalake_id": "lake", "products": ["all"]} for p in providers],
        "sources": [source("acme", pg["port"]), source("globex", down_port), source("initech", pg["port"])],
        # acme and globex on the every-minute schedule; initech's daily schedule never ticks here
        "datasets": [dataset("acme", 1), dataset("globex", 1), dataset("initech", 1440)],
        "destinations": [
            {
                "id": "app",
                "name": "app-users",
                "type": "webhook_batch",
                "max_records_per_minute": 1_000_000,
                "record_schema": {
                    "type": "object",
                    "required": ["id", "email"],
                    "properties": {"id": {"type": "string"}, "email": {"type": "string"}},
                },
                "webhook_batch": {
                    "request_template": {
                        "uri": receiver_url + "/batches",
                        "headers": {"Authorization": "Bearer ${APP_TOKEN}"},
                    },
                    "max_records_per_batch": BATCH,
                    # a batch answered 500 twice is given up, and the load stops at the first one
                    "max_attempts": 2,
                    "retry_initial_backoff_seconds": 0.05,
                    "retry_max_backoff_seconds": 0.2,
                    "max_failed_batches_in_a_row": 1,
                },
            }
        ],
        "streams": [stream(p) for p in providers],
    }


class FailHalfway:
    """Receiver fault: ``stream_id``'s first ``accept`` requests go through, the next ``failures`` are
    answered 500 (a batch given up: the load stops, the rest of it stays pending), then all go through."""

    def __init__(self, stream_id: str, accept: int, failures: int):
        self.stream_id, self.accept, self.failures = stream_id, accept, failures
        self.failed: list[dict] = []  # the envelopes answered 500
        self.lock = threading.Lock()

    def __call__(self, request: ReceivedRequest) -> int | None:
        try:
            envelope = json.loads(request.body)
        except ValueError:
            return None
        if not isinstance(envelope, dict) or envelope.get("stream_id") != self.stream_id:
            return None
        with self.lock:
            if self.accept > 0:
                self.accept -= 1
                return None
            if self.failures > 0:
                self.failures -= 1
                self.failed.append(envelope)
                return 500
        return None


@dataclass
class Stack:
    pg: dict
    secrets: dict[str, str]
    receiver: Receiver
    flaky: FailHalfway
    instance: dg.DagsterInstance
    link: DagsterLink
    logs: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def tails(self) -> str:
        return log_tails(self.logs)

    def wait(self, what: str, ready: Callable[[], Any], timeout: float) -> Any:
        """Poll ``ready`` until it returns something truthy; fail with the processes' logs after ``timeout`` s."""
        return wait_for(what, ready, timeout, self.procs, self.logs)

    def runs(self, **tags: str) -> list[dg.RunRecord]:
        return list(self.instance.get_run_records(dg.RunsFilter(tags=tags) if tags else None))

    def finished(self, run_ids: list[str], timeout: float) -> list[dg.RunRecord]:
        def done() -> list[dg.RunRecord] | None:
            records = self.instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
            ok = len(records) == len(run_ids) and all(r.dagster_run.status.value in TERMINAL for r in records)
            return list(records) if ok else None

        return self.wait(f"runs {run_ids} to finish", done, timeout)


def _code_server_up(port: int) -> bool:
    from dagster._grpc.client import DagsterGrpcClient

    try:
        response = DagsterGrpcClient(port=port, host="127.0.0.1").list_repositories()
    except Exception:
        return False
    return "ListRepositoriesResponse" in str(response)  # else an error: still loading, or failed


@pytest.fixture(scope="module")
def stack(pg, tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("production_instance")
    secrets = {f"{p.upper()}_PG_PASSWORD": f"{p}-" + os.urandom(6).hex() for p in ("acme", "globex", "initech")}
    create_provider_db(
        pg, f"{PREFIX}_acme", users=USERS["acme"], domain="acme.test", password=secrets["ACME_PG_PASSWORD"]
    )
    create_provider_db(
        pg, f"{PREFIX}_initech", users=USERS["initech"], domain="initech.test", password=secrets["INITECH_PG_PASSWORD"]
    )
    instance_db = f"{PREFIX}_dagster"
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{instance_db}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{instance_db}"')

    flaky = FailHalfway("acme-users-app", accept=2, failures=2)
    with Receiver(fault=flaky) as receiver, pytest.MonkeyPatch.context() as mp:
        config = root / "prequel.yaml"
        config.write_text(yaml.safe_dump(prequel_config(pg, root / "lake", receiver.url, free_port())))
        home = root / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(readme_instance_yaml())
        grpc_port, web_port = free_port(), free_port()
        (root / "workspace.yaml").write_text(
            yaml.safe_dump(
                {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}}]}
            )
        )
        settings = {
            **secrets,
            "APP_TOKEN": "tok-" + os.urandom(8).hex(),
            "PREQUEL_CONFIG": str(config),
            "DAGSTER_PG_HOST": pg["host"],
            "DAGSTER_PG_PORT": str(pg["port"]),
            "DAGSTER_PG_USERNAME": pg["user"],
            "DAGSTER_PG_PASSWORD": pg["password"],
            "DAGSTER_PG_DB": instance_db,
            "DAGSTER_DISABLE_TELEMETRY": "1",
        }
        for key, value in settings.items():  # this process reads the instance (and runs a job) too
            mp.setenv(key, value)
        env = {**os.environ, **settings, "DAGSTER_HOME": str(home)}
        logs = root / "logs"
        logs.mkdir()
        procs: dict[str, subprocess.Popen] = {}
        try:
            procs["code-server"] = start_process(
                "code-server",
                [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(grpc_port)]
                + ["-m", "prequel_dagster.definitions", "--location-name", LOCATION],
                env,
                root,
                logs,
            )
            with (
                dg.DagsterInstance.from_config(str(home)) as instance,
                DagsterLink(f"http://127.0.0.1:{web_port}", LOCATION, timeout=60) as link,
            ):
                stack = Stack(pg, secrets, receiver, flaky, instance, link, logs, procs)
                stack.wait("the code server to load the definitions", lambda: _code_server_up(grpc_port), 120)
                daemon = [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]
                procs["daemon"] = start_process("daemon", daemon, env, root, logs)
                webserver = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port)]
                webserver += ["-w", "workspace.yaml"]
                procs["webserver"] = start_process("webserver", webserver, env, root, logs)

                def location_loaded() -> bool:
                    with contextlib.suppress(Exception):
                        return ("prequel", "initech", "initech-users") in link.asset_keys()
                    return False

                stack.wait("the webserver to serve the code location", location_loaded, 120)
                yield stack
        finally:
            for proc in reversed(procs.values()):
                stop_process(proc)


def overlapping(records: list[dg.RunRecord]) -> int:
    """The most runs of ``records`` that were between their start and their end at once."""
    edges = []
    for record in records:
        if record.start_time is not None:
            edges += [(record.start_time, 1), (record.end_time or time.time(), -1)]
    most = now = 0
    for _, step in sorted(edges):  # at equal times an end (-1) sorts before a start
        now += step
        most = max(most, now)
    return most


def delivered(receiver: Receiver, stream_id: str) -> dict[str, dict]:
    return {r["record"]["id"]: r for r in receiver.store.records(stream_id=stream_id)}


def test_three_runs_of_one_provider_wait_for_its_limit_and_the_sensor_loads_its_stream(stack):
    assert type(stack.instance.run_storage).__name__ == "PostgresRunStorage"  # README's instance, as read

    def launch(_: int) -> str:
        return stack.link.launch([["prequel", "initech", "initech-users"]], tags={"prequel/provider": "initech"})

    with ThreadPoolExecutor(3) as pool:  # three at once, as three clicks on Materialize would
        run_ids = list(pool.map(launch, range(3)))
    records = stack.finished(run_ids, timeout=150)
    assert [r.dagster_run.status.value for r in records] == ["SUCCESS"] * 3
    assert max(r.create_timestamp.timestamp() for r in records) < min(r.end_time for r in records)  # queued together
    assert overlapping(records) == 1  # and run one at a time: prequel/provider's limit is 1

    # No manual step for the load: the automation sensor sees the extract's new data.
    stream = dg.AssetKey(["prequel", "initech", "streams", "initech-users-app"])

    def sensor_load() -> list[dg.RunRecord]:
        return [
            r
            for r in stack.runs(**{"dagster/sensor_name": SENSOR})
            if stream in (r.dagster_run.asset_selection or ()) and r.dagster_run.status.value in TERMINAL
        ]

    (load,) = stack.wait("the automation sensor's load of initech's stream", sensor_load, 150)
    assert load.dagster_run.status.value == "SUCCESS"
    assert len(delivered(stack.receiver, "initech-users-app")) == USERS["initech"]
    # README: the sensor's runs carry no prequel/provider tag (one sensor serves every provider's streams)
    assert "prequel/provider" not in load.dagster_run.tags


@dg.definitions
def multiprocess_defs() -> dg.Definitions:
    """The config's definitions with the multiprocess executor (each step's process rebuilds them from here)."""
    from prequel_dagster import build_definitions

    return build_definitions(os.environ["PREQUEL_CONFIG"], executor=dg.multiprocess_executor)


def test_the_multiprocess_executor_runs_each_step_in_its_own_process_on_the_postgres_instance(stack):
    pw = stack.secrets["INITECH_PG_PASSWORD"]
    db = f"{PREFIX}_initech"
    execute(stack.pg, db, pw, "INSERT INTO users VALUES (501, 'u501@initech.test', 'N', 'P', 1.00, now(), false)")
    selection = [
        dg.AssetKey(["prequel", "initech", "initech-users"]),
        dg.AssetKey(["prequel", "initech", "streams", "initech-users-app"]),
    ]
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    repository = ReconstructableRepository.for_module(__name__, "multiprocess_defs", str(REPO))
    job = repository.get_reconstructable_job("__ASSET_JOB")
    with dg.execute_job(job, stack.instance, asset_selection=selection) as result:
        assert result.success
        run_id = result.run_id
    step_pids = {
        e.step_key: e.dagster_event.pid
        for e in stack.instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)
        if e.step_key is not None
    }
    assert len(step_pids) >= 2 and len(set(step_pids.values())) == len(step_pids)  # a process per step
    assert os.getpid() not in step_pids.values()
    assert delivered(stack.receiver, "initech-users-app")["501"]["record"]["email"] == "u501@initech.test"


def test_the_schedule_runs_each_provider_and_a_retry_resumes_a_failed_load_with_the_same_ids(stack):
    def first_acme_run() -> dg.RunRecord | None:
        runs = stack.runs(**{"prequel/provider": "acme", SCHEDULE_NAME_TAG: EVERY_MINUTE})
        runs = [r for r in runs if RETRY_NUMBER_TAG not in r.dagster_run.tags]
        return min(runs, key=lambda r: r.create_timestamp) if runs else None

    first = stack.wait("the schedule's first acme run", first_acme_run, 150)
    (first,) = stack.finished([first.dagster_run.run_id], timeout=120)
    assert first.dagster_run.status.value == "FAILURE"  # its load was answered 500 half-way

    def retry() -> dg.RunRecord | None:
        runs = stack.runs(**{PARENT_RUN_ID_TAG: first.dagster_run.run_id})
        return runs[0] if runs else None

    retried = stack.wait("the daemon to retry the failed run", retry, 90)
    (retried,) = stack.finished([retried.dagster_run.run_id], timeout=120)
    assert retried.dagster_run.status.value == "SUCCESS"
    assert retried.dagster_run.tags[RETRY_NUMBER_TAG] == "1"
    assert retried.dagster_run.tags["prequel/provider"] == "acme"

    # The receiver's view: one load. The batch answered 500 twice (both attempts, one id) went to the
    # dead letter and stopped the load; the two after it stayed pending and were sent afterwards under
    # the same load id; the two accepted before it were never sent again.
    failed = stack.flaky.failed
    assert len(failed) == 2 and failed[0]["batch_id"] == failed[1]["batch_id"]
    load_id, given_up = failed[0]["load_id"], failed[0]["batch_id"]
    sent = [(json.loads(r.body), r.answered) for r in stack.receiver.requests if r.body]
    load = [(b["batch_id"], answer) for b, answer in sent if b.get("load_id") == load_id]
    first_500 = next(i for i, (_, answer) in enumerate(load) if answer == 500)
    before = [batch_id for batch_id, answer in load[:first_500] if answer == 202]
    after = [batch_id for batch_id, answer in load[first_500:] if answer == 202]
    assert len(before) == 2 and len(set(after)) == 2  # 4 of the 5 batches, under one load id
    assert not set(before) & set(after) and given_up not in before + after
    stored = {r["batch_id"] for r in stack.receiver.store.records(stream_id="acme-users-app")}
    assert set(before + after) <= stored


def test_rows_inserted_in_a_source_reach_the_destination_with_no_manual_step(stack, capsys):
    pw = stack.secrets["ACME_PG_PASSWORD"]
    new = [str(i) for i in range(1001, 1006)]
    changed_at = time.time()
    execute(
        stack.pg,
        f"{PREFIX}_acme",
        pw,
        "INSERT INTO users SELECT g, 'n' || g || '@acme.test', 'N', 'P', 1.00, now(), false FROM generate_series(1001, 1005) g",
    )

    def arrived() -> list[dict] | None:
        got = delivered(stack.receiver, "acme-users-app")
        return [got[i] for i in new] if all(i in got for i in new) else None

    records = stack.wait("the new rows at the destination", arrived, 180)
    batch_ids = {r["batch_id"] for r in records}
    with stack.receiver.store.lock:
        received_at = max(
            stack.receiver.store.db.execute(
                f"SELECT received_at FROM batches WHERE batch_id IN ({','.join('?' * len(batch_ids))})", list(batch_ids)
            ).fetchall()
        )[0]
    seconds = received_at - changed_at
    assert 0 < seconds < 180
    # delivered by a scheduled run (extract, then the stream's load, in one run per provider)
    (run,) = [
        r
        for r in stack.runs(**{"prequel/provider": "acme", SCHEDULE_NAME_TAG: EVERY_MINUTE})
        if r.start_time and r.start_time <= received_at <= (r.end_time or time.time())
    ]
    tick = dt.datetime.fromisoformat(run.dagster_run.tags["dagster/run_key"].split(":", 1)[1]).timestamp()
    with capsys.disabled():  # in CI's log too: README "Scaling out" quotes it
        print(
            f"\nsource change to delivery, by the daemon alone: {seconds:.1f} s (the next tick "
            f"{tick - changed_at:.1f} s after the change, the batch {received_at - tick:.1f} s after the tick)"
        )


def test_a_down_source_fails_only_its_providers_runs(stack):
    def by_provider() -> dict[str, list[dg.RunRecord]]:
        grouped = defaultdict(list)
        for record in stack.runs():
            grouped[record.dagster_run.tags.get("prequel/provider", "")].append(record)
        return grouped

    def globex_retried() -> bool:  # a tick's run and its two retries (README: max_retries: 2)
        done = [r for r in by_provider()["globex"] if r.dagster_run.status.value in TERMINAL]
        return {r.dagster_run.tags.get(RETRY_NUMBER_TAG) for r in done} >= {None, "1", "2"}

    stack.wait("globex's run and its retries to end", globex_retried, 90)
    runs = by_provider()
    globex = [r for r in runs["globex"] if r.dagster_run.status.value in TERMINAL]
    assert globex and all(r.dagster_run.status.value == "FAILURE" for r in globex)
    error = stack.link.run(globex[0].dagster_run.run_id).error or ""
    assert "globex" in error and "globex-pg" in error, error
    acme = runs["acme"]  # two ticks and a retry so far
    failed = [r for r in acme if r.dagster_run.status.value not in ("SUCCESS", "QUEUED", "STARTING", "STARTED")]
    assert len(acme) >= 3 and len(failed) == 1  # only the run whose load was failed on purpose
    assert RETRY_NUMBER_TAG not in failed[0].dagster_run.tags
    assert all(
        r.dagster_run.status.value == "SUCCESS" for r in runs["initech"] if r.dagster_run.status.value in TERMINAL
    )


def test_no_provider_ever_ran_more_runs_at_once_than_its_limit(stack):
    runs = stack.runs()
    by_provider: dict[str, list[dg.RunRecord]] = defaultdict(list)
    for record in runs:
        if "prequel/provider" in record.dagster_run.tags:
            by_provider[record.dagster_run.tags["prequel/provider"]].append(record)
    assert {"acme", "globex", "initech"} <= by_provider.keys()
    assert {p: overlapping(rs) for p, rs in by_provider.items()} == {p: 1 for p in by_provider}


def test_one_providers_long_run_does_not_hold_back_another_providers_run(stack):
    """The limit is per provider, not one queue for all: while acme's run is held (its source table
    locked, so its extract waits), initech's run starts, succeeds and ends. Held by a lock rather than
    hoping two short runs overlap, so a slow machine cannot make this pass or fail by chance."""
    acme_db, acme_pw = f"{PREFIX}_acme", stack.secrets["ACME_PG_PASSWORD"]

    def acme_waits_on_the_lock() -> bool:
        with psycopg.connect(dsn(stack.pg, acme_db, acme_db, acme_pw), autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", [acme_db]
            ).fetchone()
        return bool(row and row[0])

    def acme_started() -> list[dg.RunRecord]:
        return [r for r in stack.runs(**{"prequel/provider": "acme"}) if r.dagster_run.status.value == "STARTED"]

    with psycopg.connect(dsn(stack.pg, acme_db, acme_db, acme_pw)) as lock:
        lock.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # held until this block ends
        mine = stack.link.launch([["prequel", "acme", "acme-users"]], tags={"prequel/provider": "acme"})
        stack.wait("an acme run to wait on its locked source table", acme_waits_on_the_lock, 150)
        (held,) = stack.wait("the held acme run", acme_started, 30)
        other = stack.link.launch([["prequel", "initech", "initech-users"]], tags={"prequel/provider": "initech"})
        (initech,) = stack.finished([other], timeout=150)
        assert initech.dagster_run.status.value == "SUCCESS"
        (still,) = [
            r for r in stack.runs(**{"prequel/provider": "acme"}) if r.dagster_run.run_id == held.dagster_run.run_id
        ]
        assert still.dagster_run.status.value == "STARTED" and still.end_time is None  # acme's is held yet
        lock.rollback()
    (acme,) = stack.finished([mine], timeout=150)
    assert acme.dagster_run.status.value == "SUCCESS"
    (held,) = stack.finished([held.dagster_run.run_id], timeout=150)
    assert overlapping([held, initech]) == 2


def test_the_postgres_url_form_with_psycopg2_works_too(pg, tmp_path):
    """README: ``postgres_url: postgresql+psycopg2://...`` in place of ``postgres_db`` (a run's events
    go through dagster-postgres's NOTIFY, which psycopg 3 fails)."""
    database = f"{PREFIX}_url"
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    url = f"postgresql+psycopg2://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{database}"
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_url": url}}}))

    @dg.asset
    def one() -> int:
        return 1

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert dg.materialize([one], instance=instance).success
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"


def test_helm_values_and_dockerfile_match_the_proven_instance():
    values = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    instance = yaml.safe_load(readme_instance_yaml())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    assert deployment["codeServerArgs"] == ["-m", "prequel_dagster.definitions", "--location-name", LOCATION]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True and coordinator["type"] == "QueuedRunCoordinator"
    assert coordinator["config"]["queuedRunCoordinator"]["dequeueIntervalSeconds"] == 1
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    assert (
        concurrency["pools"]
        == {"defaultLimit": 4, "granularity": "run"}
        == {
            "defaultLimit": instance["concurrency"]["pools"]["default_limit"],
            "granularity": instance["concurrency"]["pools"]["granularity"],
        }
    )
    assert concurrency["runs"]["tagConcurrencyLimits"] == instance["concurrency"]["runs"]["tag_concurrency_limits"]
    retries = values["dagsterDaemon"]["runRetries"]
    assert retries["enabled"] is True and retries["maxRetries"] == instance["run_retries"]["max_retries"]

    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"pip install[^\n]*\.\[k8s\]", dockerfile)
    assert '"code-server", "start"' in dockerfile and '"prequel_dagster.definitions"' in dockerfile
    assert f'"{deployment["port"]}"' in dockerfile
