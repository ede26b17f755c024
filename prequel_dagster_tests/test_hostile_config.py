"""Hostile configs and expressions: a clear error naming the thing and the fix, never a traceback; and
``prequel-dagster validate`` agrees with the Dagster definitions (what one accepts, the other builds)."""

import copy
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest

from prequel_dagster import build_definitions, load_config
from prequel_dagster.config import ConfigError
from prequel_dagster.config.loading import MAX_CONFIG_DEPTH, parse_yaml
from prequel_dagster.demo import TEMPLATE
from prequel_dagster.language.expressions import (
    MAX_EXPRESSION_DEPTH,
    ExpressionError,
    evaluate,
    parse_expression,
    referenced_columns,
)

from .test_config import BASE

LOADERS = pytest.mark.parametrize("pure_python", [False, True], ids=["libyaml", "python"])


def _with(path: str, value) -> dict:
    data = copy.deepcopy(BASE)
    target = data
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(parts[-1]) if parts[-1].isdigit() else parts[-1]] = value
    return data


def _issues(source) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(source)
    return [str(i) for i in info.value.issues]


def _nested_dict(depth: int) -> dict:
    inner: dict = {"a": 1}
    for _ in range(depth):
        inner = {"a": inner}
    return inner


# ---------------------------------------------------------------------------- 1. not UTF-8


def test_a_config_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    path = tmp_path / "prequel.yaml"
    path.write_bytes(b"providers:\n  - {id: acme, name: caf\xe9, datalake_id: lake, products: [all]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert [str(i) for i in info.value.issues] == [
        "line 2, column 25: not UTF-8 text: byte 0xe9 at byte offset 35; save the file as UTF-8"
    ]


def test_a_utf8_byte_order_mark_is_fine(tmp_path):
    path = tmp_path / "prequel.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + TEMPLATE.read_bytes())
    assert len(load_config(path).streams) == 3


# ---------------------------------------------------------------------------- 2. deep nesting


@LOADERS
@pytest.mark.parametrize(
    "text",
    [
        "datasets: " + "[" * 50_000 + "]" * 50_000,
        "datasets: " + "{a: " * 50_000 + "1" + "}" * 50_000,
        "".join("  " * i + "a:\n" for i in range(2_000)),
        "datasets: " + "[" * (MAX_CONFIG_DEPTH + 5) + "]" * (MAX_CONFIG_DEPTH + 5),
    ],
    ids=["flow-lists", "flow-maps", "block-maps", "just-over"],
)
def test_deep_nesting_in_a_file_is_a_config_error(tmp_path, text, pure_python):
    with pytest.raises(ConfigError) as info:
        load_config(_yaml_file(tmp_path, text)) if not pure_python else parse_yaml(text, "x", pure_python=True)
    assert f"nests deeper than {MAX_CONFIG_DEPTH} levels" in str(info.value)


