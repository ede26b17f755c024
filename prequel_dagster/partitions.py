"""Time partitions of fact datasets in Dagster: the partitions definitions, the window a run covers,
the partitions a schedule tick requests, and the backfill options.

A dataset with ``partitions: {granularity, start, timezone}`` gets an Hourly, Daily, Weekly or Monthly
``TimeWindowPartitionsDefinition`` on its asset and on its streams' assets, with
``BackfillPolicy.single_run()``: a backfill of any range of partitions is one run per asset op (one
provider's datasets of one source, or its streams to one destination), covering the range's window.
The partition of the window in progress is included (``end_offset=1``), so the schedule delivers at
``frequency_minutes`` and not once a window.
"""

import datetime as dt
import functools
import hashlib
from typing import Any

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from .config.models import Partitions
from .engine.windows import Window

RESEND_TAG = "prequel/resend"
"""Run tag with the same effect as the load's ``resend`` option (``"true"``): the UI's backfill dialog takes tags."""
RESYNC_TAG = "prequel/resync"
"""Run tag with the same effect as the extract's ``resync`` option (``"true"``)."""

_DEFINITIONS = {
    "hourly": dg.HourlyPartitionsDefinition,
    "daily": dg.DailyPartitionsDefinition,
    "weekly": dg.WeeklyPartitionsDefinition,
    "monthly": dg.MonthlyPartitionsDefinition,
}


@functools.cache
def partitions_definition(partitions: Partitions) -> dg.TimeWindowPartitionsDefinition:
    """The Dagster partitions of a dataset's ``partitions`` block (one object per distinct block).

    Partitions start at ``start``'s midnight in ``timezone`` (weekly ones on the first Sunday from it,
    monthly ones on the first of a month) and run up to the one in progress.
    """
    start = dt.datetime.fromisoformat(partitions.start)  # midnight, read in `timezone` by Dagster
    return _DEFINITIONS[partitions.granularity](start_date=start, timezone=partitions.timezone, end_offset=1)


def partitions_suffix(partitions_def: dg.PartitionsDefinition) -> str:
    """A short name part that tells partitions definitions apart (op names)."""
    assert isinstance(partitions_def, dg.TimeWindowPartitionsDefinition)
    identity = "|".join(
        [
            partitions_def.cron_schedule,
            partitions_def.start.isoformat(),
            partitions_def.timezone,
            partitions_def.fmt,
            str(partitions_def.end_offset),
        ]
    )
    return "p" + hashlib.sha256(identity.encode()).hexdigest()[:10]


def describe(partitions: Partitions) -> str:
    return f"{partitions.granularity} from {partitions.start} ({partitions.timezone})"


def run_window(context: dg.AssetExecutionContext) -> Window | None:
    """The time window a run of a partitioned op covers (one partition's, or a range's); None when
    the op is not partitioned, or the run names no partition (launched without one, as the API's
    extract and load actions do: then the extract reads incrementally from the cursor, as for an
    unpartitioned dataset)."""
    if context.assets_def.partitions_def is None:
        return None
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    window = context.partition_time_window
    return Window(window.start, window.end)


def flag(context: dg.AssetExecutionContext, configured: bool, tag: str) -> bool:
    """A launchpad option, set in the op's config or as a run tag (``"true"``) on the run or backfill."""
    return configured or str(context.run.tags.get(tag, "")).strip().lower() in ("true", "1", "yes")


def scheduled_partition_range(
    partitions_def: dg.TimeWindowPartitionsDefinition, tick: dt.datetime, reach_back_seconds: float
) -> tuple[str, str] | None:
    """The partitions a schedule tick at ``tick`` extracts: from the one holding ``tick`` minus the
    interval since the previous tick and the dataset's lookback, to the one in progress.

    Usually that is the current partition alone. At a window's turn it is also the one that just
    ended, so the rows created after the previous tick in that window (or committed late, within the
    lookback) are extracted before the schedule moves on. None before the first partition.
    """
    with dg.partition_loading_context(effective_dt=tick):
        last = partitions_def.get_last_partition_key()
        first_key = partitions_def.get_first_partition_key()
    if last is None or first_key is None:
        return None
    since = tick - dt.timedelta(seconds=reach_back_seconds)
    if since.timestamp() <= partitions_def.start.timestamp():
        first = first_key
    else:
        first = partitions_def.get_partition_key_for_timestamp(since.timestamp())
    return (first, last) if first <= last else (last, last)


def partition_request(
    *,
    run_key: str,
    asset_selection: list[dg.AssetKey],
    keys: tuple[str, str],
    tags: dict[str, Any],
) -> dg.RunRequest:
    """A run of the partitions ``keys`` (first, last): one partition, or one run over the range."""
    first, last = keys
    if first == last:
        return dg.RunRequest(run_key=run_key, asset_selection=asset_selection, partition_key=first, tags=tags)
    ranged = {**tags, ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}
    return dg.RunRequest(run_key=run_key, asset_selection=asset_selection, tags=ranged)
