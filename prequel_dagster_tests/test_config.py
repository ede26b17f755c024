"""Config: Prequel field names, path-named errors without tracebacks, cross-reference checks."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prequel_dagster.config import ConfigError, load_config
from prequel_dagster.demo import TEMPLATE

BASE = {
    "datalakes": [{"id": "lake", "name": "l", "storage": "local", "local": {"path": "lake"}}],
    "providers": [{"id": "acme", "name": "Acme", "datalake_id": "lake", "products": ["crm"]}],
    "products": [{"id": "crm", "name": "crm", "destinations": ["app"]}],
    "sources": [{"id": "src", "name": "s", "vendor": "sqlite", "provider_id": "acme", "sqlite": {"path": "a.db"}}],
    "datasets": [
        {
            "id": "users",
            "name": "users",
            "source_id": "src",
            "table": {"source_table_name": "users"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id"},
        }
    ],
    "destinations": [
        {
            "id": "app",
            "name": "app",
            "type": "webhook_batch",
            "record_schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "webhook_batch": {"request_template": {"uri": "http://127.0.0.1:9/x"}},
        },
        {
            "id": "billing",
            "name": "billing",
            "type": "webhook_batch",
            "record_schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            "webhook_batch": {"request_template": {"uri": "http://127.0.0.1:9/y"}},
        },
    ],
    "streams": [
        {
            "id": "s1",
            "name": "s1",
            "dataset_id": "users",
            "destination_id": "app",
            "mappings": [{"target_field": "id", "field_type": "field", "column": {"name": "id"}}],
        }
    ],
}


def _with(path: str, value) -> dict:
    import copy

    data = copy.deepcopy(BASE)
    target = data
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if value is KeyError:
        del target[last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


def _issues(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(data)
    return [str(i) for i in info.value.issues]


def test_the_base_config_and_the_demo_config_are_valid():
    config = load_config(BASE)
    assert config.stream("s1").is_enabled is True
    assert load_config(TEMPLATE).provider("globex").products == ["crm"]


def test_stream_to_a_destination_outside_the_providers_products_is_rejected():
    issues = _issues(_with("streams.0.destination_id", "billing"))
    assert issues == [
        "streams[0].destination_id: destination 'billing' is not in any product of provider 'acme' (products: crm); "
        "add it to one of those products or give the provider the product 'all'"
    ]


def test_a_typo_names_its_path():
    data = _with("streams.0.mappings.0.column", {"nmae": "id"})
    issues = _issues(data)
    assert "streams[0].mappings[0].column.nmae: unknown key; check its spelling against the documented fields" in issues
    assert "streams[0].mappings[0].column.name: Field required" in issues


def test_every_error_is_reported_at_once_with_its_path():
    data = _with("datasets.0.source_id", "nope")
    data["providers"][0]["datalake_id"] = "missing"
    data["streams"][0]["mappings"] = [
        {"target_field": "other", "field_type": "expression", "expression": {"expr": "id +"}}
    ]
    issues = _issues(data)
    assert "providers[0].datalake_id: no datalake with id 'missing'" in issues
    assert "datasets[0].source_id: no source with id 'nope'" in issues
    assert "streams[0].mappings[0].expression.expr: unexpected 'end of expression' at column 5" in issues
    assert "streams[0].mappings: required record_schema field 'id' is not mapped" in issues


def test_vendor_block_must_match_and_ids_must_be_valid():
    issues = _issues(_with("sources.0.vendor", "postgres"))
    assert issues == ["sources[0]: vendor is 'postgres' but the 'postgres' block is missing; add `postgres: {...}`"]
    issues = _issues(_with("providers.0.id", "Acme Corp"))
    assert issues[0].startswith("providers[0].id: ids must match")


def test_missing_environment_variable_in_a_plain_field_names_it(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    issues = _issues(_with("destinations.0.webhook_batch.request_template.uri", "${NOT_SET_ANYWHERE}/x"))
    assert issues == [
        "destinations[0].webhook_batch.request_template.uri: "
        "environment variable NOT_SET_ANYWHERE is not set; export it before running"
    ]


def test_validate_command_prints_paths_and_no_traceback(tmp_path: Path):
    bad = tmp_path / "prequel.yaml"
    bad.write_text(
        textwrap.dedent("""
        datalakes:
          - {id: lake, name: l, storage: local, local: {path: lake}}
        providers:
          - {id: acme, name: Acme, datalake_id: lake, products: [all], colour: red}
    """)
    )
    proc = subprocess.run(
        [sys.executable, "-m", "prequel_dagster.cli", "validate", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "providers[0].colour: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text("providers: [unclosed\n")
    proc = subprocess.run(
        [sys.executable, "-m", "prequel_dagster.cli", "validate", str(broken)], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "not valid YAML" in proc.stderr and "Traceback" not in proc.stderr
    good = subprocess.run(
        [sys.executable, "-m", "prequel_dagster.cli", "validate", str(TEMPLATE)], capture_output=True, text=True
    )
    assert good.returncode == 0 and "3 streams" in good.stdout


def test_the_readme_config_is_complete_and_valid(monkeypatch, tmp_path):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("A complete, working config", 1)[1]
    text = re.search(r"```yaml\n(.*?)```", block, re.S).group(1)
    monkeypatch.setenv("ACME_PG_PASSWORD", "x")
    monkeypatch.setenv("APP_TOKEN", "y")
    path = tmp_path / "prequel.yaml"
    path.write_text(text)
    config = load_config(path)
    assert [s.id for s in config.streams] == ["acme-users-app"]
    assert "bash scripts/test.sh" in readme and "prequel-dagster demo" in readme
