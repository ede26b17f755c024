"""The repo's run launcher: each run in its own process, forked from a preloaded server, launched
through a real Dagster instance and code location as the daemon's run queue launches them."""

import os
import socket
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.test_utils import poll_for_finished_run
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget

from prequel_dagster import build_definitions, load_config
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.run_launcher import WORKER_TAG

from .test_delivery_ids import local_config

REPO = Path(__file__).resolve().parents[1]


def two_providers(tmp_path: Path, receiver: Receiver) -> dict:
    """acme delivers two rows; globex's folder is missing, so its extract fails."""
    raw = local_config(tmp_path, "lake", receiver, {1: "a@x", 2: "b@x"}, as_dict=True)
    raw["providers"].append({"id": "globex", "name": "globex", "datalake_id": "lake", "products": ["all"]})
    raw["sources"].append(
        {"id": "gx", "name": "gx", "vendor": "local", "provider_id": "globex", "local": {"path": "missing"}}
    )
    raw["datasets"].append({**raw["datasets"][0], "id": "gx-users", "source_id": "gx"})
    return raw


@pytest.fixture
def instance():
    launcher = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_launcher"]
    with dg.instance_for_test(overrides={"run_launcher": launcher}) as instance:
        yield instance


def launch_schedule_tick(
    instance: dg.DagsterInstance, tmp_path: Path, monkeypatch, raw: dict
) -> dict[str, dg.DagsterRun]:
    """``raw`` written as the config, a code server started on it, and the schedule's tick: each run
    request created and launched through the instance, as the run queue does; the finished runs by provider."""
    (tmp_path / "prequel.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("PREQUEL_CONFIG", str(tmp_path / "prequel.yaml"))
    defs = build_definitions(load_config(tmp_path / "prequel.yaml"))
    (schedule,) = [s for s in defs.schedules if s.name.startswith("prequel_extract_every")]
    with dg.build_schedule_context(instance=instance) as context:
        requests = schedule.evaluate_tick(context).run_requests
    job = defs.resolve_implicit_global_asset_job_def()
    target = ModuleTarget(
        module_name="prequel_dagster.definitions",
        attribute=None,
        working_directory=str(tmp_path),
        location_name="prequel",
    )
    with WorkspaceProcessContext(instance, target) as workspace:
        request_context = workspace.create_request_context()
        location = request_context.get_code_location("prequel")
        (repository,) = location.get_repositories().values()
        remote_job = repository.get_full_job(job.name)
        runs = {}
        for request in requests:
            run = instance.create_run_for_job(
                job_def=job,
                asset_selection=frozenset(request.asset_selection or []),
                tags=request.tags,
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
            )
            instance.launch_run(run.run_id, request_context)
            runs[request.tags["prequel/provider"]] = run
        return {provider: poll_for_finished_run(instance, run.run_id, timeout=120) for provider, run in runs.items()}


def test_each_run_is_its_own_forked_process_and_a_failing_provider_fails_alone(instance, tmp_path, monkeypatch):
    with Receiver() as receiver:
        finished = launch_schedule_tick(instance, tmp_path, monkeypatch, two_providers(tmp_path, receiver))
        assert finished["acme"].status == dg.DagsterRunStatus.SUCCESS
        assert finished["globex"].status == dg.DagsterRunStatus.FAILURE
        assert sorted(r["record"]["email"] for r in receiver.store.records()) == ["a@x", "b@x"]
    workers = {provider: run.tags[WORKER_TAG] for provider, run in finished.items()}
    hosts, pids = zip(*(w.rsplit(":", 1) for w in workers.values()), strict=True)
    assert set(hosts) == {socket.gethostname()}
    assert len(set(pids)) == 2 and str(os.getpid()) not in pids  # one process per run, none of them ours
    events = instance.all_logs(finished["acme"].run_id)
    assert any("forked from the preloaded server" in (e.message or "") for e in events)
    assert any(f"Started process for run (pid: {pids[0]})" in (e.message or "") for e in events)
    failure = "\n".join(e.message or "" for e in instance.all_logs(finished["globex"].run_id))
    assert "gx-users" in failure  # the failing dataset is named in its own run's logs


def test_a_run_executes_the_config_as_it_is_now_not_as_the_server_preloaded_it(instance, tmp_path, monkeypatch):
    with Receiver() as receiver:
        raw = two_providers(tmp_path, receiver)
        assert launch_schedule_tick(instance, tmp_path, monkeypatch, raw)["acme"].is_success
        # the stream now sends emails upper-cased, and a row changes: the next run must map with the new config
        raw["streams"][0]["mappings"][1] = {
            "target_field": "email",
            "field_type": "expression",
            "expression": {"expr": "upper(email)"},
        }
        (tmp_path / "drop" / "users.csv").write_text("id,email\n1,a@x\n2,c@x\n")
        assert launch_schedule_tick(instance, tmp_path, monkeypatch, raw)["acme"].is_success
        assert [r["record"]["email"] for r in receiver.store.records()][-1] == "C@X"


def test_terminate_interrupts_only_a_worker_on_this_machine(instance):
    launcher = instance.run_launcher
    run = instance.create_run_for_job(job_def=dg.GraphDefinition(name="g").to_job(), status=dg.DagsterRunStatus.STARTED)
    assert launcher.terminate(run.run_id) is False  # no worker recorded: nothing to interrupt
    instance.add_run_tags(run.run_id, {WORKER_TAG: "another-host:12345"})
    assert launcher.terminate(run.run_id) is False
    assert any("not on this machine" in (e.message or "") for e in instance.all_logs(run.run_id))
    assert launcher.terminate("no-such-run") is False