def test_deep_nesting_inline_and_through_aliases_is_a_config_error(tmp_path):
    deep = _with("destinations.0.record_schema.properties.id", _nested_dict(50_000))
    assert _issues(deep)[0].startswith("destinations[0].record_schema.properties.id.a")
    chain = "x0: &a0 [1]\n" + "".join(f"x{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 5_000))
    assert f"nests deeper than {MAX_CONFIG_DEPTH} levels" in _issues(_yaml_file(tmp_path, chain))[0]


def test_alias_bombs_and_self_references_are_config_errors(tmp_path):
    lol = "a0: &a0 [" + ", ".join(["lol"] * 9) + "]\n"
    lol += "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, 10))
    assert "expands to more than 5,000,000 values" in _issues(_yaml_file(tmp_path, lol + "datasets: *a9\n"))[0]
    for text in ("datasets: &x [*x]\n", "&top {datasets: *top}\n"):
        assert _issues(_yaml_file(tmp_path, text)) == [
            "datasets: contains itself (a YAML alias *name inside its own &name); remove the alias"
        ]


def test_values_python_cannot_hold_are_config_errors(tmp_path):
    issues = _issues(_yaml_file(tmp_path, "datasets: [{frequency_minutes: " + "9" * 5_000 + "}]\n"))
    assert issues[0].startswith("line 1, column 32: not valid YAML: cannot read this value (Exceeds the limit")
    issues = _issues(_yaml_file(tmp_path, "datasets: [{id: 2024-13-45}]\n"))
    assert issues == [
        ("line 1, column 17: not valid YAML: cannot read this value (month must be in 1..12); quote it if it is text")
    ]


# ---------------------------------------------------------------------------- 3. duplicate keys


@LOADERS
def test_duplicate_keys_at_any_depth_name_the_key_and_line(pure_python):
    text = TEMPLATE.read_text()
    text = text.replace("  - id: acme-users\n", "  - id: acme-users\n    id: acme-people\n", 1)
    text = text.replace(
        "        email: {type: string}\n", "        email: {type: string}\n        email: {type: integer}\n", 1
    )
    text += "datasets: []\n"
    lines = text.splitlines()
    with pytest.raises(ConfigError) as info:
        parse_yaml(text, "prequel.yaml", pure_python=pure_python)
    first_id = lines.index("  - id: acme-users") + 1
    first_email = lines.index("        email: {type: string}") + 1

    def duplicate(line: int, key: str, first: int) -> str:
        return (
            f"line {line}: duplicate key '{key}' (first at line {first}); YAML would keep only the last one: "
            "remove or rename one"
        )

    assert sorted((str(i) for i in info.value.issues), key=lambda i: int(i.split(":")[0][5:])) == [
        duplicate(first_id + 1, "id", first_id),
        duplicate(first_email + 1, "email", first_email),
        duplicate(len(lines), "datasets", lines.index("datasets:") + 1),
    ]


@LOADERS
def test_merge_keys_may_be_overridden_but_not_repeated(pure_python):
    text = "base: &b {id: x, name: y}\nuse: {<<: *b, id: z}\n"
    assert parse_yaml(text, pure_python=pure_python)["use"] == {"id": "z", "name": "y"}
    with pytest.raises(ConfigError, match="line 4: duplicate key 'id' \\(first at line 3\\)"):
        parse_yaml(text + "again: {<<: *b, id: 1,\n  id: 2}\n", pure_python=pure_python)


# ---------------------------------------------------------------------------- 4. expressions


@pytest.mark.parametrize(
    "expr, message",
    [
        ("(" * 300 + "a" + ")" * 300, f"expression nests deeper than {MAX_EXPRESSION_DEPTH} levels at column"),
        ("-" * 5_000 + "a", f"expression nests deeper than {MAX_EXPRESSION_DEPTH} levels at column"),
        (
            "a ? " * 1_000 + "1" + " : 2" * 1_000,
            f"expression nests deeper than {MAX_EXPRESSION_DEPTH} levels at column",
        ),
        ("upper(" * 300 + "a" + ")" * 300, f"expression nests deeper than {MAX_EXPRESSION_DEPTH} levels at column"),
        ("1.2.3", "malformed number '1.2.3' at column 1"),
        ("a + 1..2", "malformed number '1..2' at column 5"),
        ("²", "unexpected character '²' at column 1"),
        ("a + ٣", "unexpected character '٣' at column 5"),
        ("99999999999999999999", "integer '99999999999999999999' at column 1 is too large"),
        ("a in b", "'in' at column 3 needs a [list] of literals on its right"),
        ('a in [1, "x"]', "list at column 6 mixes numbers and strings"),
        ("LEFT(a)", "LEFT() at column 1 takes 2 arguments (text, length), got 1"),
        ("TODAY(a)", "TODAY() at column 1 takes 0 arguments, got 1"),
    ],
)
def test_hostile_expressions_are_expression_errors_with_a_column(expr, message):
    with pytest.raises(ExpressionError) as info:
        parse_expression(expr)
    assert message in str(info.value)


def test_long_chains_compile_and_evaluate_without_recursion():
    rows = pa.table({"a": [1, 2]})
    chain = parse_expression(" + ".join(["a"] * 2_000))
    assert evaluate(chain, rows).to_pylist() == [2_000, 4_000]
    assert referenced_columns(chain) == ["a"]
    cases = parse_expression(" ".join(f'a == {i} ? "v{i}" :' for i in range(2_000)) + ' "other"')
    assert evaluate(cases, rows).to_pylist() == ["v1", "v2"]
    nested = parse_expression("(" * MAX_EXPRESSION_DEPTH + "a * 2" + ")" * MAX_EXPRESSION_DEPTH)
    assert evaluate(nested, rows).to_pylist() == [2, 4]
    assert evaluate(parse_expression("a in [-1, 2] && -a < 0"), rows).to_pylist() == [False, True]


# ---------------------------------------------------------------------------- 5. literal arguments


@pytest.mark.parametrize(
    "expr, message",
    [
        (
            'SUBSTITUTE(id, id, "x")',
            (
                "SUBSTITUTE() at column 1: argument 2 (old) must be a non-empty string literal "
                'such as "-", not a column or an expression'
            ),
        ),
        ('SUBSTITUTE(id, "x", id)', "SUBSTITUTE() at column 1: argument 3 (new) must be a string literal"),
        ('SUBSTITUTE(id, "", "x")', "SUBSTITUTE() at column 1: argument 2 (old) must be a non-empty string literal"),
        ("TEXTSPLIT(id, id)", "TEXTSPLIT() at column 1: argument 2 (delimiter) must be a non-empty string literal"),
        (
            "LEFT(id, id)",
            (
                "LEFT() at column 1: argument 2 (length) must be an integer literal from 0 to 2147483647, "
                "not a column or an expression"
            ),
        ),
        ("RIGHT(id, 1.5)", "RIGHT() at column 1: argument 2 (length) must be an integer literal"),
        (
            "MID(id, 0, 2)",
            "MID() at column 1: argument 2 (start) must be an integer literal from 1 to 2147483647, not 0",
        ),
    ],
)
def test_arguments_that_must_be_literals_are_checked_when_the_config_loads(expr, message):
    mapping = {"target_field": "id", "field_type": "expression", "expression": {"expr": expr}}
    [issue] = _issues(_with("streams.0.mappings.0", mapping))
    assert issue.startswith(f"streams[0].mappings[0].expression.expr: {message}")


# ---------------------------------------------------------------------------- 6. validate agrees with Dagster


def _validate_then_build(data: dict) -> str:
    """``refused`` by the loader, or ``built``: definitions that Dagster loads. Anything else raises."""
    try:
        config = load_config(data)
    except ConfigError:
        return "refused"
    defs = build_definitions(config)
    dg.Definitions.validate_loadable(defs)
    assert list(defs.resolve_all_asset_specs())
    return "built"


def _two_datasets(first_id: str, second_id: str) -> dict:
    data = _with("datasets.0.id", first_id)
    data["datasets"].append(dict(data["datasets"][0], id=second_id))
    data["streams"][0]["dataset_id"] = first_id
    return data


def _two_sources(first_id: str, second_id: str) -> dict:
    """Two sources of one provider whose extract ops would share a name."""
    data = _two_datasets("ds1", "ds2")
    data["sources"][0] = dict(data["sources"][0], id=first_id)
    data["sources"].append(dict(data["sources"][0], id=second_id))
    data["datasets"][0]["source_id"], data["datasets"][1]["source_id"] = first_id, second_id
    return data


HOSTILE = {
    "frequency 10**400": (_with("datasets.0.frequency_minutes", 10**400), "refused"),
    "frequency 10**12": (_with("datasets.0.frequency_minutes", 10**12), "refused"),
    "frequency 0": (_with("datasets.0.frequency_minutes", 0), "refused"),
    "frequency a year": (_with("datasets.0.frequency_minutes", 525_600), "built"),
    "property not an object": (_with("destinations.0.record_schema.properties", {"id": "string"}), "refused"),
    "property true": (_with("destinations.0.record_schema.properties", {"id": True}), "refused"),
    "properties a list": (_with("destinations.0.record_schema.properties", ["id"]), "refused"),
    "type [string, null]": (_with("destinations.0.record_schema.properties.id.type", ["string", "null"]), "built"),
    "type [null]": (_with("destinations.0.record_schema.properties.id.type", ["null"]), "built"),
    "type [[string]]": (_with("destinations.0.record_schema.properties.id.type", [["string"]]), "refused"),
    "type 5": (_with("destinations.0.record_schema.properties.id.type", 5), "refused"),
    "type a mapping": (_with("destinations.0.record_schema.properties.id.type", {"a": 1}), "refused"),
    "type unknown": (_with("destinations.0.record_schema.properties.id.type", "text"), "refused"),
    "type []": (_with("destinations.0.record_schema.properties.id.type", []), "refused"),
    "description 5": (_with("destinations.0.record_schema.properties.id.description", 5), "refused"),
    "required a string": (_with("destinations.0.record_schema.required", "id"), "refused"),
    "owner not an email": (_with("providers.0.owners", ["not an owner"]), "refused"),
    "owner team:": (_with("providers.0.owners", ["team:"]), "refused"),
    "owner a number": (_with("providers.0.owners", [5]), "refused"),
    "owners a string": (_with("providers.0.owners", "team:data"), "refused"),
    "owners fine": (_with("providers.0.owners", ["team:data", "ann@example.com"]), "built"),
    "dataset ids that clash as output names": (_two_datasets("us-ers", "us_ers"), "refused"),
    "ids that clash as op names": (_two_sources("d-b", "d_b"), "refused"),
    "expression chain": (
        _with(
            "streams.0.mappings.0",
            {"target_field": "id", "field_type": "expression", "expression": {"expr": " + ".join(["id"] * 2_000)}},
        ),
        "built",
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_validate_refuses_or_dagster_builds(name):
    data, expected = HOSTILE[name]
    assert _validate_then_build(data) == expected


def test_refusals_name_the_path_and_the_fix():
    assert _issues(HOSTILE["frequency 10**400"][0]) == [
        (
            "datasets[0].frequency_minutes: must be a number of minutes from 1 to 525600 (a year); frequencies of a "
            "day (1440) or more are scheduled daily"
        )
    ]
    assert _issues(HOSTILE["property not an object"][0]) == [
        "destinations[0].record_schema.properties.id: must be an object such as {type: string}, not 'string'"
    ]
    assert _issues(HOSTILE["type [[string]]"][0]) == [
        (
            "destinations[0].record_schema.properties.id.type: must be one of string, integer, number, boolean, "
            "object, array, null, or a list of them such as [string, null]; not [['string']]"
        )
    ]
    assert _issues(HOSTILE["description 5"][0]) == [
        "destinations[0].record_schema.properties.id.description: not valid JSON Schema: 5 is not of type 'string'"
    ]
    assert _issues(HOSTILE["owner not an email"][0]) == [
        (
            "providers[0].owners[0]: owner 'not an owner' must be an email address or a team name prefixed with "
            "'team:' (team:data)"
        )
    ]
    assert _issues(HOSTILE["ids that clash as op names"][0]) == [
        (
            "datasets[1].source_id: gives the same Dagster name 'extract__acme__d_b' as datasets[0].source_id; "
            "Dagster names allow only letters, digits and _ (so - becomes _): rename one of the two"
        )
    ]


# ---------------------------------------------------------------------------- 7. the CLI never shows a traceback


def _yaml_file(tmp_path: Path, text: str, name: str = "prequel.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _hostile_files(tmp_path: Path) -> list[Path]:
    import yaml

    files = [
        _yaml_file(tmp_path, "datasets: " + "[" * 50_000 + "]" * 50_000, "deep.yaml"),
        _yaml_file(tmp_path, "datasets: &x [*x]\n", "recursive.yaml"),
        _yaml_file(tmp_path, TEMPLATE.read_text() + "datasets: []\n", "duplicate.yaml"),
        _yaml_file(
            tmp_path,
            TEMPLATE.read_text().replace('expr: "string(id)"', 'expr: "' + "(" * 300 + 'id)"'),
            "expression.yaml",
        ),
        _yaml_file(tmp_path, "datasets: [{id: 2024-13-45}]\n", "date.yaml"),
    ]
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"providers: [{name: caf\xe9}]\n")
    directory = tmp_path / "a-directory.yaml"
    directory.mkdir()
    files += [latin1, directory]
    for name in (
        "frequency 10**400",
        "property not an object",
        "type [[string]]",
        "owner not an email",
        "ids that clash as op names",
    ):
        files.append(_yaml_file(tmp_path, yaml.safe_dump(HOSTILE[name][0]), f"{len(files)}.yaml"))
    return files


def test_validate_prints_the_problem_and_never_a_traceback(tmp_path):
    for path in _hostile_files(tmp_path):
        proc = subprocess.run(
            [sys.executable, "-m", "prequel_dagster.cli", "validate", str(path)],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, (path.name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, (path.name, proc.stderr[-2000:])
        assert str(path) in proc.stderr and "config error" in proc.stderr, (path.name, proc.stderr)
