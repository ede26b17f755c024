"""A secret set through the environment never reaches logs, run storage, metadata or the lake."""

import logging
import os
from pathlib import Path

import dagster as dg

from .dagster_helpers import run_assets
from .pg_helpers import create_provider_db, two_provider_config


def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(str(path))
    return hits


def test_secrets_never_leave_the_process(pg, receiver, tmp_path, monkeypatch, caplog, capfd):
    pg_password = "pg-secret-" + os.urandom(8).hex()
    token = "tok-secret-" + os.urandom(8).hex()
    monkeypatch.setenv("ACME_PG_PASSWORD", pg_password)
    monkeypatch.setenv("GLOBEX_PG_PASSWORD", "globex-" + os.urandom(8).hex())
    monkeypatch.setenv("APP_TOKEN", token)
    create_provider_db(pg, "acme", users=10, domain="acme.test", password=pg_password)
    create_provider_db(pg, "globex", users=5, domain="globex.test", password=os.environ["GLOBEX_PG_PASSWORD"])
    config = two_provider_config(pg, str(tmp_path / "lake"), receiver.url)
    home = tmp_path / "dagster_home"
    home.mkdir()
    caplog.set_level(logging.DEBUG)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = run_assets(config, instance, base_dir=str(tmp_path))
        assert result.success
        # a failing run too: its error must not carry the password of the other source
        monkeypatch.setenv("GLOBEX_PG_PASSWORD", "wrong-" + pg_password)
        failed = run_assets(
            config, instance, base_dir=str(tmp_path), keys=["prequel/globex/globex-users"], raise_on_error=False
        )
        assert not failed.success
        events = [str(e) for r in (result, failed) for e in instance.all_logs(r.run_id)]
    assert receiver.store.records(stream_id="acme-users-app")  # the token was used...
    assert all(r.headers["Authorization"] == f"Bearer {token}" for r in receiver.requests)
    out, err = capfd.readouterr()
    for secret in (pg_password, token):
        assert secret not in caplog.text, "secret in Python logs"
        assert secret not in out and secret not in err, "secret on the console"
        assert not any(secret in e for e in events), "secret in the event log"
        assert _files_containing(home, secret.encode()) == [], "secret in run storage"
        assert _files_containing(tmp_path / "lake", secret.encode()) == [], "secret in the lake"
        for r in (result, failed):
            for e in r.get_asset_materialization_events():
                assert secret not in str(e.event_specific_data.materialization.metadata)


def test_secret_values_are_masked_in_config_objects(monkeypatch):
    from prequel_dagster.config.models import PasswordAuth

    monkeypatch.setenv("S3CRET_VAR", "hunter2-very-secret")
    auth = PasswordAuth.model_validate({"username": "u", "password": "${S3CRET_VAR}"})
    assert auth.password.reveal() == "hunter2-very-secret"
    # a literal secret (not a ${VAR}) is held as its value: it must be masked in every rendering
    literal = PasswordAuth.model_validate({"username": "u", "password": "hunter3-literal-secret"})
    for shown in (repr(literal), str(literal), str(literal.model_dump()), literal.model_dump_json()):
        assert "hunter3" not in shown, shown
    assert literal.password.reveal() == "hunter3-literal-secret"
    from prequel_dagster.config.secrets import redact

    assert redact("failed with hunter2-very-secret inside") == "failed with *** inside"


def test_url_signatures_are_masked_in_any_encoding():
    from prequel_dagster.config.secrets import redact

    text = (
        "GET https://acct.blob.core.windows.net/c?se=2026-01-01&sp=rl&sig=AbC/d+e%3D&x=1 failed; "
        "https://b.s3.amazonaws.com/k?X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok/en"
    )
    masked = redact(text)
    assert masked == (
        "GET https://acct.blob.core.windows.net/c?se=2026-01-01&sp=rl&sig=***&x=1 failed; "
        "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Security-Token=***"
    )
