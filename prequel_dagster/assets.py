"""Asset factories: one asset per provider dataset (Extract), one per stream downstream of it (Load)."""

import dagster as dg

from .config.models import PrequelConfig, sanitize_name
from .translator import DagsterPrequelTranslator, dataset_props, stream_props

RESOURCE_KEY = "prequel"


def source_pool(source_id: str) -> str:
    """At most the pool's limit of concurrent extracts hit one provider database (dagster.yaml sets it)."""
    return f"prequel_source_{sanitize_name(source_id)}"


def destination_pool(destination_id: str) -> str:
    """At most the pool's limit of concurrent loads hit one destination endpoint."""
    return f"prequel_destination_{sanitize_name(destination_id)}"


def build_dataset_assets(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetsDefinition]:
    assets = []
    for dataset in config.datasets:
        props = dataset_props(config, dataset)
        spec = translator.get_dataset_spec(props)
        assets.append(_extract_asset(spec, dataset.id, source_pool(props.source.id)))
    return assets


def build_stream_assets(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetsDefinition]:
    assets = []
    for stream in config.streams:
        props = stream_props(config, stream)
        spec = translator.get_stream_spec(props)
        assets.append(_load_asset(spec, stream.id, destination_pool(props.destination.id)))
    return assets


def _op_name(prefix: str, key: dg.AssetKey) -> str:
    return sanitize_name(f"{prefix}__{'__'.join(key.path)}")


def _extract_asset(spec: dg.AssetSpec, dataset_id: str, pool: str) -> dg.AssetsDefinition:
    @dg.multi_asset(
        specs=[spec], name=_op_name("extract", spec.key), pool=pool, required_resource_keys={RESOURCE_KEY}
    )
    def _extract(context: dg.AssetExecutionContext):
        yield from context.resources.prequel.extract(context, dataset_id)

    return _extract


def _load_asset(spec: dg.AssetSpec, stream_id: str, pool: str) -> dg.AssetsDefinition:
    @dg.multi_asset(specs=[spec], name=_op_name("load", spec.key), pool=pool, required_resource_keys={RESOURCE_KEY})
    def _load(context: dg.AssetExecutionContext):
        yield from context.resources.prequel.load(context, stream_id)

    return _load
