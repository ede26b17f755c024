"""Glob datasets on a real S3 server (SeaweedFS): CSV, JSON lines and Parquet files read
incrementally by new or changed file, and the sensor that requests an extract when files land."""

import io
import os
from collections.abc import Callable

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
from prequel_dagster.stores import LocalStore


@pytest.fixture
def bucket(s3, monkeypatch):
    monkeypatch.setenv("FILES_SECRET", s3["secret_key"])
    name = "files-" + os.urandom(4).hex()
    client(s3).create_bucket(Bucket=name)
    return name


def client(s3):
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
    )


def glob_config(
    tmp_path, vendor: str, block: dict, *, source_id="acme-files", file_format="csv", pattern="exports/*.csv"
):
    """One provider, a local lake under ``tmp_path``, and a glob dataset ``users`` on a ``vendor`` source."""
    return load_config(
        {
            "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}],
            "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
            "sources": [{"id": source_id, "name": "files", "vendor": vendor, "provider_id": "acme", vendor: block}],
            "datasets": [
                {
                    "id": "users",
                    "name": "users",
                    "source_id": source_id,
                    "method": "glob",
                    "glob": {"pattern": pattern, "file_format": file_format},
                    "type": "dimension",
                    "dimension": {"primary_key_column": "id"},
                }
            ],
        },
        base_dir=str(tmp_path),
    )


def config(s3, bucket, tmp_path, file_format="csv", pattern="exports/*.csv"):
    return glob_config(
        tmp_path,
        "s3_compatible",
        {
            "host": s3["host"],
            "port": s3["port"],
            "bucket_name": bucket,
            "disable_ssl": True,
            "aws_access_keys": {"access_key_id": s3["access_key"], "secret_access_key": "${FILES_SECRET}"},
        },
        file_format=file_format,
        pattern=pattern,
    )


def put(s3, bucket, key, body: bytes):
    client(s3).put_object(Bucket=bucket, Key=key, Body=body)


def lake_table(tmp_path) -> dict:
    log = DatasetLog(LocalStore(tmp_path / "lake"), "acme", "users")
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
    assert (c.records_processed, c.records_new_inserted, c.records_existing_updated, c.records_existing_unchanged) == (
        3,
        1,
        1,
        1,
    )  # users-2.csv was not read again
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
    assert DatasetLog(LocalStore(tmp_path / "lake"), "acme", "users").latest() is None


def test_the_sensor_requests_an_extract_when_files_land(s3, bucket, tmp_path):
    cfg = config(s3, bucket, tmp_path)
    defs = build_definitions(cfg)
    sensor = next(s for s in defs.sensors if s.name == "prequel_glob_new_files")
    with dg.instance_for_test() as instance:

        def tick(cursor=None):
            return sensor(
                dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs, resources=defs.resources)
            )

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


def local_config(tmp_path, folder="incoming", **options):
    return glob_config(tmp_path, "local", {"path": folder}, source_id="acme-drop", **options)


def test_a_local_folder_is_read_like_a_bucket(tmp_path):
    exports = tmp_path / "incoming" / "exports"
    exports.mkdir(parents=True)
    (exports / "users-1.csv").write_text("id,email\n1,a@x.test\n2,b@x.test\n")
    (tmp_path / "incoming" / "users-0.csv").write_text("id,email\n9,z@x.test\n")  # outside the pattern
    cfg = local_config(tmp_path)  # the folder is relative to the config's folder
    assert run_extract(cfg, "users").counts.records_new_inserted == 2
    assert run_extract(cfg, "users").commit is None
    (exports / "users-2.csv").write_text("id,email\n2,b2@x.test\n3,c@x.test\n")
    c = run_extract(cfg, "users").counts
    assert (c.records_processed, c.records_new_inserted, c.records_existing_updated) == (2, 1, 1)
    assert lake_table(tmp_path)[2]["email"] == "b2@x.test" and sorted(lake_table(tmp_path)) == [1, 2, 3]


def test_a_missing_local_folder_is_named(tmp_path):
    with pytest.raises(SourceError, match="acme-drop.*nowhere does not exist; check local.path"):
        run_extract(local_config(tmp_path, "nowhere"), "users")
    assert not (tmp_path / "nowhere").exists()  # not created by the attempt


def test_a_local_source_needs_a_glob_dataset(tmp_path):
    from prequel_dagster.config.errors import ConfigError

    raw = local_config(tmp_path).model_dump(mode="json", exclude_none=True)
    raw["datasets"][0].update(method="table", table={"source_table_name": "users"})
    raw["datasets"][0].pop("glob")
    with pytest.raises(ConfigError, match="a local source is read with method: glob"):
        load_config(raw, base_dir=str(tmp_path))


# ---------------------------------------------------------------- the other bucket vendors, each a real server


