"""The catalog by revision: reading as of a revision, catching up with changes, and definitions (in a
fresh process, as a run worker builds them) of exactly the revision a run was requested from."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from prequel_dagster.catalog.entries import CatalogState, load_merged
from prequel_dagster.catalog.store import Catalog, DuplicateId, EntryNotFound


def _entries(tmp: Path) -> list[tuple[str, str, str | None, dict]]:
    return [
        (
            "datalakes",
            "lake",
            None,
            {"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(tmp / "lake")}},
        ),
        ("providers", "acme", "acme", {"id": "acme", "name": "Acme", "datalake_id": "lake", "products": ["all"]}),
        (
            "sources",
            "acme-db",
            "acme",
            {
                "id": "acme-db",
                "name": "db",
                "vendor": "sqlite",
                "provider_id": "acme",
                "sqlite": {"path": str(tmp / "a.db")},
            },
        ),
        ("datasets", "users", "acme", _dataset("users")),
    ]


def _dataset(id: str) -> dict:
    return {
        "id": id,
        "name": id,
        "source_id": "acme-db",
        "table": {"source_table_name": id},
        "type": "dimension",
        "dimension": {"primary_key_column": "id"},
    }


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("PREQUEL_CATALOG_KEY", Fernet.generate_key().decode())
    found = Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}")
    assert found is not None
    for kind, id, owner, body in _entries(tmp_path):
        found.create(kind, id, owner, body)
    yield found
    found.close()


def test_reading_as_of_a_revision_and_catching_up(catalog):
    first = catalog.revision()
    state = CatalogState.as_of(catalog)
    assert set(state.models["datasets"]) == {"users"}

    catalog.create("datasets", "orders", "acme", _dataset("orders"))
    catalog.update("datasets", "users", "acme", {**_dataset("users"), "name": "people"})
    with pytest.raises(DuplicateId):
        catalog.create("datasets", "orders", "acme", _dataset("orders"))
    catalog.delete("datasets", "orders")
    with pytest.raises(EntryNotFound):
        catalog.delete("datasets", "orders")

    old = CatalogState.as_of(catalog, first)
    assert set(old.models["datasets"]) == {"users"} and old.models["datasets"]["users"].name == "users"
    assert old.revision == first
    middle = CatalogState.as_of(catalog, first + 1)
    assert set(middle.models["datasets"]) == {"users", "orders"}

    assert state.refresh()  # the changes since, applied
    assert set(state.models["datasets"]) == {"users"} and state.models["datasets"]["users"].name == "people"
    assert state.revision == catalog.revision() == first + 3
    assert not state.refresh()
    config = load_merged(None, state)
    assert [d.id for d in config.datasets] == ["users"]
    assert config.chain("users").provider.id == "acme"


def test_a_stored_secret_is_sealed_and_opens_with_the_key(catalog, tmp_path):
    body = {
        "id": "pg",
        "name": "pg",
        "vendor": "postgres",
        "provider_id": "acme",
        "postgres": {
            "host": "db",
            "database": "d",
            "password_auth": {"username": "u", "password": "s3cret-catalog-pw"},
        },
    }
    catalog.create("sources", "pg", "acme", body)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("catalog.db*"))
    assert b"s3cret-catalog-pw" not in raw
    stored = catalog.get("sources", "pg")
    assert stored is not None and "$sealed" in json.dumps(stored.body)
    state = CatalogState.as_of(catalog)
    assert state.models["sources"]["pg"].postgres.password_auth.password.reveal() == "s3cret-catalog-pw"


def _asset_keys_in_a_fresh_process(tmp_path: Path, env: dict[str, str]) -> dict:
    script = (
        "import json, prequel_dagster.definitions as d\n"
        "keys = sorted('/'.join(k.path) for k in d.defs.resolve_asset_graph().get_all_asset_keys())\n"
        "print(json.dumps({'revision': d.CATALOG_REVISION, 'keys': keys}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_definitions_of_the_revision_a_run_was_requested_from(catalog, tmp_path, monkeypatch):
    first = catalog.revision()
    catalog.create("datasets", "orders", "acme", _dataset("orders"))
    env = {
        "PREQUEL_CATALOG_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
        "PREQUEL_CATALOG_KEY": os.environ["PREQUEL_CATALOG_KEY"],
        "PREQUEL_CONFIG": "",
    }
    newest = _asset_keys_in_a_fresh_process(tmp_path, env)
    assert newest["revision"] == first + 1
    assert newest["keys"] == ["prequel/acme/orders", "prequel/acme/users"]
    pinned = _asset_keys_in_a_fresh_process(tmp_path, {**env, "PREQUEL_CATALOG_REVISION": str(first)})
    assert pinned == {"revision": first, "keys": ["prequel/acme/users"]}
