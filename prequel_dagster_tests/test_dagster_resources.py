"""The Dagster surface: typed resources users can see and override, and loads that follow only new data."""

import dagster as dg
import httpx

from prequel_dagster import (
    PrequelDatalakeResource,
    PrequelSourceResource,
    PrequelWebhookResource,
    build_definitions,
)
from prequel_dagster.delivery.receiver import Receiver

from .test_delivery_ids import local_config

DATASET = dg.AssetKey(["prequel", "acme", "users"])
STREAM = dg.AssetKey(["prequel", "acme", "streams", "users-app"])


class CountingWebhook(PrequelWebhookResource):
    """A user's override: deliveries through a transport of its own."""

    def http_transport(self) -> httpx.BaseTransport:
        COUNT.append(0)
        return httpx.HTTPTransport()


COUNT: list[int] = []


def test_the_three_resources_are_typed_visible_and_used_by_the_assets(tmp_path):
    with Receiver() as receiver:
        defs = build_definitions(local_config(tmp_path, "lake", receiver, {1: "a@x"}))
        resources = defs.resources
        assert isinstance(resources["prequel_datalake"], PrequelDatalakeResource)
        assert isinstance(resources["prequel_source"], PrequelSourceResource)
        assert isinstance(resources["prequel_webhook"], PrequelWebhookResource)
        assert resources["prequel_datalake"].datalakes == {"lake": "local lake"}
        assert resources["prequel_source"].sources == {"files": "local drop"}
        assert resources["prequel_webhook"].destinations == {"app": f"webhook_batch POST {receiver.url}/b"}
        repo = defs.get_repository_def()
        extract = repo.assets_defs_by_key[DATASET]
        load = repo.assets_defs_by_key[STREAM]
        assert {"prequel_source", "prequel_datalake"} <= extract.required_resource_keys
        assert {"prequel_webhook", "prequel_datalake"} <= load.required_resource_keys


def test_a_resource_given_to_build_definitions_replaces_the_default(tmp_path):
    COUNT.clear()
    with Receiver() as receiver, dg.instance_for_test() as instance:
        defs = build_definitions(
            local_config(tmp_path, "lake", receiver, {1: "a@x", 2: "b@x"}),
            resources={"prequel_webhook": CountingWebhook(config_ref="")},
        )
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        assert result.success and COUNT and len(receiver.store.records()) == 2


def test_a_stream_loads_after_an_extract_with_new_data_only(tmp_path):
    with Receiver() as receiver, dg.instance_for_test() as instance:
        defs = build_definitions(local_config(tmp_path, "lake", receiver, {1: "a@x", 2: "b@x"}))
        job = defs.resolve_implicit_global_asset_job_def()

        def requested_after(key=None):
            nonlocal cursor
            if key is not None:
                assert job.execute_in_process(instance=instance, asset_selection=[key]).success
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            return result.get_requested_partitions(STREAM) != set() if result.total_requested else False

        cursor = None
        assert not requested_after()
        assert requested_after(DATASET)  # new rows: a load is requested
        assert not requested_after(STREAM)
        assert not requested_after(DATASET)  # nothing new: no load
        (tmp_path / "drop" / "users.csv").write_text("id,email\n1,a@x\n2,b2@x\n")
        assert requested_after(DATASET)  # a changed row: a load again


def test_a_schedule_tick_requests_one_run_per_provider_and_a_failing_provider_fails_alone(tmp_path):
    with Receiver() as receiver, dg.instance_for_test() as instance:
        raw = local_config(tmp_path, "lake", receiver, {1: "a@x"}, as_dict=True)
        # a second provider whose folder is missing: its extract fails, acme's does not
        raw["providers"].append({"id": "globex", "name": "globex", "datalake_id": "lake", "products": ["all"]})
        raw["sources"].append(
            {"id": "gx", "name": "gx", "vendor": "local", "provider_id": "globex", "local": {"path": "missing"}}
        )
        raw["datasets"].append({**raw["datasets"][0], "id": "gx-users", "source_id": "gx"})
        from prequel_dagster.config import load_config

        config = load_config(raw, base_dir=str(tmp_path))
        defs = build_definitions(config)
        (schedule,) = [s for s in defs.schedules if s.name == "prequel_extract_every_60_minutes"]
        with dg.build_schedule_context(instance=instance) as context:
            requests = schedule.evaluate_tick(context).run_requests
        assert [r.tags["prequel/provider"] for r in requests] == ["acme", "globex"]
        assert requests[0].asset_selection == [DATASET, STREAM]  # the provider's extracts, then its streams
        assert requests[1].asset_selection == [dg.AssetKey(["prequel", "globex", "gx-users"])]
        job = defs.resolve_implicit_global_asset_job_def()
        outcomes = {
            r.tags["prequel/provider"]: job.execute_in_process(
                instance=instance, asset_selection=r.asset_selection, tags=r.tags, raise_on_error=False
            ).success
            for r in requests
        }
        assert outcomes == {"acme": True, "globex": False}
        assert [r["record"]["email"] for r in receiver.store.records()] == ["a@x"]  # delivered in acme's run
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert not result.total_requested  # the stream is up to date: the sensor requests no second load