def _bucket_source(kind, request, monkeypatch) -> tuple[dict, Callable[[str, bytes], None]]:
    """A source block for ``kind`` on its test server, and a function that uploads a file to it."""
    name = "drop-" + os.urandom(4).hex()
    if kind == "s3":  # the AWS vendor block, pointed at SeaweedFS by the SDKs' endpoint variable
        s3 = request.getfixturevalue("s3")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3["endpoint_url"])
        monkeypatch.setenv("FILES_SECRET", s3["secret_key"])
        client(s3).create_bucket(Bucket=name)
        block = {
            "bucket_name": name,
            "region": s3["region"],
            "auth_method": "aws_access_keys",
            "aws_access_keys": {"access_key_id": s3["access_key"], "secret_access_key": "${FILES_SECRET}"},
        }
        return block, lambda key, body: put(s3, name, key, body)
    if kind == "gcs":
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        gcs = request.getfixturevalue("gcs")
        bucket = storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs["endpoint"]}
        ).create_bucket(name)
        block = {"bucket_name": name, "auth_method": "gcp_service_account_role", "endpoint": gcs["endpoint"]}
        return block, lambda key, body: bucket.blob(key).upload_from_string(body)
    import datetime as dt

    from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

    azurite = request.getfixturevalue("azurite")
    container = BlobServiceClient.from_connection_string(azurite["connection_string"]).create_container(name)
    sas = generate_container_sas(
        azurite["account"],
        name,
        account_key=azurite["key"],
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    monkeypatch.setenv("FILES_SAS", sas)
    block = {
        "bucket_name": name,
        "storage_account_name": azurite["account"],
        "endpoint": azurite["endpoint"],
        "azure_service_shared_access_signature": {"shared_access_signature_token": "${FILES_SAS}"},
    }
    return block, lambda key, body: container.upload_blob(key, body, overwrite=True)


@pytest.mark.parametrize("kind", ["s3", "gcs", "abs"])
def test_glob_datasets_on_s3_gcs_and_azure(kind, request, monkeypatch, tmp_path):
    block, upload = _bucket_source(kind, request, monkeypatch)
    cfg = glob_config(tmp_path, kind, block)
    upload("exports/users-1.csv", b"id,email\n1,a@x.test\n2,b@x.test\n")
    upload("elsewhere/users-9.csv", b"id,email\n9,z@x.test\n")
    assert run_extract(cfg, "users").counts.records_new_inserted == 2
    assert run_extract(cfg, "users").commit is None
    upload("exports/users-2.csv", b"id,email\n2,b2@x.test\n3,c@x.test\n")
    c = run_extract(cfg, "users").counts
    assert (c.records_processed, c.records_new_inserted, c.records_existing_updated) == (2, 1, 1)
    assert lake_table(tmp_path)[2]["email"] == "b2@x.test" and sorted(lake_table(tmp_path)) == [1, 2, 3]


def test_gcs_hmac_keys_are_refused_with_the_alternatives(tmp_path):
    cfg = glob_config(
        tmp_path,
        "gcs",
        {
            "bucket_name": "b",
            "auth_method": "gcs_hmac_keys",
            "gcs_hmac_keys": {"access_id": "GOOG1", "secret": "s3cr3t-hmac"},
        },
        source_id="acme-gcs",
        pattern="*.csv",
    )
    with pytest.raises(SourceError, match="source 'acme-gcs': gcs auth_method gcs_hmac_keys is not supported") as info:
        run_extract(cfg, "users")
    assert "s3cr3t-hmac" not in str(info.value)


def test_an_azure_listing_error_names_the_source_and_hides_the_signature(request, monkeypatch, tmp_path):
    block, _ = _bucket_source("abs", request, monkeypatch)
    block["bucket_name"] = "no-such-container"
    cfg = glob_config(tmp_path, "abs", block)
    with pytest.raises(SourceError, match="source 'acme-files'.*cannot list.*check the bucket") as info:
        run_extract(cfg, "users")
    signature = os.environ["FILES_SAS"].split("sig=")[1]
    assert signature not in str(info.value) and signature.replace("%3D", "=") not in str(info.value)


@pytest.mark.parametrize("file_format", ["csv", "json"])
def test_big_text_files_are_read_a_block_at_a_time(tmp_path, monkeypatch, file_format):
    from prequel_dagster.sources import files

    monkeypatch.setattr(files, "BLOCK_BYTES", 16 << 10)
    folder = tmp_path / "incoming" / "exports"
    folder.mkdir(parents=True)
    if file_format == "csv":
        body = "id,email\n" + "".join(f"{i},u{i}@x.test\n" for i in range(20_000))
    else:
        body = "".join(f'{{"id": {i}, "email": "u{i}@x.test"}}\n' for i in range(20_000))
    (folder / f"users.{file_format}").write_text(body)
    cfg = local_config(tmp_path, file_format=file_format, pattern=f"exports/*.{file_format}")
    reader = files.GlobReader(cfg.source("acme-drop"), cfg.dataset("users"), cfg)
    sizes = [b.num_rows for b in reader.read()]
    assert len(sizes) > 10 and sum(sizes) == 20_000  # streamed, not one table
    assert run_extract(cfg, "users").counts.records_new_inserted == 20_000
