"""How config entries become Dagster asset specs. Subclass and override to change keys, groups, tags, metadata.

In the style of dagster-dbt's ``DagsterDbtTranslator``: every method takes the props of one
dataset or stream and returns one attribute; ``get_dataset_spec`` / ``get_stream_spec`` assemble them.
"""

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from .config.models import Dataset, Destination, PrequelConfig, Provider, Source, Stream, sanitize_name
from .partitions import describe as describe_partitions
from .partitions import partitions_definition
from .transform.mapping import compile_mapping

JSON_TO_COLUMN_TYPE = {
    "string": "string",
    "integer": "int64",
    "number": "double",
    "boolean": "bool",
    "object": "json",
    "array": "json",
}


def column_type(declared: Any) -> str:
    """The Dagster column type of a record_schema ``type``: ``string``, ``[string, null]`` -> ``string``."""
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), "any")
    return JSON_TO_COLUMN_TYPE.get(declared, declared) if isinstance(declared, str) else "any"


def on_new_data() -> dg.AutomationCondition:
    """``eager()``, but a dependency counts as updated only when its data version changed: an extract
    that committed nothing keeps its data version (its last commit), so it requests no load."""
    ac = dg.AutomationCondition
    new_data = ac.any_deps_match(ac.data_version_changed() | ac.will_be_requested()).with_label(
        "any_deps_have_new_data"
    )
    return (
        ac.in_latest_time_window()
        & (ac.newly_missing() | new_data).since_last_handled()
        & ~ac.any_deps_missing()
        & ~ac.any_deps_in_progress()
        & ~ac.in_progress()
    ).with_label("on_new_data")


_on_new_data = functools.cache(on_new_data)
"""One condition for all streams (conditions are immutable): building it costs as much as a stream's spec."""


def follow_sensor(
    name: str, keys: list[dg.AssetKey], description: str, run_tags: Mapping[str, str] | None
) -> dg.AutomationConditionSensorDefinition:
    """A running sensor that evaluates ``keys``' automation conditions (:func:`on_new_data`) every 30 s."""
    return dg.AutomationConditionSensorDefinition(
        name,
        target=dg.AssetSelection.assets(*keys),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        run_tags=dict(run_tags) if run_tags else None,
        description=description,
    )


@dataclass(frozen=True)
class PrequelDatasetProps:
    """One provider dataset, with what it hangs from."""

    dataset: Dataset
    source: Source
    provider: Provider
    config: PrequelConfig


@dataclass(frozen=True)
class PrequelStreamProps:
    """One stream, with its dataset's props and its destination."""

    stream: Stream
    destination: Destination
    dataset: PrequelDatasetProps


