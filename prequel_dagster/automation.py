"""Schedules from ``frequency_minutes``, the sensor that makes streams follow their datasets, and the
sensor that makes glob datasets follow their files."""

import datetime as dt
import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.assets.job.asset_job import IMPLICIT_ASSET_JOB_NAME

from .config.errors import PrequelError
from .config.models import PrequelConfig, sanitize_name
from .partitions import partition_request, partitions_suffix, scheduled_partition_range
from .resources import PrequelDatalakeResource, PrequelSourceResource
from .sources import lookback_seconds
from .translator import DagsterPrequelTranslator, dataset_props, follow_sensor, stream_props

# Intervals a cron expression can keep evenly; other frequencies round down to the nearest one.
CRON_MINUTES = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60, 120, 180, 240, 360, 480, 720, 1440)


def cron_for_minutes(minutes: int) -> tuple[str, int]:
    """A cron schedule for "every N minutes" and the N it actually runs at (<= the one asked)."""
    every = max(m for m in CRON_MINUTES if m <= minutes) if minutes >= 1 else 1
    if every < 60:
        return ("* * * * *" if every == 1 else f"*/{every} * * * *"), every
    if every < 1440:
        hours = every // 60
        return ("0 * * * *" if hours == 1 else f"0 */{hours} * * *"), every
    return "0 0 * * *", every


def build_schedules(
    config: PrequelConfig, translator: DagsterPrequelTranslator, run_tags: Mapping[str, str] | None = None
) -> list[dg.ScheduleDefinition]:
    """One schedule per distinct ``frequency_minutes``; each tick requests one run per provider
    (tagged ``prequel/provider``), so one provider's failure never fails another's extracts and the
    instance's per-provider run limits apply. A run extracts the provider's datasets, then loads the
    streams that read them and runs their checks: one process per provider and tick, and records
    reach the destination without waiting for the automation sensor's next evaluation.

    Partitioned datasets (and their streams) get a run of their own per provider and partitions
    definition, for the partition **in progress** (the definitions include it), so records arrive at
    ``frequency_minutes`` and not once a window. At a window's turn the run covers the partition that
    just ended as well (one run over the two: ``BackfillPolicy.single_run``): the rows created after
    the previous tick, or committed late within the dataset's lookback, are not left behind. See
    :func:`~prequel_dagster.partitions.scheduled_partition_range`."""
    streams_of: dict[str, list[dg.AssetKey]] = defaultdict(list)
    for stream in config.streams:
        streams_of[stream.dataset_id].append(translator.get_stream_asset_key(stream_props(config, stream)))
    by_minutes: dict[int, dict[str, list[dg.AssetKey]]] = defaultdict(lambda: defaultdict(list))
    partitioned: dict[int, dict[tuple[str, str], _PartitionedGroup]] = defaultdict(dict)
    for dataset in config.datasets:
        props = dataset_props(config, dataset)
        partitions_def = translator.get_partitions_def(props)
        if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
            group = partitioned[dataset.frequency_minutes].setdefault(
                (props.provider.id, partitions_suffix(partitions_def)), _PartitionedGroup(partitions_def)
            )
            keys = group.keys
            group.lookback = max(group.lookback, lookback_seconds(props.source, dataset))
        else:
            keys = by_minutes[dataset.frequency_minutes][props.provider.id]
        keys.append(translator.get_dataset_asset_key(props))
        keys.extend(streams_of[dataset.id])
    tags = dict(run_tags or {})
    return [
        _schedule(minutes, dict(by_minutes.get(minutes, {})), tags, partitioned.get(minutes, {}))
        for minutes in sorted({*by_minutes, *partitioned})
    ]


@dataclass
class _PartitionedGroup:
    """One provider's datasets of one partitions definition and frequency, with their streams."""

    partitions_def: dg.TimeWindowPartitionsDefinition
    keys: list[dg.AssetKey] = field(default_factory=list)
    lookback: int = 0


