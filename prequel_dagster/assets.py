"""Asset factories: one asset key per provider dataset (Extract) and per stream (Load), built as few
subsettable ops: a provider's extracts from one source share an op (and the source's pool), its loads
to one destination share an op (and the destination's pool) together with those streams' checks. A run
materializes any subset of the assets and checks; each asset succeeds or fails on its own within the op
(in the style of dagster-fivetran's one ``multi_asset`` per connector), and a selection of checks alone
evaluates them without loading. Thousands of providers then build and validate in seconds.

The ops are built as ``OpDefinition`` + ``AssetsDefinition`` directly, with what ``@multi_asset(specs=...,
check_specs=..., can_subset=True, pool=...)`` would give them (the same outputs, inputs, config schema,
resource keys and pool): the decorator inspects its function a dozen times per op, which is most of the
cost of building thousands of them.
"""

import functools
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from .config.loading import gc_paused
from .config.models import PrequelConfig, sanitize_name
from .partitions import RESEND_TAG, RESYNC_TAG, flag, partitions_suffix, run_window
from .resources import DATALAKE_KEY, SOURCE_KEY, WEBHOOK_KEY, PrequelDatalakeResource
from .translator import DagsterPrequelTranslator, dataset_props, stream_props

Members = dict[dg.AssetKey, tuple[dg.AssetSpec, str]]
CheckRun = Callable[[PrequelDatalakeResource], dg.AssetCheckResult]


def source_pool(source_id: str) -> str:
    """At most the pool's limit of concurrent extracts hit one provider database (dagster.yaml sets it)."""
    return f"prequel_source_{sanitize_name(source_id)}"


def destination_pool(destination_id: str) -> str:
    """At most the pool's limit of concurrent loads hit one destination endpoint."""
    return f"prequel_destination_{sanitize_name(destination_id)}"


def extract_op_name(provider_id: str, source_id: str, partitions_def: dg.PartitionsDefinition | None = None) -> str:
    """``extract__<provider>__<source>``; a source's partitioned datasets get an op per partitions definition,
    ``extract_partitioned__<provider>__<source>__p<hash>`` (an op has one partitions definition)."""
    if partitions_def is None:
        return sanitize_name(f"extract__{provider_id}__{source_id}")
    return sanitize_name(f"extract_partitioned__{provider_id}__{source_id}__{partitions_suffix(partitions_def)}")


def load_op_name(provider_id: str, destination_id: str, partitions_def: dg.PartitionsDefinition | None = None) -> str:
    """``load__<provider>__<destination>``, or ``load_partitioned__...__p<hash>`` for partitioned streams."""
    if partitions_def is None:
        return sanitize_name(f"load__{provider_id}__{destination_id}")
    return sanitize_name(f"load_partitioned__{provider_id}__{destination_id}__{partitions_suffix(partitions_def)}")


def build_dataset_assets(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetsDefinition]:
    """One subsettable op per (provider, source), one asset per dataset (partitioned datasets: one op per
    (provider, source, partitions definition), backfilled a range per run)."""
    with gc_paused():
        groups: dict[tuple[str, str, Any], Members] = defaultdict(dict)
        for dataset in config.datasets:
            props = dataset_props(config, dataset)
            spec = translator.get_dataset_spec(props)
            groups[(props.provider.id, props.source.id, spec.partitions_def)][spec.key] = (spec, dataset.id)
        return [
            _extract_op(extract_op_name(provider_id, source_id, partitions_def), source_pool(source_id), members)
            for (provider_id, source_id, partitions_def), members in groups.items()
        ]


