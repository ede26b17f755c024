"""The datalake on Google Cloud Storage (fake-gcs-server) and Azure Blob Storage (Azurite), each a
real server on loopback: extract -> load through the real protocol, the exclusive commit point, and
clear messages for bad settings."""

import os

import pytest

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import PrequelError
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.stores import open_datalake

from .lake_contract import assert_exclusive_commits
from .pg_helpers import create_provider_db, two_provider_config


def gcs_lake(gcs, bucket, prefix="imports"):
    return {
        "id": "lake",
        "name": "lake",
        "storage": "gcs",
        "gcs": {"bucket_name": bucket, "prefix": prefix, "endpoint": gcs["endpoint"]},
    }


def abs_lake(azurite, container, prefix="imports"):
    return {
        "id": "lake",
        "name": "lake",
        "storage": "abs",
        "abs": {
            "bucket_name": container,
            "storage_account_name": azurite["account"],
            "prefix": prefix,
            "endpoint": azurite["endpoint"],
            "auth_method": "azure_storage_account_key",
            "azure_storage_account_key": {"account_key": "${AZURE_KEY}"},
        },
    }


@pytest.fixture
def gcs_bucket(gcs):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs["endpoint"]}
    )
    name = "lake-" + os.urandom(4).hex()
    client.create_bucket(name)
    return name


@pytest.fixture
def abs_container(azurite, monkeypatch):
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("AZURE_KEY", azurite["key"])
    name = "lake-" + os.urandom(4).hex()
    BlobServiceClient.from_connection_string(azurite["connection_string"]).create_container(name)
    return name


@pytest.fixture
def acme_db(pg, monkeypatch):
    for k, v in {"ACME_PG_PASSWORD": "acme-obj", "GLOBEX_PG_PASSWORD": "unused", "APP_TOKEN": "t"}.items():
        monkeypatch.setenv(k, v)
    create_provider_db(pg, "acme", users=45, domain="acme.test", password="acme-obj")


@pytest.mark.parametrize("kind", ["gcs", "abs"])
def test_extract_load_and_exclusive_commits_through_the_real_protocol(kind, request, pg, acme_db, receiver, tmp_path):
    if kind == "gcs":
        lake = gcs_lake(request.getfixturevalue("gcs"), request.getfixturevalue("gcs_bucket"))
    else:
        lake = abs_lake(request.getfixturevalue("azurite"), request.getfixturevalue("abs_container"))
    raw = two_provider_config(pg, str(tmp_path / "unused"), receiver.url)
    raw["datalakes"] = [lake]
    config = load_config(raw, base_dir=str(tmp_path))
    first = run_extract(config, "acme-users")
    assert first.counts.records_new_inserted == 45
    assert first.data_uri.startswith({"gcs": "gs://", "abs": "abfs://"}[kind])
    assert run_load(config, "acme-users-app").counts.records_loaded == 45
    assert run_extract(config, "acme-users").commit is None  # the cursor came back from the store
    assert run_load(config, "acme-users-app").counts.records_loaded == 0

    storage = open_datalake(config.datalake("lake"), config)
    assert all(not n.endswith("/") for n in storage.list_names("lakehouse/acme/acme-users/_commits"))
    assert_exclusive_commits(storage)


def test_bad_gcs_and_azure_settings_name_the_datalake(gcs, azurite, abs_container, monkeypatch, tmp_path):
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
        assert azurite["key"] not in str(info.value)

    fails(gcs_lake(gcs, "missing-bucket"), "does not exist")
    fails(abs_lake(azurite, "missing-container"), "does not exist")
    monkeypatch.setenv("AZURE_KEY", "d3Jvbmcga2V5")  # base64 of "wrong key"
    fails(abs_lake(azurite, abs_container), "access denied")
