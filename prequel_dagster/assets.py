"""Asset factories: one asset per provider dataset (Extract), one per stream downstream of it (Load)."""

import dagster as dg

from .config.models import PrequelConfig, sanitize_name
from .resources import PrequelDatalakeResource, PrequelSourceResource, PrequelWebhookResource
from .translator import DagsterPrequelTranslator, dataset_props, stream_props


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
    @dg.multi_asset(specs=[spec], name=_op_name("extract", spec.key), pool=pool)
    def _extract(
        context: dg.AssetExecutionContext,
        prequel_source: PrequelSourceResource,
        prequel_datalake: PrequelDatalakeResource,
    ):
        yield from prequel_source.extract(context, dataset_id, prequel_datalake)

    return _extract


class StreamLoadConfig(dg.Config):
    """Launchpad options of a stream materialization: a normal load by default, or a redelivery."""

    redeliver_dead_letters: bool = False
    record_ids: list[str] = []


def _load_asset(spec: dg.AssetSpec, stream_id: str, pool: str) -> dg.AssetsDefinition:
    @dg.multi_asset(specs=[spec], name=_op_name("load", spec.key), pool=pool)
    def _load(
        context: dg.AssetExecutionContext,
        config: StreamLoadConfig,
        prequel_webhook: PrequelWebhookResource,
        prequel_datalake: PrequelDatalakeResource,
    ):
        yield from prequel_webhook.load(
            context,
            stream_id,
            prequel_datalake,
            record_ids=config.record_ids or None,
            redeliver_dead_letters=config.redeliver_dead_letters,
        )

    return _load


def build_stream_checks(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetChecksDefinition]:
    """Per stream: its dead letter is empty; its latest records conform to the destination's record_schema."""
    checks = []
    for stream in config.streams:
        key = translator.get_stream_asset_key(stream_props(config, stream))
        checks += [_dead_letter_check(key, stream.id, stream.dead_letter_check), _conformance_check(key, stream.id)]
    return checks


def _dead_letter_check(key: dg.AssetKey, stream_id: str, severity: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name="dead_letters_empty",
        description="Fails while records of this stream sit in the dead letter; redeliver them to clear it.",
    )
    def _check(prequel_datalake: PrequelDatalakeResource) -> dg.AssetCheckResult:
        table = prequel_datalake.dead_letters(stream_id)
        reasons = sorted(set(table.column("reason").to_pylist()))[:5] if table.num_rows else []
        return dg.AssetCheckResult(
            passed=table.num_rows == 0,
            severity=dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN,
            metadata={
                "dead_letter_records": table.num_rows,
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons) or "none"),
            },
        )

    return _check


def _conformance_check(key: dg.AssetKey, stream_id: str, sample: int = 200) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=key,
        name="record_schema_conformance",
        description=f"test-transform of the latest {sample} records: every one conforms to the destination's record_schema.",
    )
    def _check(prequel_datalake: PrequelDatalakeResource) -> dg.AssetCheckResult:
        preview = prequel_datalake.preview(stream_id, limit=sample)
        violations = sorted({r.violation for r in preview.rows if r.violation})[:5]
        return dg.AssetCheckResult(
            passed=preview.invalid == 0,
            metadata={
                "records_checked": len(preview.rows),
                "records_invalid": preview.invalid,
                "violations": dg.MetadataValue.md("\n".join(f"- {v}" for v in violations) or "none"),
            },
        )

    return _check
