"""The spine end to end: two providers' PostgreSQL databases -> Dagster assets -> lake -> mapped batches."""

import datetime as dt
import os

import dagster as dg
import pytest

from .dagster_helpers import metadata_of, run_assets
from .pg_helpers import BASE, create_provider_db, execute, two_provider_config

ACME_USERS, GLOBEX_USERS = 50, 30


@pytest.fixture
def setup(pg, receiver, tmp_path, monkeypatch):
    secrets = {
        "ACME_PG_PASSWORD": "acme-" + os.urandom(6).hex(),
        "GLOBEX_PG_PASSWORD": "globex-" + os.urandom(6).hex(),
        "APP_TOKEN": "tok-" + os.urandom(8).hex(),
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    create_provider_db(pg, "acme", users=ACME_USERS, domain="acme.test", password=secrets["ACME_PG_PASSWORD"])
    create_provider_db(pg, "globex", users=GLOBEX_USERS, domain="globex.test", password=secrets["GLOBEX_PG_PASSWORD"])
    config = two_provider_config(pg, str(tmp_path / "lake"), receiver.url)
    return {"config": config, "secrets": secrets, "tmp": tmp_path}


def delivered(receiver, stream_id):
    return receiver.store.records(stream_id=stream_id)


def test_first_load_delivers_every_row_mapped_exactly(setup, receiver, pg):
    with dg.instance_for_test() as instance:
        result = run_assets(setup["config"], instance, base_dir=str(setup["tmp"]))
    assert result.success
    acme = delivered(receiver, "acme-users-app")
    assert len(acme) == ACME_USERS
    by_id = {r["record"]["id"]: r for r in acme}
    assert by_id["7"]["record"] == {"id": "7", "email": "u7@acme.test", "full_name": "First7 Last7", "balance": 7.5}
    assert not any(r["is_deleted"] for r in acme)
    assert {r["record"]["id"] for r in delivered(receiver, "globex-users-app")} == {str(i) for i in range(1, 31)}

    extract = metadata_of(result, "prequel/acme/acme-users")
    assert extract["records_processed"] == ACME_USERS and extract["records_new_inserted"] == ACME_USERS
    assert extract["dagster/row_count"] == ACME_USERS
    columns = {c.name: c.type for c in extract["dagster/column_schema"].columns}
    assert columns["balance"] == "decimal128(12, 2)" and columns["updated_at"] == "timestamp[us, tz=UTC]"
    load = metadata_of(result, "prequel/acme/streams/acme-users-app")
    assert load["records_loaded"] == ACME_USERS and load["records_errored"] == 0
    assert load["batches_sent"] == 3  # 20 records per batch


def test_second_load_delivers_exactly_the_changes(setup, receiver, pg):
    pw = setup["secrets"]["ACME_PG_PASSWORD"]
    with dg.instance_for_test() as instance:
        assert run_assets(setup["config"], instance, base_dir=str(setup["tmp"])).success
        first_batches = {r["batch_id"] for r in delivered(receiver, "acme-users-app")}
        cursor = BASE + dt.timedelta(seconds=ACME_USERS)  # the previous cursor: max(updated_at)
        later = BASE + dt.timedelta(hours=1)
        execute(pg, "acme", pw, "UPDATE users SET email = 'changed2@acme.test', updated_at = %s WHERE id = 2", (later,))
        execute(
            pg, "acme", pw, "INSERT INTO users VALUES (51, 'u51@acme.test', 'New', 'Person', 1.00, %s, false)", (later,)
        )
        execute(pg, "acme", pw, "UPDATE users SET is_deleted = true, updated_at = %s WHERE id = 3", (later,))
        # changed in the same second as the previous cursor: only a >= read with a lookback sees it
        execute(pg, "acme", pw, "UPDATE users SET last_name = 'Same-Second', updated_at = %s WHERE id = 10", (cursor,))
        # committed late, stamped 10 s before the cursor: inside the 30 s lookback, missed without it
        execute(
            pg,
            "acme",
            pw,
            "UPDATE users SET last_name = 'Late', updated_at = %s WHERE id = 20",
            (cursor - dt.timedelta(seconds=10),),
        )
        result = run_assets(setup["config"], instance, base_dir=str(setup["tmp"]))
    assert result.success
    second = [r for r in delivered(receiver, "acme-users-app") if r["batch_id"] not in first_batches]
    upserts = {r["record"]["id"]: r["record"] for r in second if not r["is_deleted"]}
    deletes = {r["record"]["id"]: r["record"] for r in second if r["is_deleted"]}
    assert upserts == {
        "2": {"id": "2", "email": "changed2@acme.test", "full_name": "First2 Last2", "balance": 2.5},
        "51": {"id": "51", "email": "u51@acme.test", "full_name": "New Person", "balance": 1.0},
        "10": {"id": "10", "email": "u10@acme.test", "full_name": "First10 Same-Second", "balance": 10.5},
        "20": {"id": "20", "email": "u20@acme.test", "full_name": "First20 Late", "balance": 20.5},
    }
    assert deletes == {"3": {"id": "3", "email": "u3@acme.test", "full_name": "First3 Last3", "balance": 3.5}}
    extract = metadata_of(result, "prequel/acme/acme-users")
    assert (
        extract["records_new_inserted"],
        extract["records_existing_updated"],
        extract["records_existing_deleted"],
    ) == (1, 3, 1)
    assert extract["records_existing_unchanged"] > 0  # the lookback window re-read rows that did not change
    # globex had no changes: nothing new delivered, and its extract committed nothing
    assert metadata_of(result, "prequel/globex/streams/globex-users-app")["records_loaded"] == 0


def test_one_providers_rows_never_reach_another_providers_stream(setup, receiver):
    with dg.instance_for_test() as instance:
        assert run_assets(setup["config"], instance, base_dir=str(setup["tmp"])).success
    for stream_id, provider, domain in (
        ("acme-users-app", "acme", "acme.test"),
        ("globex-users-app", "globex", "globex.test"),
    ):
        rows = delivered(receiver, stream_id)
        assert rows, stream_id
        assert all(r["provider_id"] == provider for r in rows)
        assert all(r["record"]["email"].endswith("@" + domain) for r in rows)
    # batches are per stream and per provider: no batch mixes providers
    for request in receiver.requests:
        import json

        body = json.loads(request.body)
        domains = {rec["email"].split("@")[1] for rec in body["records"] + body["deleted_records"]}
        assert domains == {body["provider_id"] + ".test"}


def test_unreachable_source_and_wrong_password_fail_with_a_clear_message(setup, pg, monkeypatch):
    monkeypatch.setenv("ACME_PG_PASSWORD", "wrong-password-123")
    with dg.instance_for_test() as instance:
        result = run_assets(
            setup["config"],
            instance,
            base_dir=str(setup["tmp"]),
            keys=["prequel/acme/acme-users"],
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "source 'acme-pg'" in message and "password authentication failed" in message
    assert "check password_auth" in message
    assert "wrong-password-123" not in str(failure.step_failure_data.error.to_string())

    setup["config"]["sources"][0]["postgres"]["port"] = 1  # nothing listens there: unreachable
    with dg.instance_for_test() as instance:
        result = run_assets(
            setup["config"],
            instance,
            base_dir=str(setup["tmp"]),
            keys=["prequel/acme/acme-users"],
            raise_on_error=False,
        )
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "source 'acme-pg'" in message and "password authentication failed" not in message
    assert "Connection refused" in message and "check host and port" in message


def test_full_read_dimension_and_sql_dataset_deliver_only_changes(setup, receiver, pg):
    """Without last_modified_column every row is read each time; only changed rows go out."""
    config = setup["config"]
    config["datasets"][0]["dimension"].pop("last_modified_column")
    config["datasets"][1] = {
        "id": "globex-users",
        "name": "users",
        "source_id": "globex-pg",
        "method": "sql",
        "sql": {"query": 'SELECT id, email, first_name, last_name AS "Last Name", balance FROM users WHERE id <= 10'},
        "type": "dimension",
        "dimension": {"primary_key_column": "id"},
    }
    config["streams"][1]["mappings"][2]["expression"]["expr"] = 'first_name + " " + `Last Name`'
    with dg.instance_for_test() as instance:
        first = run_assets(config, instance, base_dir=str(setup["tmp"]))
        assert first.success
        assert len(delivered(receiver, "globex-users-app")) == 10
        assert delivered(receiver, "globex-users-app")[0]["record"]["full_name"] == "First1 Last1"
        before = len(delivered(receiver, "acme-users-app"))
        execute(pg, "acme", setup["secrets"]["ACME_PG_PASSWORD"], "UPDATE users SET first_name = 'Zed' WHERE id = 5")
        second = run_assets(config, instance, base_dir=str(setup["tmp"]))
    assert second.success
    extract = metadata_of(second, "prequel/acme/acme-users")
    assert extract["records_processed"] == ACME_USERS and extract["records_existing_updated"] == 1
    assert extract["records_existing_unchanged"] == ACME_USERS - 1
    new = delivered(receiver, "acme-users-app")[before:]
    assert [r["record"]["full_name"] for r in new] == ["Zed Last5"]
    assert len(delivered(receiver, "globex-users-app")) == 10  # nothing changed there


def test_a_vendor_whose_driver_is_missing_or_unreachable_fails_with_a_clear_message(setup, receiver):
    config = setup["config"]
    config["sources"][0] = {
        "id": "acme-pg",
        "name": "acme-redshift",
        "vendor": "redshift",
        "provider_id": "acme",
        "redshift": {
            "host": "example.invalid",
            "database": "acme",
            "username": "u",
            "auth_method": "password_auth",
            "password_auth": {"username": "u", "password": "${ACME_PG_PASSWORD}"},
        },
    }
    with dg.instance_for_test() as instance:
        result = run_assets(
            config, instance, base_dir=str(setup["tmp"]), keys=["prequel/acme/acme-users"], raise_on_error=False
        )
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "source 'acme-pg'" in message
    assert "pip install 'prequel_dagster[redshift]'" in message or "check host and port" in message, message


def test_test_transform_shows_records_and_violations(setup, receiver, tmp_path):
    import json
    import subprocess
    import sys

    with dg.instance_for_test() as instance:
        assert run_assets(
            setup["config"], instance, base_dir=str(setup["tmp"]), keys=["prequel/acme/acme-users"]
        ).success
    config = setup["config"]
    config["streams"][0]["mappings"][1] = {
        "target_field": "email",
        "field_type": "expression",
        "expression": {"expr": "id > 48 ? nil : email"},
    }
    path = setup["tmp"] / "prequel.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "prequel_dagster.cli",
            "test-transform",
            "acme-users-app",
            "--limit",
            "50",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3, proc.stderr
    assert '{"id":"1","email":"u1@acme.test","full_name":"First1 Last1","balance":1.50}' in proc.stdout
    assert proc.stdout.count("INVALID") == 2 and "required field 'email' is null" in proc.stdout
    assert "50 records from the lake, 2 violate" in proc.stdout
