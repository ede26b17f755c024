"""README "Dagster surface" claims that no other test checks: the freshness policy of every asset
(warn after 1.5x, fail after 2x its dataset's frequency_minutes), evaluated as Dagster's freshness
daemon does, and the pools extracts and loads run in."""

import asyncio
import datetime as dt
import re
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from prequel_dagster import build_definitions, load_config
from prequel_dagster.delivery.receiver import Receiver

REPO = Path(__file__).resolve().parents[1]
FREQUENCIES = {"users": 10, "orders": 90}
SOURCE_ID, DESTINATION_ID = "acme-files", "app-hooks"  # dashes: not allowed in Dagster names


def raw_config(tmp_path: Path, url: str) -> dict:
    """Two datasets of one provider's local folder, with different frequencies, each streamed to ``url``."""
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    (drop / "users.csv").write_text("id,email\n1,a@x\n2,b@x\n")
    (drop / "orders.csv").write_text("id,email\n7,o@x\n")
    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}],
        "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
        "sources": [
            {"id": SOURCE_ID, "name": "files", "vendor": "local", "provider_id": "acme", "local": {"path": "drop"}}
        ],
        "datasets": [
            {
                "id": name,
                "name": name,
                "source_id": SOURCE_ID,
                "method": "glob",
                "glob": {"pattern": f"{name}.csv", "file_format": "csv"},
                "frequency_minutes": minutes,
                "type": "dimension",
                "dimension": {"primary_key_column": "id"},
            }
            for name, minutes in FREQUENCIES.items()
        ],
        "destinations": [
            {
                "id": DESTINATION_ID,
                "name": "app",
                "type": "webhook_batch",
                "record_schema": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "email": {"type": "string"}},
                },
                "webhook_batch": {"request_template": {"uri": url + "/b"}},
            }
        ],
        "streams": [
            {
                "id": f"{name}-app",
                "name": name,
                "dataset_id": name,
                "destination_id": DESTINATION_ID,
                "mappings": [
                    {"target_field": f, "field_type": "field", "column": {"name": f}} for f in ("id", "email")
                ],
            }
            for name in FREQUENCIES
        ],
    }


def frequency_of(key: dg.AssetKey) -> int:
    """The frequency of the asset's dataset: prequel/acme/<dataset> or prequel/acme/streams/<dataset>-app."""
    return FREQUENCIES[key.path[-1].removesuffix("-app")]


@pytest.fixture
def defs(tmp_path):
    with Receiver() as receiver:
        yield build_definitions(load_config(raw_config(tmp_path, receiver.url), base_dir=str(tmp_path)))


# -- freshness -------------------------------------------------------------------------------------


def test_every_asset_carries_a_time_window_freshness_policy_of_1_5x_and_2x_its_frequency(defs):
    from dagster._core.definitions.freshness import TimeWindowFreshnessPolicy

    specs = list(defs.resolve_all_asset_specs())
    assert len(specs) == 4  # two datasets, two streams
    for spec in specs:
        minutes = frequency_of(spec.key)
        policy = spec.freshness_policy
        assert isinstance(policy, TimeWindowFreshnessPolicy), (spec.key, policy)
        assert policy.warn_window.to_timedelta() == dt.timedelta(minutes=1.5 * minutes), spec.key
        assert policy.fail_window.to_timedelta() == dt.timedelta(minutes=2 * minutes), spec.key
    # and on the asset graph Dagster's freshness daemon reads
    graph = defs.resolve_asset_graph()
    for spec in specs:
        assert graph.get(spec.key).freshness_policy_or_from_metadata == spec.freshness_policy


def _state(instance: dg.DagsterInstance, node, at: float):
    """The asset's freshness at ``at`` (epoch seconds), computed as the freshness daemon computes it."""
    from dagster._core.loader import LoadingContextForTest
    from dagster._core.test_utils import freeze_time
    from dagster._daemon.freshness import FreshnessDaemon

    with freeze_time(at):
        return asyncio.run(
            FreshnessDaemon()._compute_asset_freshness_state(context=LoadingContextForTest(instance), node=node)
        )


def test_freshness_passes_then_warns_after_1_5x_then_fails_after_2x_the_frequency(defs):
    from dagster._core.definitions.freshness import FreshnessState

    graph = defs.resolve_asset_graph()
    with dg.instance_for_test() as instance:
        node = graph.get(dg.AssetKey(["prequel", "acme", "users"]))
        assert _state(instance, node, time.time()) == FreshnessState.UNKNOWN  # never materialized
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert result.success
        for key in graph.get_all_asset_keys():
            node = graph.get(key)
            t = instance.get_latest_materialization_event(key).timestamp
            window = frequency_of(key) * 60
            states = [
                _state(instance, node, t + offset)
                for offset in (1, 1.5 * window - 2, 1.5 * window + 2, 2 * window - 2, 2 * window + 2, 10 * window)
            ]
            assert states == [
                FreshnessState.PASS,
                FreshnessState.PASS,
                FreshnessState.WARN,
                FreshnessState.WARN,
                FreshnessState.FAIL,
                FreshnessState.FAIL,
            ], (key.to_user_string(), states)


