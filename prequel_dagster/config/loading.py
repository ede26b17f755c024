"""Read ``prequel.yaml`` (or a dict), validate it, and check every cross-reference."""

import os
from collections import Counter
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError, ConfigIssue, format_path
from .models import FILE_SOURCE_VENDORS, PrequelConfig

DEFAULT_CONFIG_NAME = "prequel.yaml"
CONFIG_ENV_VAR = "PREQUEL_CONFIG"


def load_config(
    source: str | os.PathLike[str] | MappingABC[str, Any], *, base_dir: str | os.PathLike[str] | None = None
) -> PrequelConfig:
    """Load and check a config from a YAML file path or an already-parsed mapping.

    Raises :class:`ConfigError` listing every problem, each with its path inside the file.
    Relative paths in the config resolve against the file's directory (or ``base_dir``).
    """
    if isinstance(source, MappingABC):
        origin, raw = "<inline config>", dict(source)
        root = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(source)
        origin = str(path)
        raw = _read_yaml(path)
        root = Path(base_dir) if base_dir is not None else path.resolve().parent

    try:
        config = PrequelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(origin, _pydantic_issues(exc)) from None
    config._base_dir = root.resolve()
    config._origin = origin

    issues = check_references(config)
    if issues:
        raise ConfigError(origin, issues)
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(str(path), [ConfigIssue("", "file not found; pass a config path or set PREQUEL_CONFIG")])
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), [ConfigIssue(where, f"not valid YAML: {problem}")]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), [ConfigIssue("", "the top level must be a mapping of resource kinds")])
    return data


def _pydantic_issues(exc: ValidationError) -> list[ConfigIssue]:
    issues = []
    for err in exc.errors(include_url=False):
        loc = [part for part in err["loc"] if not (isinstance(part, str) and part.startswith("function-"))]
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against the documented fields"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        elif err["type"] == "string_pattern_mismatch" and loc and loc[-1] in ("id", "datalake_id", "provider_id"):
            message = "ids must match ^[a-z0-9][a-z0-9_-]{0,62}$ (lower case letters, digits, - and _)"
        issues.append(ConfigIssue(format_path(loc), message))
    return issues