def _schedule(
    minutes: int,
    by_provider: dict[str, list[dg.AssetKey]],
    tags: dict[str, str],
    partitioned: Mapping[tuple[str, str], _PartitionedGroup] | None = None,
) -> dg.ScheduleDefinition:
    cron, every = cron_for_minutes(minutes)
    partitioned = dict(partitioned or {})
    note = "" if every == minutes else f" (runs every {every} minutes: the nearest even cron interval below {minutes})"

    @dg.schedule(
        name=f"prequel_extract_every_{minutes}_minutes",
        cron_schedule=cron,
        # the global asset job: a selection of its own would make Dagster build and snapshot a second
        # job holding every dataset and stream (a third of the load time with thousands of providers)
        job_name=IMPLICIT_ASSET_JOB_NAME,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Extracts the datasets with frequency_minutes: {minutes}{note} and delivers their streams, "
            "one run per provider."
        ),
    )
    def _extracts(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
        try:
            tick_time = context.scheduled_execution_time
            tick = tick_time.isoformat()
        except Exception:  # dagster raises a CheckError when no tick time is set
            tick_time, tick = dt.datetime.now(dt.UTC), "manual"  # evaluated outside the daemon
        requests = [
            dg.RunRequest(
                run_key=f"{provider_id}:{tick}", asset_selection=keys, tags={**tags, "prequel/provider": provider_id}
            )
            for provider_id, keys in sorted(by_provider.items())
        ]
        for (provider_id, suffix), group in sorted(partitioned.items(), key=lambda item: item[0]):
            span = scheduled_partition_range(group.partitions_def, tick_time, every * 60 + group.lookback)
            if span is not None:  # (None before the first partition)
                requests.append(
                    partition_request(
                        run_key=f"{provider_id}:{suffix}:{tick}",
                        asset_selection=group.keys,
                        keys=span,
                        tags={**tags, "prequel/provider": provider_id},
                    )
                )
        return requests

    return _extracts


def build_stream_automation_sensor(
    config: PrequelConfig, translator: DagsterPrequelTranslator, run_tags: Mapping[str, str] | None = None
) -> dg.AutomationConditionSensorDefinition | None:
    keys = [translator.get_stream_asset_key(stream_props(config, s)) for s in config.streams]
    if not keys:
        return None
    return follow_sensor(
        "prequel_streams_follow_datasets",
        keys,
        "Loads each enabled stream after its dataset's extract brings new data.",
        run_tags,
    )


def build_glob_file_sensor(
    config: PrequelConfig, translator: DagsterPrequelTranslator, run_tags: Mapping[str, str] | None = None
) -> dg.SensorDefinition | None:
    """A sensor that requests a glob dataset's extract as soon as new or changed files land, and a
    push dataset's as soon as batches are staged for it."""
    datasets = [d for d in config.datasets if d.method in ("glob", "push")]
    if not datasets:
        return None
    keys = {d.id: translator.get_dataset_asset_key(dataset_props(config, d)) for d in datasets}
    # a partitioned push dataset's extract commits whatever was pushed: requested for the partition in progress
    partitioned = {
        d.id: p
        for d in datasets
        if isinstance(p := translator.get_partitions_def(dataset_props(config, d)), dg.TimeWindowPartitionsDefinition)
    }

    @dg.sensor(
        name="prequel_glob_new_files",
        target=dg.AssetSelection.assets(*keys.values()),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Requests a glob dataset's extract when new or changed files land in its bucket, and a push "
            "dataset's when batches are staged for it."
        ),
    )
    def _glob_new_files(
        context: dg.SensorEvaluationContext,
        prequel_source: PrequelSourceResource,
        prequel_datalake: PrequelDatalakeResource,
    ) -> dg.SensorResult:
        requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        runs, skipped = [], []
        for dataset in datasets:
            try:
                pending = prequel_source.pending_files(dataset.id, prequel_datalake)
            except (PrequelError, dg.Failure) as exc:
                skipped.append(f"{dataset.id}: {getattr(exc, 'description', None) or exc}")
                continue
            if not pending:
                requested.pop(dataset.id, None)
                continue
            fingerprint = hashlib.sha256("\n".join(f"{f.path} {f.fingerprint}" for f in pending).encode()).hexdigest()
            if requested.get(dataset.id) == fingerprint:
                continue  # already requested for exactly these files
            partition_key = None
            if dataset.id in partitioned:
                with dg.partition_loading_context(effective_dt=dt.datetime.now(dt.UTC)):
                    partition_key = partitioned[dataset.id].get_last_partition_key()
            requested[dataset.id] = fingerprint
            runs.append(
                dg.RunRequest(
                    run_key=f"{dataset.id}:{fingerprint[:16]}",
                    asset_selection=[keys[dataset.id]],
                    tags={
                        **(run_tags or {}),
                        "prequel/new_files": str(len(pending)),
                        "prequel/provider": config.chain(dataset.id).provider.id,  # its run limit holds
                    },
                    partition_key=partition_key,
                )
            )
        return dg.SensorResult(
            run_requests=runs,
            cursor=json.dumps(requested, sort_keys=True),
            skip_reason="; ".join(skipped) if skipped and not runs else None,
        )

    return _glob_new_files


class HousekeepingConfig(dg.Config):
    """Launchpad option of a housekeeping run: list what would be removed, remove nothing."""

    dry_run: bool = False


def build_housekeeping(config: PrequelConfig) -> tuple[list[dg.JobDefinition], list[dg.ScheduleDefinition]]:
    """Per datalake, a job and its daily schedule applying ``retention_window_days``, removing the
    leftovers of crashed runs (``lake/housekeeping.py``) and compacting small data files
    (``lake/compaction.py``); safe beside extracts and loads."""
    jobs, schedules = [], []
    for datalake in config.datalakes:
        name = f"prequel_housekeeping_{sanitize_name(datalake.id)}"
        job = _housekeeping_job(name, datalake.id)
        jobs.append(job)
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_daily",
                cron_schedule="17 3 * * *",
                job=job,
                default_status=dg.DefaultScheduleStatus.RUNNING,
                description=f"Datalake '{datalake.id}': retention_window_days and leftovers of crashed runs.",
            )
        )
    return jobs, schedules


def _housekeeping_job(name: str, datalake_id: str) -> dg.JobDefinition:
    @dg.op(name=f"{name}_op", tags={"prequel/datalake": datalake_id})
    def _op(context: dg.OpExecutionContext, config: HousekeepingConfig, prequel_datalake: PrequelDatalakeResource):
        result = prequel_datalake.housekeeping(datalake_id, dry_run=config.dry_run, log=context.log.info)
        if result.problems:
            raise dg.Failure(description="; ".join(result.problems[:5]), metadata=result.as_metadata())
        metadata = result.as_metadata()
        if not config.dry_run:  # then merge small data files (the log's cost then follows change, not history)
            compacted = prequel_datalake.compact(datalake_id, log=context.log.info)
            metadata["datasets_compacted"] = sum(1 for c in compacted if c.number is not None)
            metadata["data_files_replaced"] = sum(c.files_replaced for c in compacted)
        context.add_output_metadata(metadata)

    @dg.job(name=name, tags={"prequel/datalake": datalake_id}, executor_def=dg.in_process_executor)
    def _job():
        _op()

    return _job
