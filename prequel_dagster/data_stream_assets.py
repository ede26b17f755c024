"""Data streams as Dagster assets (issue 14): one asset per data stream, kind ``data_stream``, downstream
of the datasets it reads (those of providers its company constraint admits), at the key the
translator gives its dataset (``prequel/_data_streams/<id>`` by default), so a Prequel stream whose
``dataset_id`` names the data stream is downstream of it. Each materialization records the rules'
counts (``rows_in``, ``dropped_by.<rule>``, ``rows_out``), which the UI plots.
"""

from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from .config.data_streams import DATA_STREAMS_NAMESPACE, data_stream_datalake_id, data_stream_sources
from .config.errors import PrequelError
from .config.models import PrequelConfig, sanitize_name
from .config.secrets import redact
from .engine.data_stream import DataStreamResult, run_data_stream
from .lake.commits import DatasetLog
from .resources import DATALAKE_KEY, PrequelDatalakeResource, table_schema
from .translator import DagsterPrequelTranslator, dataset_props, follow_sensor, on_new_data

KIND = "data_stream"


def data_stream_asset_key(
    config: PrequelConfig, translator: DagsterPrequelTranslator, data_stream_id: str
) -> dg.AssetKey:
    return translator.get_dataset_asset_key(dataset_props(config, config.dataset(data_stream_id)))


def data_stream_spec(config: PrequelConfig, translator: DagsterPrequelTranslator, data_stream_id: str) -> dg.AssetSpec:
    stream = config.data_stream(data_stream_id)
    props = dataset_props(config, config.dataset(data_stream_id))
    reads = data_stream_sources(config, stream)
    deps = [translator.get_dataset_asset_key(dataset_props(config, config.dataset(d))) for _, d in reads]
    description = (stream.content or {}).get("description") if isinstance(stream.content, dict) else None
    what = ", ".join(f"{p}/{d}" for p, d in reads) or "no dataset"
    return dg.AssetSpec(
        key=translator.get_dataset_asset_key(props),
        deps=deps,
        group_name=translator.get_group_name(props.provider),
        description=(description or stream.description or f"Data stream '{stream.name}'")
        + f" — built from {what} through its data rules.",
        tags={"prequel/data_stream": stream.id, **{f"prequel/tag/{sanitize_name(t)}": "" for t in stream.tags or []}},
        kinds={KIND, "parquet"},
        metadata={
            "prequel/data_stream_id": stream.id,
            "prequel/slug": stream.slug,
            "prequel/datalake_id": data_stream_datalake_id(config, stream),
            "prequel/reads": what,
            "prequel/offers": len(stream.offers or []),
        },
        automation_condition=on_new_data(),
    )


def build_data_stream_assets(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetsDefinition]:
    return [_asset(config, translator, s.id) for s in config.data_streams]


def build_data_stream_sensor(
    config: PrequelConfig, translator: DagsterPrequelTranslator, run_tags: Mapping[str, str] | None = None
) -> dg.AutomationConditionSensorDefinition | None:
    """Materializes each data stream after a dataset it reads brings new data."""
    if not config.data_streams:
        return None
    keys = [data_stream_asset_key(config, translator, s.id) for s in config.data_streams]
    return follow_sensor(
        "prequel_data_streams_follow_datasets",
        keys,
        "Builds each data stream after a dataset it reads brings new data.",
        run_tags,
    )


def _asset(config: PrequelConfig, translator: DagsterPrequelTranslator, data_stream_id: str) -> dg.AssetsDefinition:
    spec = data_stream_spec(config, translator, data_stream_id)

    @dg.multi_asset(
        specs=[spec],
        name=sanitize_name(f"data_stream__{data_stream_id}"),
        required_resource_keys={DATALAKE_KEY},
        pool=f"prequel_data_stream_{sanitize_name(data_stream_id)}",
    )
    def build(context: dg.AssetExecutionContext) -> Iterator[Any]:
        datalake: PrequelDatalakeResource = context.resources.original_resource_dict[DATALAKE_KEY]
        yield from materialize_data_stream(context, datalake, data_stream_id, spec.key)

    return build


def materialize_data_stream(
    context: dg.AssetExecutionContext, datalake: PrequelDatalakeResource, data_stream_id: str, key: dg.AssetKey
) -> Iterator[dg.MaterializeResult]:
    config = datalake.prequel_config
    lake = data_stream_datalake_id(config, config.data_stream(data_stream_id))
    try:
        result = run_data_stream(
            config,
            data_stream_id,
            storage=datalake.storage(lake),
            open_store=datalake.storage,
            run_id=context.run.run_id,
            log=context.log.info,
        )
    except PrequelError as exc:
        raise dg.Failure(description=redact(str(exc)), allow_retries=True) from None
    with_rows = DatasetLog(datalake.storage(lake), DATA_STREAMS_NAMESPACE, data_stream_id).latest_with_rows()
    version = dg.DataVersion(f"commit-{with_rows.seq}-{with_rows.token}" if with_rows else "empty")
    yield dg.MaterializeResult(asset_key=key, metadata=data_stream_metadata(result), data_version=version)


def data_stream_metadata(result: DataStreamResult) -> dict[str, Any]:
    meta: dict[str, Any] = {name: dg.MetadataValue.int(v) for name, v in sorted(result.counts.items())}
    meta.update(
        {
            "dagster/row_count": dg.MetadataValue.int(result.row_count),
            "dagster/column_schema": table_schema(result.schema),
            "dagster/uri": dg.MetadataValue.text(result.data_uri),
            "prequel/commit": dg.MetadataValue.int(result.commit.seq if result.commit else 0),
            "prequel/sources": dg.MetadataValue.json({k: list(v) for k, v in result.sources.items()}),
            "prequel/seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        }
    )
    for provider, counts in sorted(result.by_provider.items()):
        for name, value in counts.items():
            meta[f"{name}.{provider}"] = dg.MetadataValue.int(value)
    if result.skipped_providers:
        meta["prequel/providers_outside_constraint"] = dg.MetadataValue.text(", ".join(result.skipped_providers))
    return meta
