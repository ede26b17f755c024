"""SSH against a real OpenSSH sshd on loopback: SFTP glob datasets, and a PostgreSQL source read
through an SSH tunnel (use_ssh_tunnel)."""

import os
from pathlib import Path

import pytest

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import SourceError
from prequel_dagster.engine import run_extract

from .pg_helpers import create_provider_db, two_provider_config


def sftp_config(sshd, tmp_path, key_var="SFTP_KEY"):
    return load_config(
        {
            "datalakes": [
                {"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(tmp_path / "lake")}}
            ],
            "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
            "sources": [
                {
                    "id": "acme-sftp",
                    "name": "sftp",
                    "vendor": "sftp",
                    "provider_id": "acme",
                    "sftp": {
                        "host": sshd["host"],
                        "port": sshd["port"],
                        "username": sshd["username"],
                        "auth_method": "public_key_auth",
                        "public_key_auth": {"private_key": "${" + key_var + "}"},
                    },
                }
            ],
            "datasets": [
                {
                    "id": "users",
                    "name": "users",
                    "source_id": "acme-sftp",
                    "method": "glob",
                    "glob": {"pattern": "outbox/*.csv", "file_format": "csv"},
                    "type": "dimension",
                    "dimension": {"primary_key_column": "id"},
                }
            ],
        },
        base_dir=str(tmp_path),
    )


def test_sftp_files_are_read_incrementally(sshd, tmp_path, monkeypatch):
    monkeypatch.setenv("SFTP_KEY", sshd["private_key"])
    outbox = Path(sshd["files"]) / "outbox"
    outbox.mkdir(exist_ok=True)
    (outbox / "a.csv").write_text("id,email\n1,a@x.test\n2,b@x.test\n")
    (outbox / "notes.txt").write_text("not data")
    config = sftp_config(sshd, tmp_path)
    assert run_extract(config, "users").counts.records_new_inserted == 2
    assert run_extract(config, "users").commit is None
    (outbox / "b.csv").write_text("id,email\n3,c@x.test\n")
    again = run_extract(config, "users")
    assert again.counts.records_processed == 1 and again.counts.records_new_inserted == 1


def test_a_refused_sftp_key_is_named(sshd, tmp_path, monkeypatch):
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    monkeypatch.setenv("SFTP_KEY", (tmp_path / "other").read_text())
    with pytest.raises(SourceError, match="authorized_keys") as info:
        run_extract(sftp_config(sshd, tmp_path), "users")
    assert "acme-sftp" in str(info.value) and "PRIVATE KEY" not in str(info.value)


def test_postgres_through_an_ssh_tunnel(pg, sshd, tmp_path, monkeypatch):
    for k, v in {
        "ACME_PG_PASSWORD": "acme-tunnel",
        "GLOBEX_PG_PASSWORD": "x",
        "APP_TOKEN": "t",
        "TUNNEL_KEY": sshd["private_key"],
    }.items():
        monkeypatch.setenv(k, v)
    create_provider_db(pg, "acme", users=12, domain="acme.test", password="acme-tunnel")
    raw = two_provider_config(pg, str(tmp_path / "lake"), "http://127.0.0.1:9/unused")
    raw["sources"][0]["postgres"].update(
        use_ssh_tunnel=True,
        ssh_tunnel={
            "ssh_tunnel_host": sshd["host"],
            "ssh_tunnel_port": sshd["port"],
            "ssh_tunnel_username": sshd["username"],
            "ssh_private_key": "${TUNNEL_KEY}",
        },
    )
    forwarded = f"to {pg['host']} port {pg['port']}"
    before = Path(sshd["log"]).read_text(errors="replace").count(forwarded)
    result = run_extract(load_config(raw, base_dir=str(tmp_path)), "acme-users")
    assert result.counts.records_new_inserted == 12
    # the rows came through the bastion: sshd opened a channel to the database (not a direct connection)
    assert Path(sshd["log"]).read_text(errors="replace").count(forwarded) > before
    raw["sources"][0]["postgres"]["ssh_tunnel"]["ssh_tunnel_port"] = 1  # the bastion is down: said so
    with pytest.raises(SourceError, match="ssh_tunnel") as info:
        run_extract(load_config(raw, base_dir=str(tmp_path / "again")), "acme-users")
    assert "SSH server" in str(info.value) and os.environ["TUNNEL_KEY"] not in str(info.value)