class DagsterPrequelTranslator:
    """Default asset keys: ``prequel/<provider_id>/<dataset_id>`` and ``prequel/<provider_id>/streams/<stream_id>``."""

    key_prefix: tuple[str, ...] = ("prequel",)

    # -- datasets (Extract) ----------------------------------------------------------------
    def get_dataset_asset_key(self, props: PrequelDatasetProps) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, props.provider.id, props.dataset.id])

    def get_group_name(self, provider: Provider) -> str:
        return f"prequel_{sanitize_name(provider.id)}"

    def get_dataset_description(self, props: PrequelDatasetProps) -> str:
        d = props.dataset
        if d.description:
            return d.description
        if d.table is not None:
            what = f"table {d.table.source_table_namespace + '.' if d.table.source_table_namespace else ''}{d.table.source_table_name}"
        elif d.sql is not None:
            what = "a SQL query"
        elif d.push is not None:
            what = f"the batches pushed to table '{d.push.table_name}' (Stitch's Import API)"
        else:
            what = f"files matching {d.glob.pattern}"  # type: ignore[union-attr]
        how = (
            "the highest sequence winning per key"
            if d.push is not None
            else f"incremental by {d.cursor_column}"
            if d.cursor_column
            else "full read, changes found by comparison"
        )
        partitioned = (
            f" Partitioned {describe_partitions(d.partitions)} by {d.cursor_column}: a partition's run reads only "
            "its window and delivers what changed in it."
            if d.partitions is not None
            else ""
        )
        return (
            f"Extract of {what} from source '{props.source.id}' ({props.source.vendor}) of provider "
            f"'{props.provider.name}' into the datalake: a {d.type} dataset keyed by {d.primary_key}, {how}."
            f"{partitioned}"
        )

    def get_dataset_tags(self, props: PrequelDatasetProps) -> dict[str, str]:
        return {"prequel/provider": props.provider.id, "prequel/dataset": props.dataset.id}

    def get_dataset_kinds(self, props: PrequelDatasetProps) -> set[str]:
        return {props.source.vendor, "parquet"}

    def get_dataset_metadata(self, props: PrequelDatasetProps) -> dict[str, Any]:
        d = props.dataset
        return {
            "prequel/provider_id": props.provider.id,
            "prequel/source_id": props.source.id,
            "prequel/dataset_type": d.type,
            "prequel/primary_key_column": d.primary_key,
            "prequel/cursor_column": d.cursor_column or "(none: full read)",
            "prequel/frequency_minutes": d.frequency_minutes,
            **({"prequel/partitions": describe_partitions(d.partitions)} if d.partitions is not None else {}),
        }

    def get_freshness_policy(self, props: PrequelDatasetProps) -> dg.FreshnessPolicy | None:
        """Warn after 1.5x and fail after 2x ``frequency_minutes`` without a materialization."""
        minutes = props.dataset.frequency_minutes
        return dg.FreshnessPolicy.time_window(
            fail_window=dt.timedelta(minutes=2 * minutes), warn_window=dt.timedelta(minutes=1.5 * minutes)
        )

    def get_owners(self, provider: Provider) -> list[str]:
        return list(provider.owners)

    def get_partitions_def(self, props: PrequelDatasetProps) -> dg.PartitionsDefinition | None:
        """The dataset's time partitions (``partitions:``), shared by its streams; None when it has none.
        Override to return another time-window partitions definition (the window a run covers is read
        from it)."""
        partitions = props.dataset.partitions
        return partitions_definition(partitions) if partitions is not None else None

    def get_dataset_spec(self, props: PrequelDatasetProps) -> dg.AssetSpec:
        return dg.AssetSpec(
            key=self.get_dataset_asset_key(props),
            group_name=self.get_group_name(props.provider),
            description=self.get_dataset_description(props),
            tags=self.get_dataset_tags(props),
            kinds=self.get_dataset_kinds(props),
            metadata=self.get_dataset_metadata(props),
            owners=self.get_owners(props.provider),
            freshness_policy=self.get_freshness_policy(props),
            partitions_def=self.get_partitions_def(props),
            skippable=True,  # its op materializes any subset of its assets
        )

    # -- streams (Load) --------------------------------------------------------------------
    def get_stream_asset_key(self, props: PrequelStreamProps) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, props.dataset.provider.id, "streams", props.stream.id])

    def get_stream_description(self, props: PrequelStreamProps) -> str:
        if props.stream.description:
            return props.stream.description
        state = "" if props.stream.is_enabled else " Disabled: runs only when materialized by hand."
        if props.dataset.dataset.partitions is not None:
            state += (
                " Partitioned as its dataset: a partition's run delivers what is pending (its window's changes "
                "among them); with the resend option it also sends the window's records again."
            )
        return (
            f"Load of dataset '{props.dataset.dataset.id}' to destination '{props.destination.id}' "
            f"({props.destination.type}) for provider '{props.dataset.provider.name}': records mapped to the "
            f"destination's record_schema, delivered in batches.{state}"
        )

    def get_stream_tags(self, props: PrequelStreamProps) -> dict[str, str]:
        return {
            "prequel/provider": props.dataset.provider.id,
            "prequel/stream": props.stream.id,
            "prequel/destination": props.destination.id,
        }

    def get_stream_kinds(self, props: PrequelStreamProps) -> set[str]:
        return {"webhook"}

    def get_stream_automation_condition(self, props: PrequelStreamProps) -> dg.AutomationCondition | None:
        """Enabled streams load when their dataset's extract brought new data (see :func:`on_new_data`)."""
        return _on_new_data() if props.stream.is_enabled else None

    def get_stream_metadata(self, props: PrequelStreamProps) -> dict[str, Any]:
        dataset_key = self.get_dataset_asset_key(props.dataset)
        schema = props.destination.record_schema
        required = set(schema.get("required", []))
        columns = []
        for m in props.stream.mappings:
            prop = schema.get("properties", {}).get(m.target_field, {})  # an object: the loader checked it
            how = f"= {m.column.name}" if m.column else f"= {m.expression.expr}"  # type: ignore[union-attr]
            columns.append(
                dg.TableColumn(
                    name=m.target_field,
                    type=column_type(prop.get("type")),
                    description=(prop.get("description") or "") + f" ({how})",
                    constraints=dg.TableColumnConstraints(nullable=m.target_field not in required),
                )
            )
        lineage = dg.TableColumnLineage(
            deps_by_column={
                cm.target_field: [dg.TableColumnDep(asset_key=dataset_key, column_name=c) for c in cm.source_columns]
                for cm in (compile_mapping(m) for m in props.stream.mappings)
            }
        )
        return {
            "dagster/column_schema": dg.TableSchema(columns=columns),
            "dagster/column_lineage": lineage,
            "prequel/destination_id": props.destination.id,
            "prequel/destination_type": props.destination.type,
            "prequel/is_enabled": props.stream.is_enabled,
            "prequel/max_records_per_minute": props.destination.max_records_per_minute,
        }

    def get_stream_spec(self, props: PrequelStreamProps) -> dg.AssetSpec:
        return dg.AssetSpec(
            key=self.get_stream_asset_key(props),
            deps=[self.get_dataset_asset_key(props.dataset)],
            group_name=self.get_group_name(props.dataset.provider),
            description=self.get_stream_description(props),
            tags=self.get_stream_tags(props),
            kinds=self.get_stream_kinds(props),
            metadata=self.get_stream_metadata(props),
            owners=self.get_owners(props.dataset.provider),
            automation_condition=self.get_stream_automation_condition(props),
            freshness_policy=self.get_freshness_policy(props.dataset),
            partitions_def=self.get_partitions_def(props.dataset),
            skippable=True,  # its op materializes any subset of its assets
        )


def dataset_props(config: PrequelConfig, dataset: Dataset) -> PrequelDatasetProps:
    chain = config.chain(dataset.id)
    return PrequelDatasetProps(dataset, chain.source, chain.provider, config)


def stream_props(config: PrequelConfig, stream: Stream) -> PrequelStreamProps:
    return PrequelStreamProps(
        stream, config.destination(stream.destination_id), dataset_props(config, config.dataset(stream.dataset_id))
    )
