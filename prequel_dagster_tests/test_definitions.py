"""The Dagster surface: keys, groups, kinds, lineage, schedules, the automation sensor, the component, the CLI."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from prequel_dagster import DagsterPrequelTranslator, PrequelImportComponent, build_definitions, load_config
from prequel_dagster.automation import cron_for_minutes
from prequel_dagster.demo import TEMPLATE, write_demo_data

REPO = Path(__file__).resolve().parents[1]


def _demo_defs(tmp_path: Path, translator=None) -> dg.Definitions:
    return build_definitions(load_config(write_demo_data(tmp_path / "demo")), translator=translator)


def test_assets_keys_groups_kinds_and_lineage(tmp_path):
    defs = _demo_defs(tmp_path)
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert set(specs) == {
        "prequel/acme/acme-users",
        "prequel/acme/acme-orders",
        "prequel/globex/globex-users",
        "prequel/acme/streams/acme-users-app",
        "prequel/acme/streams/acme-orders-app",
        "prequel/globex/streams/globex-users-app",
    }
    users = specs["prequel/acme/acme-users"]
    assert users.group_name == "prequel_acme" and users.kinds == {"sqlite", "parquet"}
    assert users.tags["prequel/provider"] == "acme"
    stream = specs["prequel/acme/streams/acme-users-app"]
    assert stream.group_name == "prequel_acme" and stream.kinds == {"webhook"}
    assert [d.asset_key.to_user_string() for d in stream.deps] == ["prequel/acme/acme-users"]
    assert stream.automation_condition is not None
    lineage = stream.metadata["dagster/column_lineage"].deps_by_column
    assert [d.column_name for d in lineage["full_name"]] == ["first_name", "last_name"]
    assert [d.column_name for d in lineage["tier"]] == ["is_pro"]
    assert {d.asset_key.to_user_string() for deps in lineage.values() for d in deps} == {"prequel/acme/acme-users"}
    schema = {c.name: c.type for c in stream.metadata["dagster/column_schema"].columns}
    assert schema == {
        "id": "string",
        "email": "string",
        "full_name": "string",
        "tier": "string",
        "updated_at": "string",
    }
    assert specs["prequel/globex/globex-users"].group_name == "prequel_globex"


def test_schedules_from_frequency_and_a_running_automation_sensor(tmp_path):
    defs = _demo_defs(tmp_path)
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["prequel_extract_every_15_minutes"].cron_schedule == "*/15 * * * *"
    assert schedules["prequel_extract_every_60_minutes"].cron_schedule == "0 * * * *"
    assert schedules["prequel_extract_every_60_minutes"].default_status == dg.DefaultScheduleStatus.RUNNING
    sensor = next(s for s in defs.sensors if s.name == "prequel_streams_follow_datasets")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert cron_for_minutes(45) == ("*/30 * * * *", 30) and cron_for_minutes(180) == ("0 */3 * * *", 180)


def test_streams_follow_their_dataset_automatically(tmp_path):
    defs = _demo_defs(tmp_path)
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # baseline tick
        job = defs.resolve_implicit_global_asset_job_def()
        job.execute_in_process(
            instance=instance, asset_selection=[dg.AssetKey(["prequel", "acme", "acme-orders"])], raise_on_error=False
        )
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        requested = {r.key.to_user_string() for r in after.results if r.true_subset.size}
    assert "prequel/acme/streams/acme-orders-app" in requested
    assert "prequel/acme/streams/acme-users-app" not in requested


def test_translator_subclass_changes_keys_and_groups(tmp_path):
    class MyTranslator(DagsterPrequelTranslator):
        def get_dataset_asset_key(self, props):
            return dg.AssetKey(["imports", props.provider.id, props.dataset.name])

        def get_group_name(self, provider):
            return f"tenant_{provider.id}"

    defs = _demo_defs(tmp_path, MyTranslator())
    keys = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert "imports/acme/users" in keys and keys["imports/acme/users"].group_name == "tenant_acme"
    stream = keys["prequel/acme/streams/acme-users-app"]
    assert [d.asset_key.to_user_string() for d in stream.deps] == ["imports/acme/users"]


def test_component_takes_a_path_or_the_keys_inline_in_defs_yaml(tmp_path):
    import yaml
    from dagster.components.testing import create_defs_folder_sandbox

    config_path = write_demo_data(tmp_path / "demo")
    attributes = [{"config_path": str(config_path)}, yaml.safe_load(TEMPLATE.read_text())]
    for i, attrs in enumerate(attributes):
        with create_defs_folder_sandbox() as sandbox:
            defs_path = sandbox.scaffold_component(
                component_cls=PrequelImportComponent,
                defs_path=f"imports{i}",
                defs_yaml_contents={"type": "prequel_dagster.PrequelImportComponent", "attributes": attrs},
            )
            with sandbox.load_component_and_build_defs(defs_path=defs_path) as (component, defs):
                assert isinstance(component, PrequelImportComponent)
                assert len(list(defs.resolve_all_asset_specs())) == 6


def test_many_providers_build_and_validate(tmp_path):
    """Correctness at 300 providers; how fast is measured by ``benchmarks/run.py defs``."""
    import copy

    import yaml

    raw = yaml.safe_load(TEMPLATE.read_text())
    big = copy.deepcopy(raw)
    for i in range(300):
        p = f"tenant{i}"
        big["providers"].append({"id": p, "name": p, "datalake_id": "lake", "products": ["all"]})
        big["sources"].append(
            {"id": f"{p}-db", "name": p, "vendor": "sqlite", "provider_id": p, "sqlite": {"path": "x.db"}}
        )
        ds = copy.deepcopy(raw["datasets"][0]) | {"id": f"{p}-users", "source_id": f"{p}-db"}
        big["datasets"].append(ds)
        st = copy.deepcopy(raw["streams"][0]) | {"id": f"{p}-users-app", "dataset_id": f"{p}-users"}
        big["streams"].append(st)
    defs = build_definitions(load_config(big, base_dir=tmp_path))
    dg.Definitions.validate_loadable(defs)
    assert len(list(defs.resolve_all_asset_specs())) == 606


def test_dagster_definitions_validate_passes_on_the_workspace(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PREQUEL_CONFIG", "DAGSTER_HOME")}
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "All code locations passed validation" in proc.stderr + proc.stdout


def test_demo_command_runs_through_dagster_and_prints_per_provider_and_stream(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PREQUEL_CONFIG", "DAGSTER_HOME")}
    proc = subprocess.run(
        [sys.executable, "-m", "prequel_dagster.cli", "demo", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "extract acme     acme-users         read   400: new 400" in out
    assert "load    acme     acme-users-app     delivered    17 (deletes 2)" in out
    assert "load    globex   globex-users-app   delivered     3" in out
    assert "dagster dev -w workspace.yaml" in out
    assert (tmp_path / ".prequel" / "demo" / "lake" / "lakehouse" / "acme" / "acme-users").is_dir()
    # the runs are in the instance the repo's dagster.yaml points at
    instance = dg.DagsterInstance.from_config(str(tmp_path / ".prequel" / "dagster"))
    assert len(instance.get_runs()) == 2


def test_demo_records_its_runs_in_the_users_instance_when_dagster_home_is_set(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if k != "PREQUEL_CONFIG"} | {"DAGSTER_HOME": str(home)}
    proc = subprocess.run(
        [sys.executable, "-m", "prequel_dagster.cli", "demo", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"runs are recorded in the Dagster instance in $DAGSTER_HOME ({home})" in proc.stdout
    assert len(dg.DagsterInstance.from_config(str(home)).get_runs()) == 2
    assert not (tmp_path / ".prequel" / "dagster").exists()
