"""The key Dagster gives the partition in progress of a ``partitions`` block, computed without Dagster
(the API launches runs of partitioned assets and may not import it). Formats as Dagster's time-window
partitions: ``2025-01-31`` (daily, weekly from Sunday, monthly from the 1st), ``2025-01-31-13:00``
(hourly); a test compares them with Dagster's own."""

import datetime as dt
from zoneinfo import ZoneInfo

from .models import Partitions

PARTITION_TAG = "dagster/partition"


def current_partition_key(partitions: Partitions, now: dt.datetime | None = None) -> str:
    """The key of the partition holding ``now`` (default: the current time), in the block's timezone."""
    local = (now or dt.datetime.now(dt.UTC)).astimezone(ZoneInfo(partitions.timezone))
    if partitions.granularity == "hourly":
        return local.strftime("%Y-%m-%d-%H:00")
    day = local.date()
    if partitions.granularity == "weekly":
        day -= dt.timedelta(days=(day.weekday() + 1) % 7)  # back to Sunday
    elif partitions.granularity == "monthly":
        day = day.replace(day=1)
    return day.isoformat()