def build_stream_assets(config: PrequelConfig, translator: DagsterPrequelTranslator) -> list[dg.AssetsDefinition]:
    """One subsettable op per (provider, destination), one asset per stream, with the stream's checks:
    its dead letter is empty (``dead_letters_empty``); its latest records conform to the destination's
    record_schema (``record_schema_conformance``)."""
    with gc_paused():
        groups: dict[tuple[str, str, Any], tuple[Members, list[tuple[dg.AssetCheckSpec, CheckRun]]]] = defaultdict(
            lambda: ({}, [])
        )
        for stream in config.streams:
            props = stream_props(config, stream)
            spec = translator.get_stream_spec(props)
            members, checks = groups[(props.dataset.provider.id, props.destination.id, spec.partitions_def)]
            members[spec.key] = (spec, stream.id)
            checks += [
                _dead_letter_check(spec.key, stream.id, stream.dead_letter_check),
                _conformance_check(spec.key, stream.id),
            ]
        return [
            _load_op(
                load_op_name(provider_id, destination_id, partitions_def),
                destination_pool(destination_id),
                members,
                checks,
            )
            for (provider_id, destination_id, partitions_def), (members, checks) in groups.items()
        ]


def _each_selected(
    context: dg.AssetExecutionContext,
    members: Members,
    run_one: Callable[[dg.AssetKey, str], Iterator[Any]],
    checks: Mapping[dg.AssetCheckKey, Callable[[], dg.AssetCheckResult]] = {},  # read only
) -> Iterator[Any]:
    """Materialize every selected asset of the op, then evaluate its selected checks (but not those of an
    asset that failed in this step); one failing does not stop the others, and the step fails at the
    end naming each one that failed (nothing of theirs is committed)."""
    failed: list[str] = []
    failed_keys: set[dg.AssetKey] = set()
    for key in sorted(context.selected_asset_keys, key=lambda k: k.path):
        try:
            yield from run_one(key, members[key][1])
        except dg.Failure as exc:
            context.log.error(f"{key.to_user_string()}: {exc.description}")
            failed.append(f"{key.to_user_string()}: {exc.description}")
            failed_keys.add(key)
    selected_checks = context.selected_asset_check_keys if checks else ()
    for check_key in sorted(selected_checks, key=lambda k: (k.asset_key.path, k.name)):
        if check_key.asset_key in failed_keys:
            continue
        try:
            yield checks[check_key]()
        except dg.Failure as exc:
            context.log.error(f"{check_key.to_user_string()}: {exc.description}")
            failed.append(f"{check_key.to_user_string()}: {exc.description}")
    if failed:
        raise dg.Failure(description="\n".join(failed), allow_retries=True)


def _subsettable_op(
    name: str,
    pool: str,
    specs: Sequence[dg.AssetSpec],
    compute: Callable[..., Iterator[Any]],
    resource_keys: set[str],
    check_specs: Sequence[dg.AssetCheckSpec] = (),
    config_schema: Any = None,
) -> dg.AssetsDefinition:
    """What ``@multi_asset(specs=specs, check_specs=check_specs, name=name, pool=pool, can_subset=True)``
    builds around a function taking ``context``, ``config`` and the resources ``resource_keys``: every
    output optional, a Nothing input per upstream asset, the specs skippable (asset keys that differ only
    in - and _ are refused when the config loads: they would share an output name)."""
    specs = [spec if spec.skippable else spec.replace_attributes(skippable=True) for spec in specs]
    outs: dict[str, dg.Out] = {}
    keys_by_output_name: dict[str, dg.AssetKey] = {}
    for spec in specs:
        output_name = spec.key.to_python_identifier()
        outs[output_name] = dg.Out(
            dagster_type=dg.Nothing,
            is_required=False,
            description=spec.description,
            code_version=spec.code_version,
            metadata=spec.metadata,
        )
        keys_by_output_name[output_name] = spec.key
    check_specs_by_output_name = {check.get_python_identifier(): check for check in check_specs}
    outs.update(dict.fromkeys(check_specs_by_output_name, _check_out()))
    own = set(keys_by_output_name.values())
    keys_by_input_name = {
        "_".join(dep.asset_key.path).replace("-", "_").replace(".", "_"): dep.asset_key
        for spec in specs
        for dep in spec.deps
        if dep.asset_key not in own
    }
    node_def = dg.OpDefinition(
        compute_fn=compute,
        name=name,
        ins={input_name: dg.In(dagster_type=dg.Nothing) for input_name in keys_by_input_name},
        outs=outs,
        config_schema=config_schema if config_schema is not None else {},
        required_resource_keys=resource_keys,
        tags={},
        pool=pool,
    )
    partitioned = any(spec.partitions_def is not None for spec in specs)
    return dg.AssetsDefinition(
        keys_by_input_name=keys_by_input_name,
        keys_by_output_name=keys_by_output_name,
        node_def=node_def,
        can_subset=True,
        check_specs_by_output_name=check_specs_by_output_name,
        specs=specs,
        # a backfill of partitions is one run per op over the range's window
        backfill_policy=dg.BackfillPolicy.single_run() if partitioned else None,
    )


