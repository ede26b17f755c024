"""Glob datasets on a real S3 server (SeaweedFS): CSV, JSON lines and Parquet files read
incrementally by new or changed file, and the sensor that requests an extract when files land."""

import io
import os

import boto3
import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prequel_dagster import build_definitions
from prequel_dagster.config import load_config
from prequel_dagster.config.errors import SourceError
from prequel_dagster.engine import run_extract
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.lake.storage import LocalStorage


@pytest.fixture
def bucket(s3, monkeypatch):
    monkeypatch.setenv("FILES_SECRET", s3["secret_key"])
    name = "files-" + os.urandom(4).hex()
    client(s3).create_bucket(Bucket=name)
    return name


def client(s3):
    return boto3.client("s3", endpoint_url=s3["endpoint_url"], aws_access_key_id=s3["access_key"],
                        aws_secret_access_key=s3["secret_key"], region_name=s3["region"])


def config(s3, bucket, tmp_path, file_format="csv", pattern="exports/*.csv"):
    return load_config({
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(tmp_path / "lake")}}],
        "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
        "sources": [{"id": "acme-files", "name": "files", "vendor": "s3_compatible", "provider_id": "acme",
                     "s3_compatible": {"host": s3["host"], "port": s3["port"], "bucket_name": bucket, "disable_ssl": True,
                                       "aws_access_keys": {"access_key_id": s3["access_key"],
                                                           "secret_access_key": "${FILES_SECRET}"}}}],
        "datasets": [{"id": "users", "name": "users", "source_id": "acme-files", "method": "glob",
                      "glob": {"pattern": pattern, "file_format": file_format},
                      "type": "dimension", "dimension": {"primary_key_column": "id"}}],
    }, base_dir=str(tmp_path))


def put(s3, bucket, key, body: bytes):
    client(s3).put_object(Bucket=bucket, Key=key, Body=body)


def lake_table(tmp_path) -> dict:
    log = DatasetLog(LocalStorage(tmp_path / "lake"), "acme", "users")
    rows = pa.Table.from_batches(list(log.scan()), schema=log.schema()).to_pylist()
    return {r["id"]: r for r in rows}  # the latest version of each key


def test_csv_files_are_read_once_and_changed_files_again(s3, bucket, tmp_path):
    put(s3, bucket, "exports/users-1.csv", b"id,email\n1,a@x.test\n2,b@x.test\n")
    put(s3, bucket, "exports/users-2.csv", b"id,email\n3,c@x.test\n4,d@x.test\n")
    put(s3, bucket, "other/ignored.csv", b"id,email\n99,z@x.test\n")
    cfg = config(s3, bucket, tmp_path)
    first = run_extract(cfg, "users")
    assert first.counts.records_new_inserted == 4 and sorted(lake_table(tmp_path)) == [1, 2, 3, 4]
    assert run_extract(cfg, "users").commit is None  # nothing new: nothing read, nothing committed
    put(s3, bucket, "exports/users-1.csv", b"id,email\n1,a@x.test\n2,b2@x.test\n")  # rewritten: row 2 changed
    put(s3, bucket, "exports/users-3.csv", b"id,email\n5,e@x.test\n")
    second = run_extract(cfg, "users")
    c = second.counts
    assert (c.records_processed, c.records_new_inserted, c.records_existing_updated, c.records_existing_unchanged) \
        == (3, 1, 1, 1)  # users-2.csv was not read again
    assert lake_table(tmp_path)[2]["email"] == "b2@x.test"


@pytest.mark.parametrize("file_format", ["json", "parquet"])
def test_json_lines_and_parquet_files(s3, bucket, tmp_path, file_format):
    if file_format == "json":
        put(s3, bucket, "drop/a.jsonl", b'{"id": 1, "email": "a@x.test", "n": 1.5}\n{"id": 2, "email": null, "n": 2}\n')
        pattern = "drop/*.jsonl"
    else:
        sink = io.BytesIO()
        pq.write_table(pa.table({"id": [1, 2], "email": ["a@x.test", None], "n": [1.5, 2.0]}), sink)
        put(s3, bucket, "drop/a.parquet", sink.getvalue())
        pattern = "drop/*.parquet"
    result = run_extract(config(s3, bucket, tmp_path, file_format, pattern), "users")
    assert result.counts.records_new_inserted == 2
    rows = lake_table(tmp_path)
    assert rows[1]["email"] == "a@x.test" and rows[2]["email"] is None and rows[1]["n"] == 1.5


def test_a_broken_file_is_named_and_nothing_is_committed(s3, bucket, tmp_path):
    put(s3, bucket, "exports/good.csv", b"id,email\n1,a@x.test\n")
    put(s3, bucket, "exports/bad.csv", b"id,email\n2,b@x.test,extra,columns\n")
    with pytest.raises(SourceError, match="exports/bad.csv") as info:
        run_extract(config(s3, bucket, tmp_path), "users")
    assert "acme-files" in str(info.value) and s3["secret_key"] not in str(info.value)
    assert DatasetLog(LocalStorage(tmp_path / "lake"), "acme", "users").latest() is None


def test_the_sensor_requests_an_extract_when_files_land(s3, bucket, tmp_path):
    cfg = config(s3, bucket, tmp_path)
    defs = build_definitions(cfg)
    sensor = next(s for s in defs.sensors if s.name == "prequel_glob_new_files")
    with dg.instance_for_test() as instance:
        def tick(cursor=None):
            return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))

        assert not tick().run_requests  # an empty bucket
        put(s3, bucket, "exports/users-1.csv", b"id,email\n1,a@x.test\n")
        result = tick()
        assert len(result.run_requests) == 1
        assert result.run_requests[0].asset_selection == [dg.AssetKey(["prequel", "acme", "users"])]
        assert not tick(result.cursor).run_requests  # the same files: not requested twice
        run_extract(cfg, "users")
        assert not tick(result.cursor).run_requests  # extracted: nothing pending
        put(s3, bucket, "exports/users-2.csv", b"id,email\n2,b@x.test\n")
        assert len(tick(result.cursor).run_requests) == 1