def check_references(config: PrequelConfig) -> list[ConfigIssue]:
    """Cross-reference checks that need the whole file: ids exist, products allow, schema covered."""
    from ..transform.expressions import ExpressionError, parse_expression

    issues: list[ConfigIssue] = []

    for kind in ("datalakes", "providers", "products", "sources", "datasets", "destinations", "streams"):
        entries = getattr(config, kind)
        counts = Counter(e.id for e in entries)
        for i, entry in enumerate(entries):
            if counts[entry.id] > 1:
                issues.append(ConfigIssue(f"{kind}[{i}].id", f"duplicate id '{entry.id}' among {kind}"))

    def exists(kind: str, id: str) -> bool:
        return any(e.id == id for e in getattr(config, kind))

    for i, dest in enumerate(config.destinations):
        issues.extend(_template_issues(f"destinations[{i}].{dest.type}.request_template", dest))

    product_names = {p.id for p in config.products} | {p.name for p in config.products}
    for i, p in enumerate(config.providers):
        if not exists("datalakes", p.datalake_id):
            issues.append(ConfigIssue(f"providers[{i}].datalake_id", f"no datalake with id '{p.datalake_id}'"))
        for j, name in enumerate(p.products):
            if name != "all" and name not in product_names:
                issues.append(
                    ConfigIssue(f"providers[{i}].products[{j}]", f"no product '{name}' (use 'all' or a product id)")
                )
    for i, prod in enumerate(config.products):
        if prod.id == "all":
            issues.append(ConfigIssue(f"products[{i}].id", "'all' is the built-in product; choose another id"))
        for j, dest in enumerate(prod.destinations):
            if not exists("destinations", dest):
                issues.append(ConfigIssue(f"products[{i}].destinations[{j}]", f"no destination with id '{dest}'"))
    for i, s in enumerate(config.sources):
        if not exists("providers", s.provider_id):
            issues.append(ConfigIssue(f"sources[{i}].provider_id", f"no provider with id '{s.provider_id}'"))
    for i, d in enumerate(config.datasets):
        if not exists("sources", d.source_id):
            issues.append(ConfigIssue(f"datasets[{i}].source_id", f"no source with id '{d.source_id}'"))
            continue
        vendor = config.source(d.source_id).vendor
        if d.method == "glob" and vendor not in FILE_SOURCE_VENDORS:
            issues.append(ConfigIssue(f"datasets[{i}].method",
                                      f"glob datasets need a bucket, sftp or local source, not {vendor}"))
        if d.method != "glob" and vendor in FILE_SOURCE_VENDORS:
            issues.append(ConfigIssue(f"datasets[{i}].method", f"a {vendor} source is read with method: glob"))

    for i, st in enumerate(config.streams):
        where = f"streams[{i}]"
        ok = True
        if not exists("datasets", st.dataset_id):
            issues.append(ConfigIssue(f"{where}.dataset_id", f"no dataset with id '{st.dataset_id}'"))
            ok = False
        if not exists("destinations", st.destination_id):
            issues.append(ConfigIssue(f"{where}.destination_id", f"no destination with id '{st.destination_id}'"))
            ok = False
        if ok and exists("sources", config.dataset(st.dataset_id).source_id):
            source = config.source(config.dataset(st.dataset_id).source_id)
            if exists("providers", source.provider_id):
                provider = config.provider(source.provider_id)
                if not destination_allowed(config, provider.products, st.destination_id):
                    issues.append(
                        ConfigIssue(
                            f"{where}.destination_id",
                            f"destination '{st.destination_id}' is not in any product of provider "
                            f"'{provider.id}' (products: {', '.join(provider.products)}); add it to one of "
                            "those products or give the provider the product 'all'",
                        )
                    )
        targets = Counter(m.target_field for m in st.mappings)
        for j, m in enumerate(st.mappings):
            if targets[m.target_field] > 1:
                issues.append(ConfigIssue(f"{where}.mappings[{j}].target_field", f"'{m.target_field}' is mapped twice"))
            if m.expression is not None:
                try:
                    parse_expression(m.expression.expr)
                except ExpressionError as exc:
                    issues.append(ConfigIssue(f"{where}.mappings[{j}].expression.expr", str(exc)))
        if exists("destinations", st.destination_id):
            schema = config.destination(st.destination_id).record_schema
            props = schema.get("properties", {})
            for field in schema.get("required", []):
                if field not in targets:
                    issues.append(
                        ConfigIssue(f"{where}.mappings", f"required record_schema field '{field}' is not mapped")
                    )
            if schema.get("additionalProperties") is False:
                for j, m in enumerate(st.mappings):
                    if m.target_field not in props:
                        issues.append(
                            ConfigIssue(
                                f"{where}.mappings[{j}].target_field",
                                f"'{m.target_field}' is not a property of destination '{st.destination_id}'",
                            )
                        )
    return issues


def _template_issues(where: str, destination: Any) -> list[ConfigIssue]:
    from ..delivery.templates import TemplateError, parse_template

    template = destination.webhook.request_template
    per_record = destination.type == "webhook_record"
    fields = [("uri", template.uri), ("body", template.body)]
    fields += [(f"headers.{name}", value.template) for name, value in template.headers.items()]
    issues = []
    for name, text in fields:
        if text is None:
            continue
        try:
            parse_template(text, allow_record=per_record, allow_records=not per_record and name != "body")
        except TemplateError as exc:
            issues.append(ConfigIssue(f"{where}.{name}", str(exc)))
    return issues


def destination_allowed(config: PrequelConfig, products: list[str], destination_id: str) -> bool:
    """Whether one of a provider's products includes the destination (``all`` includes every one)."""
    for name in products:
        if name == "all":
            return True
        for prod in config.products:
            if name in (prod.id, prod.name) and destination_id in prod.destinations:
                return True
    return False


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config to use: an explicit path, else ``$PREQUEL_CONFIG``, else ``./prequel.yaml`` if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR])
    default = Path.cwd() / DEFAULT_CONFIG_NAME
    return default if default.exists() else None
