"""The public builder: ``prequel.yaml`` (a path, a mapping or a loaded config) -> ``dagster.Definitions``."""

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from .assets import build_dataset_assets, build_stream_assets
from .automation import build_glob_file_sensor, build_housekeeping, build_schedules, build_stream_automation_sensor
from .config.loading import load_config
from .config.models import PrequelConfig
from .data_stream_assets import build_data_stream_assets, build_data_stream_sensor
from .notifications_sensors import build_notification_sensors
from .resources import default_resources, rebind
from .translator import DagsterPrequelTranslator


def build_definitions(
    config: PrequelConfig | str | os.PathLike[str] | Mapping[str, Any],
    *,
    translator: DagsterPrequelTranslator | None = None,
    resources: Mapping[str, Any] | None = None,
    executor: dg.ExecutorDefinition | None = None,
    run_tags: Mapping[str, str] | None = None,
) -> dg.Definitions:
    """Assets, checks, schedules, the sensors (streams follow datasets; glob datasets follow new files;
    failure notifications, when ``notifications:`` has an enabled one)
    and the resources ``prequel_datalake``, ``prequel_source`` and ``prequel_webhook`` for one config.

    Example::

        defs = build_definitions("prequel.yaml", translator=MyTranslator(),
                                 resources={"prequel_webhook": MyWebhookResource(config_ref="")})

    A resource given here replaces the default of the same key, bound to the same config. Runs
    execute in process by default (a run is one provider's extracts or loads: a process per step
    would cost seconds each); pass ``executor=dg.multiprocess_executor`` or a Kubernetes executor
    to isolate steps in processes or pods. ``run_tags`` go on every run the schedules and sensors
    request (the catalog revision the definitions were built from, so a run worker builds the same).
    """
    if not isinstance(config, PrequelConfig):
        config = load_config(config)
    translator = translator or DagsterPrequelTranslator()
    bound: dict[str, Any] = dict(default_resources(config, config.origin))
    bound.update({key: rebind(value, bound.get(key)) for key, value in (resources or {}).items()})
    sensors = [
        s
        for s in (
            build_stream_automation_sensor(config, translator, run_tags),
            build_glob_file_sensor(config, translator, run_tags),
            build_data_stream_sensor(config, translator, run_tags),
        )
        if s is not None
    ]
    sensors += build_notification_sensors(config, translator)  # (none without an enabled notification)
    housekeeping_jobs, housekeeping_schedules = build_housekeeping(config)
    return dg.Definitions(
        assets=[
            *build_dataset_assets(config, translator),
            *build_data_stream_assets(config, translator),
            *build_stream_assets(config, translator),
        ],
        schedules=[*build_schedules(config, translator, run_tags), *housekeeping_schedules],
        jobs=housekeeping_jobs,
        sensors=sensors,
        resources=bound,
        executor=executor or dg.in_process_executor,
    )