@functools.cache
def _check_out() -> dg.Out:
    """The output of an asset check in a subsettable op (immutable: one for all)."""
    return dg.Out(dagster_type=None, is_required=False)


class ExtractConfig(dg.Config):
    """Launchpad options of an extract op (also set by the run tag ``prequel/resync: "true"``)."""

    resync: bool = Field(
        default=False,
        description="Read each selected dataset in full (a glob dataset's every file), compare every row with the "
        "datalake and commit (so deliver) whatever changed, whatever the cursor says. A partitioned dataset's "
        "extract already reads its whole window; a push dataset cannot be re-read.",
    )


@functools.cache
def _extract_config_schema() -> Any:
    return ExtractConfig.to_config_schema()


def _extract_op(name: str, pool: str, members: Members) -> dg.AssetsDefinition:
    def extract(context: dg.AssetExecutionContext, inputs: Mapping[str, Any]) -> Iterator[Any]:
        resources = context.resources.original_resource_dict  # as typed resource parameters get them
        source, datalake = resources[SOURCE_KEY], resources[DATALAKE_KEY]
        config = ExtractConfig(**(context.op_execution_context.op_config or {}))
        window, resync = run_window(context), flag(context, config.resync, RESYNC_TAG)
        yield from _each_selected(
            context,
            members,
            lambda key, dataset_id: source.extract(context, dataset_id, datalake, key, window=window, resync=resync),
        )

    specs = [spec for spec, _ in members.values()]
    return _subsettable_op(
        name, pool, specs, extract, {SOURCE_KEY, DATALAKE_KEY}, config_schema=_extract_config_schema()
    )


class StreamLoadConfig(dg.Config):
    """Launchpad options of a load op: a normal load by default, or a redelivery of the selected streams."""

    redeliver_dead_letters: bool = False
    record_ids: list[str] = []
    resend: bool = Field(
        default=False,
        description="After the load, send every current record again (of the run's partitions, for partitioned "
        'streams) under new batch ids, with "metadata": {"resend": true} in each envelope. Also set by the run '
        'tag prequel/resend: "true".',
    )


@functools.cache
def _stream_load_config_schema() -> Any:
    """The config schema of a load op (a ``config: StreamLoadConfig`` parameter's), built once for all."""
    return StreamLoadConfig.to_config_schema()


def _load_op(
    name: str, pool: str, members: Members, checks: list[tuple[dg.AssetCheckSpec, CheckRun]]
) -> dg.AssetsDefinition:
    run_by_key = {spec.key: run for spec, run in checks}

    def load(context: dg.AssetExecutionContext, inputs: Mapping[str, Any]) -> Iterator[Any]:
        resources = context.resources.original_resource_dict  # as typed resource parameters get them
        webhook, datalake = resources[WEBHOOK_KEY], resources[DATALAKE_KEY]
        config = StreamLoadConfig(**(context.op_execution_context.op_config or {}))
        window, resend = run_window(context), flag(context, config.resend, RESEND_TAG)
        yield from _each_selected(
            context,
            members,
            lambda key, stream_id: webhook.load(
                context,
                stream_id,
                datalake,
                key,
                record_ids=config.record_ids or None,
                redeliver_dead_letters=config.redeliver_dead_letters,
                window=window,
                resend=resend,
            ),
            {key: functools.partial(run, datalake) for key, run in run_by_key.items()},
        )

    specs = [spec for spec, _ in members.values()]
    return _subsettable_op(
        name,
        pool,
        specs,
        load,
        {WEBHOOK_KEY, DATALAKE_KEY},
        check_specs=[spec for spec, _ in checks],
        config_schema=_stream_load_config_schema(),
    )


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
