"""The re-read window before the cursor: per-vendor defaults (Prequel's) and the dataset's own setting."""

import datetime as dt

import pytest

from prequel_dagster.config.models import Dataset, Source
from prequel_dagster.engine.extract import lower_bound
from prequel_dagster.sources import lookback_seconds


def source(vendor: str) -> Source:
    blocks = {
        "postgres": {
            "host": "h",
            "database": "d",
            "auth_method": "password_auth",
            "password_auth": {"username": "u", "password": "p"},
        },
        "sqlite": {"path": "x.db"},
        "redshift": {
            "host": "h",
            "database": "d",
            "auth_method": "password_auth",
            "password_auth": {"username": "u", "password": "p"},
        },
    }
    return Source.model_validate({"id": "s", "name": "s", "vendor": vendor, "provider_id": "p", vendor: blocks[vendor]})


def dataset(**extra) -> Dataset:
    return Dataset.model_validate(
        {
            "id": "d",
            "name": "d",
            "source_id": "s",
            "method": "table",
            "table": {"source_table_namespace": "public", "source_table_name": "t"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at"},
            **extra,
        }
    )


@pytest.mark.parametrize("vendor, seconds", [("postgres", 30), ("sqlite", 0), ("redshift", 300)])
def test_default_lookback_per_vendor(vendor, seconds):
    assert lookback_seconds(source(vendor), dataset()) == seconds


def test_a_dataset_setting_wins_and_moves_the_lower_bound():
    assert lookback_seconds(source("postgres"), dataset(lookback_seconds=120)) == 120
    cursor = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
    assert lower_bound(cursor, 30) == cursor - dt.timedelta(seconds=30)
    assert lower_bound(cursor, 0) == cursor and lower_bound(None, 30) is None
