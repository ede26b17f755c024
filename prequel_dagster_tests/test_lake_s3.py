"""The datalake on a real S3 server (SeaweedFS on loopback): the same layout and commit protocol as
on disk, extract -> load end to end through the S3 protocol, and clear messages for bad settings."""

import os

import boto3
import pytest

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import PrequelError
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.stores import S3Store, open_datalake

from .lake_contract import assert_exclusive_commits
from .pg_helpers import create_provider_db, two_provider_config


def client(s3):
    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
    )


@pytest.fixture
def bucket(s3, request):
    name = "lake-" + os.urandom(4).hex()
    client(s3).create_bucket(Bucket=name)
    return name


def s3_compatible(s3, bucket, prefix="imports/prod"):
    return {
        "id": "lake",
        "name": "lake",
        "storage": "s3_compatible",
        "s3_compatible": {
            "host": s3["host"],
            "port": s3["port"],
            "bucket_name": bucket,
            "prefix": prefix,
            "disable_ssl": True,
            "aws_access_keys": {"access_key_id": s3["access_key"], "secret_access_key": "${LAKE_SECRET}"},
        },
    }


@pytest.fixture
def providers(pg, monkeypatch, s3):
    for k, v in {
        "ACME_PG_PASSWORD": "acme-s3",
        "GLOBEX_PG_PASSWORD": "globex-s3",
        "APP_TOKEN": "t",
        "LAKE_SECRET": s3["secret_key"],
    }.items():
        monkeypatch.setenv(k, v)
    create_provider_db(pg, "acme", users=45, domain="acme.test", password="acme-s3")
    create_provider_db(pg, "globex", users=7, domain="globex.test", password="globex-s3")


def test_extract_and_load_through_s3_with_the_local_layout(pg, s3, bucket, providers, receiver, tmp_path):
    raw = two_provider_config(pg, str(tmp_path / "unused"), receiver.url)
    raw["datalakes"] = [s3_compatible(s3, bucket)]
    config = load_config(raw, base_dir=str(tmp_path))
    first = run_extract(config, "acme-users")
    assert first.counts.records_new_inserted == 45 and first.data_uri.startswith(f"s3://{bucket}/imports/prod/")
    result = run_load(config, "acme-users-app")
    assert result.counts.records_loaded == 45
    keys = sorted(o["Key"] for o in client(s3).list_objects_v2(Bucket=bucket)["Contents"])
    assert f"imports/prod/lakehouse/acme/acme-users/_commits/{1:010d}.json" in keys  # the first commit, by name
    assert any(k.startswith("imports/prod/lakehouse/acme/acme-users/data/") and k.endswith(".parquet") for k in keys)
    assert any(k.startswith("imports/prod/artifacts/acme/streams/acme-users-app/_deliveries/") for k in keys)
    assert not [k for k in keys if k.endswith("/")], keys  # no directory markers
    again = run_extract(config, "acme-users")  # the cursor came back from S3: nothing new
    assert again.commit is None and again.counts.records_existing_unchanged > 0
    assert run_load(config, "acme-users-app").counts.records_loaded == 0


def test_the_commit_point_is_exclusive_on_s3(s3, bucket):
    assert_exclusive_commits(
        S3Store(
            bucket=bucket,
            prefix="p",
            region="us-east-1",
            access_key=s3["access_key"],
            secret_key=s3["secret_key"],
            endpoint=s3["endpoint_url"],
        )
    )


def test_bad_lake_settings_name_the_datalake_and_the_fix(s3, bucket, monkeypatch, tmp_path):
    def fails(lake, match):
        config = load_config(
            {
                "datalakes": [lake],
                "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
            },
            base_dir=str(tmp_path),
        )
        with pytest.raises(PrequelError) as info:
            open_datalake(config.datalake("lake"), config)
        assert "datalake 'lake'" in str(info.value) and match in str(info.value), str(info.value)
        assert "wrong-secret" not in str(info.value) and s3["secret_key"] not in str(info.value)

    monkeypatch.setenv("LAKE_SECRET", "wrong-secret")
    fails(s3_compatible(s3, bucket), "access denied")
    monkeypatch.setenv("LAKE_SECRET", s3["secret_key"])
    fails(s3_compatible(s3, "no-such-bucket"), "does not exist")
    monkeypatch.delenv("LAKE_SECRET")
    fails(s3_compatible(s3, bucket), "LAKE_SECRET")


def test_the_s3_kind_uses_the_default_credential_chain(s3, bucket, monkeypatch, tmp_path):
    for k, v in {
        "AWS_ACCESS_KEY_ID": s3["access_key"],
        "AWS_SECRET_ACCESS_KEY": s3["secret_key"],
        "AWS_ENDPOINT_URL": s3["endpoint_url"],
    }.items():
        monkeypatch.setenv(k, v)
    config = load_config(
        {
            "datalakes": [
                {
                    "id": "lake",
                    "name": "lake",
                    "storage": "s3",
                    "s3": {
                        "bucket_name": bucket,
                        "prefix": "x",
                        "bucket_region": "us-east-1",
                        "auth_method": "default_credentials",
                    },
                }
            ],
            "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
        },
        base_dir=str(tmp_path),
    )
    storage = open_datalake(config.datalake("lake"), config)
    storage.create_exclusive("probe.json", b"{}")
    assert storage.read_bytes("probe.json") == b"{}" and storage.list_names("") == ["probe.json"]


def test_an_iam_role_that_cannot_be_assumed_is_named(monkeypatch, tmp_path):
    for name, value in {
        "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_ACCESS_KEY_ID": "AKIATEST",
        "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
    }.items():
        monkeypatch.setenv(name, value)
    role = "arn:aws:iam::123456789012:role/prequel-lake"
    config = load_config(
        {
            "datalakes": [
                {
                    "id": "lake",
                    "name": "lake",
                    "storage": "s3",
                    "s3": {
                        "bucket_name": "b",
                        "auth_method": "aws_iam_role",
                        "aws_iam_role": {"aws_iam_role_arn": role},
                    },
                }
            ],
            "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
        },
        base_dir=str(tmp_path),
    )
    with pytest.raises(PrequelError, match=f"datalake 'lake': cannot assume aws_iam_role {role}.*trust policy") as info:
        open_datalake(config.datalake("lake"), config)
    assert "not-a-real-secret" not in str(info.value)
