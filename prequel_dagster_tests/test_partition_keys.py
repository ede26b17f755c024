"""The API's partition key for a partitioned asset (computed without Dagster) is Dagster's own."""

import datetime as dt
import random

import pytest

from prequel_dagster.config.models import Partitions
from prequel_dagster.config.partition_keys import current_partition_key
from prequel_dagster.partitions import partitions_definition


@pytest.mark.parametrize("granularity", ["hourly", "daily", "weekly", "monthly"])
@pytest.mark.parametrize("timezone", ["UTC", "America/New_York", "Asia/Kolkata"])
def test_the_current_partition_key_is_dagsters(granularity: str, timezone: str) -> None:
    partitions = Partitions(granularity=granularity, start="2024-01-01", timezone=timezone)
    definition = partitions_definition(partitions)
    rng = random.Random(f"{granularity}{timezone}")
    start = dt.datetime(2024, 2, 1, tzinfo=dt.UTC).timestamp()
    for _ in range(200):
        moment = dt.datetime.fromtimestamp(rng.uniform(start, start + 3 * 365 * 86400), dt.UTC)
        expected = definition.get_partition_key_for_timestamp(moment.timestamp())
        assert current_partition_key(partitions, moment) == expected, moment
