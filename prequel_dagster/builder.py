"""The public builder: ``prequel.yaml`` (a path, a mapping or a loaded config) -> ``dagster.Definitions``."""

import os
from collections.abc import Mapping
from typing import Any

import dagster as dg

from .assets import RESOURCE_KEY, build_dataset_assets, build_stream_assets, build_stream_checks
from .automation import build_glob_file_sensor, build_schedules, build_stream_automation_sensor
from .config.loading import load_config
from .config.models import PrequelConfig
from .resources import PrequelResource
from .translator import DagsterPrequelTranslator


def build_definitions(
    config: PrequelConfig | str | os.PathLike[str] | Mapping[str, Any],
    *,
    translator: DagsterPrequelTranslator | None = None,
    resource: PrequelResource | None = None,
) -> dg.Definitions:
    """Assets, schedules, the sensors (streams follow datasets; glob datasets follow new files) and the
    ``prequel`` resource for one config.

    Example::

        defs = build_definitions("prequel.yaml", translator=MyTranslator())
    """
    if not isinstance(config, PrequelConfig):
        config = load_config(config)
    translator = translator or DagsterPrequelTranslator()
    resource = resource or PrequelResource(config)
    sensors = [s for s in (build_stream_automation_sensor(config, translator),
                           build_glob_file_sensor(config, translator)) if s is not None]
    return dg.Definitions(
        assets=[*build_dataset_assets(config, translator), *build_stream_assets(config, translator)],
        asset_checks=build_stream_checks(config, translator),
        schedules=build_schedules(config, translator),
        sensors=sensors,
        resources={RESOURCE_KEY: dg.ResourceDefinition.hardcoded_resource(resource, "prequel: runs extracts and loads")},
    )
