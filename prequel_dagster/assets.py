"""Asset factories: one asset key per provider dataset (Extract) and per stream (Load), built as few
subsettable ops: a provider's extracts from one source share an op (and the source's pool), its loads
to one destination share an op (and the destination's pool), its checks share one. A run materializes
any subset; each asset succeeds or fails on its own within the op (in the style of dagster-fivetran's
one ``multi_asset`` per connector). Thousands of providers then build and validate in seconds.
"""

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

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


def extract_op_name(provider_id: str, source_id: str) -> str:
    return sanitize_name(f"extract__{provider_id}__{source_id}")


def load_op_name(provider_id: str, destination_id: str) -> str:
    return sanitize_name(f"load__{provider_id}__{destination_id}")


def build_dataset_assets(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetsDefinition]:
    """One subsettable op per (provider, source), one asset per dataset."""
    groups: dict[tuple[str, str], dict[dg.AssetKey, tuple[dg.AssetSpec, str]]] = defaultdict(dict)
    for dataset in config.datasets:
        props = dataset_props(config, dataset)
        spec = translator.get_dataset_spec(props)
        groups[(props.provider.id, props.source.id)][spec.key] = (spec, dataset.id)
    return [
        _extract_op(extract_op_name(provider_id, source_id), source_pool(source_id), members)
        for (provider_id, source_id), members in groups.items()
    ]


def build_stream_assets(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetsDefinition]:
    """One subsettable op per (provider, destination), one asset per stream."""
    groups: dict[tuple[str, str], dict[dg.AssetKey, tuple[dg.AssetSpec, str]]] = defaultdict(dict)
    for stream in config.streams:
        props = stream_props(config, stream)
        spec = translator.get_stream_spec(props)
        groups[(props.dataset.provider.id, props.destination.id)][spec.key] = (spec, stream.id)
    return [
        _load_op(load_op_name(provider_id, destination_id), destination_pool(destination_id), members)
        for (provider_id, destination_id), members in groups.items()
    ]


def _skippable(members: dict[dg.AssetKey, tuple[dg.AssetSpec, str]]) -> list[dg.AssetSpec]:
    """Specs of an op that materializes any subset of them (asset keys that differ only in - and _ are
    refused when the config loads: they would share an output name)."""
    return [spec.replace_attributes(skippable=True) for spec, _ in members.values()]


def _each_selected(
    context: dg.AssetExecutionContext,
    members: dict[dg.AssetKey, tuple[dg.AssetSpec, str]],
    run_one: Callable[[dg.AssetKey, str], Iterator[Any]],
) -> Iterator[Any]:
    """Materialize every selected asset of the op; one failing does not stop the others, and the
    step fails at the end naming each one that failed (nothing of theirs is committed)."""
    failed = []
    for key in sorted(context.selected_asset_keys, key=lambda k: k.path):
        try:
            yield from run_one(key, members[key][1])
        except dg.Failure as exc:
            context.log.error(f"{key.to_user_string()}: {exc.description}")
            failed.append(f"{key.to_user_string()}: {exc.description}")
    if failed:
        raise dg.Failure(description="\n".join(failed), allow_retries=True)


def _extract_op(name: str, pool: str, members: dict[dg.AssetKey, tuple[dg.AssetSpec, str]]) -> dg.AssetsDefinition:
    @dg.multi_asset(specs=_skippable(members), name=name, pool=pool, can_subset=True)
    def _extract(
        context: dg.AssetExecutionContext,
        prequel_source: PrequelSourceResource,
        prequel_datalake: PrequelDatalakeResource,
    ):
        yield from _each_selected(
            context, members, lambda key, dataset_id: prequel_source.extract(context, dataset_id, prequel_datalake, key)
        )

    return _extract


class StreamLoadConfig(dg.Config):
    """Launchpad options of a load op: a normal load by default, or a redelivery of the selected streams."""

    redeliver_dead_letters: bool = False
    record_ids: list[str] = []