# -- pools -----------------------------------------------------------------------------------------


def test_extracts_and_loads_run_in_their_source_and_destination_pools(defs):
    pools = {
        key.to_user_string(): a.op.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition) for key in a.keys
    }
    assert pools == {
        "prequel/acme/users": "prequel_source_acme_files",
        "prequel/acme/orders": "prequel_source_acme_files",  # one pool for every dataset of a source
        "prequel/acme/streams/users-app": "prequel_destination_app_hooks",
        "prequel/acme/streams/orders-app": "prequel_destination_app_hooks",
    }


def test_the_repo_instance_claims_pools_per_run_and_runs_one_run_per_provider(defs):
    """The repo's dagster.yaml: pools are claimed by the run queue (a run never waits for a slot inside
    its process, where Dagster's in-process executor polls without sleeping), four runs per pool, and
    one run at a time per provider, so a provider database sees one extract at a time."""
    concurrency = yaml.safe_load((REPO / "dagster.yaml").read_text())["concurrency"]
    with dg.instance_for_test(overrides={"concurrency": concurrency}) as instance:
        config = instance.get_concurrency_config()
        assert config.pool_config.pool_granularity.value == "run"
        assert config.pool_config.default_pool_limit == 4
        assert config.run_queue_config.tag_concurrency_limits == [
            {"key": "prequel/provider", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
        assert defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance).success
        storage = instance.event_log_storage
        for pool in storage.get_concurrency_keys():
            info = storage.get_concurrency_info(pool)
            assert info.claimed_slots == [] and info.pending_steps == [], info


def test_the_readme_names_the_pools_the_code_uses(defs):
    """The README gives the pool names as templates; filled in with ids that have a dash, they must
    be the pools the assets really use (else `dagster instance concurrency set <pool>` silently
    limits a pool nobody claims)."""
    readme = (REPO / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "**Pools**" in ln)
    templates = re.findall(r"`(prequel_(?:source|destination)_<\w+>)`", line)
    assert templates == ["prequel_source_<source_id>", "prequel_destination_<destination_id>"]
    assert "source `acme-pg`\n  runs in pool `prequel_source_acme_pg`" in readme  # the rule, as documented
    documented = {
        t.replace("<source_id>", re.sub(r"\W", "_", SOURCE_ID)).replace(
            "<destination_id>", re.sub(r"\W", "_", DESTINATION_ID)
        )
        for t in templates
    }
    used = {a.op.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    assert documented == used, f"README implies {sorted(documented)}, the assets use {sorted(used)}"


# -- checks ----------------------------------------------------------------------------------------


def test_a_streams_checks_run_in_its_load_op_and_alone_without_loading(defs):
    """The checks of a stream are part of its load op (no op of their own): a run of the load evaluates
    them after it, and a selection of checks alone evaluates them without loading anything."""
    users = dg.AssetKey.from_user_string("prequel/acme/streams/users-app")
    ops = {a.op.name: a for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    assert set(ops) == {"extract__acme__acme_files", "load__acme__app_hooks"}
    assert {(k.asset_key.path[-1], k.name) for k in ops["load__acme__app_hooks"].check_keys} == {
        (stream, check)
        for stream in ("users-app", "orders-app")
        for check in ("dead_letters_empty", "record_schema_conformance")
    }
    assert not list(defs.asset_checks or [])
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        full = job.execute_in_process(instance=instance)
        assert full.success
        assert {(e.asset_key.path[-1], e.check_name, e.passed) for e in full.get_asset_check_evaluations()} == {
            (stream, check, True)
            for stream in ("users-app", "orders-app")
            for check in ("dead_letters_empty", "record_schema_conformance")
        }
        alone = job.get_subset(
            asset_selection=set(), asset_check_selection={dg.AssetCheckKey(users, "dead_letters_empty")}
        ).execute_in_process(instance=instance)
        assert alone.success
        assert alone.get_asset_materialization_events() == []
        assert [(e.asset_key, e.check_name) for e in alone.get_asset_check_evaluations()] == [
            (users, "dead_letters_empty")
        ]
        one = job.get_subset(asset_selection={users}, asset_check_selection=set()).execute_in_process(instance=instance)
        assert one.success
        assert [e.asset_key for e in one.get_asset_materialization_events()] == [users]
        assert one.get_asset_check_evaluations() == []