def _load_op(name: str, pool: str, members: dict[dg.AssetKey, tuple[dg.AssetSpec, str]]) -> dg.AssetsDefinition:
    @dg.multi_asset(specs=_skippable(members), name=name, pool=pool, can_subset=True)
    def _load(
        context: dg.AssetExecutionContext,
        config: StreamLoadConfig,
        prequel_webhook: PrequelWebhookResource,
        prequel_datalake: PrequelDatalakeResource,
    ):
        yield from _each_selected(
            context,
            members,
            lambda key, stream_id: prequel_webhook.load(
                context,
                stream_id,
                prequel_datalake,
                key,
                record_ids=config.record_ids or None,
                redeliver_dead_letters=config.redeliver_dead_letters,
            ),
        )

    return _load


def build_stream_checks(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetChecksDefinition]:
    """Per stream: its dead letter is empty; its latest records conform to the destination's record_schema.
    A provider's checks share one subsettable op."""
    by_provider: dict[str, list[tuple[dg.AssetCheckSpec, Callable[[PrequelDatalakeResource], dg.AssetCheckResult]]]]
    by_provider = defaultdict(list)
    for stream in config.streams:
        props = stream_props(config, stream)
        key = translator.get_stream_asset_key(props)
        by_provider[props.dataset.provider.id] += [
            _dead_letter_check(key, stream.id, stream.dead_letter_check),
            _conformance_check(key, stream.id),
        ]
    return [_checks_op(provider_id, checks) for provider_id, checks in by_provider.items()]


def _checks_op(provider_id: str, checks: list[tuple[dg.AssetCheckSpec, Callable[..., dg.AssetCheckResult]]]):
    run_by_key = {spec.key: run for spec, run in checks}

    @dg.multi_asset_check(
        specs=[spec for spec, _ in checks], name=sanitize_name(f"checks__{provider_id}"), can_subset=True
    )
    def _checks(context: dg.AssetCheckExecutionContext, prequel_datalake: PrequelDatalakeResource):
        for key in sorted(context.selected_asset_check_keys, key=lambda k: (k.asset_key.path, k.name)):
            yield run_by_key[key](prequel_datalake)

    return _checks


def _dead_letter_check(
    key: dg.AssetKey, stream_id: str, severity: str
) -> tuple[dg.AssetCheckSpec, Callable[[PrequelDatalakeResource], dg.AssetCheckResult]]:
    spec = dg.AssetCheckSpec(
        name="dead_letters_empty",
        asset=key,
        description="Fails while records of this stream sit in the dead letter; redeliver them to clear it.",
    )

    def run(prequel_datalake: PrequelDatalakeResource) -> dg.AssetCheckResult:
        table = prequel_datalake.dead_letters(stream_id)
        reasons = sorted(set(table.column("reason").to_pylist()))[:5] if table.num_rows else []
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=spec.name,
            passed=table.num_rows == 0,
            severity=dg.AssetCheckSeverity.ERROR if severity == "error" else dg.AssetCheckSeverity.WARN,
            metadata={
                "dead_letter_records": table.num_rows,
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in reasons) or "none"),
            },
        )

    return spec, run


def _conformance_check(
    key: dg.AssetKey, stream_id: str, sample: int = 200
) -> tuple[dg.AssetCheckSpec, Callable[[PrequelDatalakeResource], dg.AssetCheckResult]]:
    spec = dg.AssetCheckSpec(
        name="record_schema_conformance",
        asset=key,
        description=f"test-transform of the latest {sample} records: every one conforms to the destination's record_schema.",
    )

    def run(prequel_datalake: PrequelDatalakeResource) -> dg.AssetCheckResult:
        preview = prequel_datalake.preview(stream_id, limit=sample)
        violations = sorted({r.violation for r in preview.rows if r.violation})[:5]
        return dg.AssetCheckResult(
            asset_key=key,
            check_name=spec.name,
            passed=preview.invalid == 0,
            metadata={
                "records_checked": len(preview.rows),
                "records_invalid": preview.invalid,
                "violations": dg.MetadataValue.md("\n".join(f"- {v}" for v in violations) or "none"),
            },
        )

    return spec, run
