"""Read ``prequel.yaml`` (or a dict), validate it, and check every cross-reference."""

import os
from collections import Counter
from collections.abc import Mapping as MappingABC
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import ConfigError, ConfigIssue, format_path
from .models import FILE_SOURCE_VENDORS, PrequelConfig, sanitize_name

DEFAULT_CONFIG_NAME = "prequel.yaml"
CONFIG_ENV_VAR = "PREQUEL_CONFIG"

MAX_CONFIG_DEPTH = 64
"""Lists and mappings inside each other; real configs need about ten (a record_schema a few more)."""
MAX_CONFIG_VALUES = 5_000_000
"""Values once YAML aliases are expanded (each ``*name`` counts its anchor again): stops "billion laughs"."""


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

    issues = shape_issues(raw)  # before anything walks the data recursively
    if issues:
        raise ConfigError(origin, issues)
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


# ---------------------------------------------------------------------------- reading YAML


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), [ConfigIssue("", "file not found; pass a config path or set PREQUEL_CONFIG")]) from None
    except OSError as exc:
        raise ConfigError(str(path), [ConfigIssue("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(str(path), [ConfigIssue(
            f"line {line}, column {column}",
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start}; save the file as UTF-8",
        )]) from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, origin: str = "<config>", *, pure_python: bool = False) -> dict[str, Any]:
    """The top-level mapping of a YAML config; :class:`ConfigError` (with line and column) if it is not one.

    Duplicate keys are errors (YAML would silently keep the last). libyaml is used when PyYAML has it
    (``pure_python`` forces the slower fallback, for tests).
    """
    loader = (_PurePythonConfigLoader if pure_python else ConfigLoader)(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        if isinstance(exc, _TooDeep) or "maximum nesting depth" in problem:  # ours, or libyaml's (1000)
            message = _too_deep_message()
        else:
            message = f"not valid YAML: {problem}"
        raise ConfigError(origin, [ConfigIssue(where, message)]) from None
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ConfigError(origin, loader.duplicates)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(origin, [ConfigIssue("", "the top level must be a mapping of resource kinds")])
    return data


def _too_deep_message() -> str:
    return (f"nests deeper than {MAX_CONFIG_DEPTH} levels of lists and mappings; a config needs far fewer: "
            "look for unclosed or runaway brackets")


class _TooDeep(yaml.MarkedYAMLError):
    pass


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _config_loader(base: type) -> type:
    class Loader(base):  # type: ignore[misc, valid-type]
        """``base`` (a SafeLoader) that reports duplicate keys and values Python cannot hold, with their line."""

        def __init__(self, stream: str):
            super().__init__(stream)
            self.duplicates: list[ConfigIssue] = []
            self._checked: set[int] = set()

        def flatten_mapping(self, node: yaml.MappingNode) -> None:
            # Called on every mapping before its ``<<`` merges are folded in: its own keys, as written.
            if id(node) not in self._checked:
                self._checked.add(id(node))
                first: dict[tuple[str, str], int] = {}
                for key, _ in node.value:
                    if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                        continue
                    line = key.start_mark.line + 1
                    if (key.tag, key.value) in first:
                        self.duplicates.append(ConfigIssue(
                            f"line {line}",
                            f"duplicate key '{key.value}' (first at line {first[key.tag, key.value]}); YAML would "
                            "keep only the last one: remove or rename one",
                        ))
                    else:
                        first[key.tag, key.value] = line
            super().flatten_mapping(node)

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep=deep)
            except (ValueError, OverflowError) as exc:  # a 5,000-digit int, a date like 2024-13-45
                detail = str(exc).split(";")[0]
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read this value ({detail}); quote it if it is text", node.start_mark
                ) from None

    return Loader


class _DepthBoundedSafeLoader(yaml.SafeLoader):
    """PyYAML's Python composer recurses per level; libyaml refuses past 1000 levels by itself."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        if self._depth > MAX_CONFIG_DEPTH + 1:  # + 1: the innermost scalar
            raise _TooDeep(None, None, _too_deep_message(), self.peek_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


ConfigLoader = _config_loader(getattr(yaml, "CSafeLoader", _DepthBoundedSafeLoader))
_PurePythonConfigLoader = _config_loader(_DepthBoundedSafeLoader)


def shape_issues(data: Any) -> list[ConfigIssue]:
    """Nesting deeper than :data:`MAX_CONFIG_DEPTH`, more than :data:`MAX_CONFIG_VALUES` values after
    alias expansion, or a value inside itself: found without recursion and in linear time (shared
    values, from YAML aliases, are measured once)."""
    if not isinstance(data, _CONTAINERS):
        return []
    height: dict[int, int] = {}
    size: dict[int, int] = {}
    parent: dict[int, tuple[Any, Any]] = {}
    open_ids: set[int] = set()
    stack: list[tuple[Any, list[Any] | None]] = [(data, None)]  # (container, its children once entered)
    while stack:
        value, children = stack.pop()
        key = id(value)
        if children is not None:  # all children measured: measure this one
            open_ids.discard(key)
            h, n = 1, 1
            for child in children:
                if isinstance(child, _CONTAINERS):
                    h, n = max(h, height[id(child)] + 1), n + size[id(child)]
                else:
                    n += 1
            if h > MAX_CONFIG_DEPTH:
                return [ConfigIssue(_short_path(value, parent), _too_deep_message())]
            if n > MAX_CONFIG_VALUES:
                return [ConfigIssue(_short_path(value, parent),
                                    f"expands to more than {MAX_CONFIG_VALUES:,} values (each use of a YAML alias "
                                    "*name counts its anchor again); use fewer aliases")]
            height[key], size[key] = h, n
            continue
        if key in height:
            continue
        if key in open_ids:
            return [ConfigIssue(_short_path(value, parent),
                                "contains itself (a YAML alias *name inside its own &name); remove the alias")]
        open_ids.add(key)
        labelled = value.items() if isinstance(value, MappingABC) else enumerate(value)
        children = []
        stack.append((value, children))
        for label, child in labelled:
            children.append(child)
            if isinstance(child, _CONTAINERS) and id(child) not in height:
                parent.setdefault(id(child), (value, label))
                stack.append((child, None))
    return []


_CONTAINERS = (MappingABC, list, tuple)


def _short_path(value: Any, parent: dict[int, tuple[Any, Any]], keep: int = 6) -> str:
    labels, seen = [], set()
    while id(value) in parent and id(value) not in seen:  # (the top may be inside itself: &top {a: *top})
        seen.add(id(value))
        value, label = parent[id(value)]
        labels.append(label if isinstance(label, (str, int)) else str(label))
    labels.reverse()
    path = format_path(labels[:keep])
    return path + ("…" if len(labels) > keep else "")


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
    """Cross-reference checks that need the whole file: ids exist, products allow, schema covered.

    Linear in the size of the config: ids are looked up in sets and dicts, never by scanning.
    """
    from ..language.expressions import ExpressionError, parse_expression

    issues: list[ConfigIssue] = []

    ids: dict[str, set[str]] = {}
    for kind in ("datalakes", "providers", "products", "sources", "datasets", "destinations", "streams"):
        entries = getattr(config, kind)
        counts = Counter(e.id for e in entries)
        ids[kind] = set(counts)
        for i, entry in enumerate(entries):
            if counts[entry.id] > 1:
                issues.append(ConfigIssue(f"{kind}[{i}].id", f"duplicate id '{entry.id}' among {kind}"))

    def exists(kind: str, id: str) -> bool:
        return id in ids[kind]

    bad_schemas: set[str] = set()
    for i, dest in enumerate(config.destinations):
        issues.extend(_template_issues(f"destinations[{i}].{dest.type}.request_template", dest))
        schema_issues = record_schema_issues(f"destinations[{i}].record_schema", dest.record_schema)
        if schema_issues:
            issues.extend(schema_issues)
            bad_schemas.add(dest.id)

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
    op_names: dict[str, str] = {}
    for i, d in enumerate(config.datasets):
        if not exists("sources", d.source_id):
            issues.append(ConfigIssue(f"datasets[{i}].source_id", f"no source with id '{d.source_id}'"))
            continue
        source = config.source(d.source_id)
        vendor = source.vendor
        if d.method == "glob" and vendor not in FILE_SOURCE_VENDORS:
            issues.append(ConfigIssue(f"datasets[{i}].method",
                                      f"glob datasets need a bucket, sftp or local source, not {vendor}"))
        if d.method != "glob" and vendor in FILE_SOURCE_VENDORS:
            issues.append(ConfigIssue(f"datasets[{i}].method", f"a {vendor} source is read with method: glob"))
        issues.extend(_op_name_clash(op_names, f"datasets[{i}].id", "extract", source.provider_id, d.id))

    destinations_of = _destinations_by_product(config)
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
                issues.extend(_op_name_clash(op_names, f"{where}.id", "load", provider.id, st.id))
                if not _allowed(destinations_of, provider.products, st.destination_id):
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
        if exists("destinations", st.destination_id) and st.destination_id not in bad_schemas:
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


def _op_name_clash(seen: dict[str, str], where: str, prefix: str, provider_id: str, entry_id: str) -> list[ConfigIssue]:
    """Dagster op names allow only letters, digits and _: ids that differ only in - and _ (or in where
    a __ falls) become the same op, which Dagster refuses. Checked for the default asset keys."""
    name = sanitize_name(f"{prefix}__prequel__{provider_id}__{'streams__' if prefix == 'load' else ''}{entry_id}")
    other = seen.setdefault(name, where)
    if other == where:
        return []
    return [ConfigIssue(where, f"gives the same Dagster op name '{name}' as {other}; Dagster names allow only "
                               "letters, digits and _ (so - becomes _): rename one of the two")]


def _destinations_by_product(config: PrequelConfig) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for prod in config.products:
        for name in (prod.id, prod.name):
            out.setdefault(name, set()).update(prod.destinations)
    return out


def _allowed(destinations_of: dict[str, set[str]], products: list[str], destination_id: str) -> bool:
    return any(name == "all" or destination_id in destinations_of.get(name, ()) for name in products)


JSON_TYPES = ("string", "integer", "number", "boolean", "object", "array", "null")


def record_schema_issues(where: str, schema: dict[str, Any]) -> list[ConfigIssue]:
    """What the loads and the Dagster metadata rely on (each property an object, ``type`` a JSON type
    name or a list of them, ``required`` a list of names), then the JSON Schema (draft 7) meta-schema."""
    issues = []
    props = schema.get("properties", {})
    if not isinstance(props, dict):
        issues.append(ConfigIssue(f"{where}.properties", "must be a mapping of field name to its schema, such as "
                                                         "{id: {type: string}}"))
        props = {}
    for name, prop in props.items():
        at = f"{where}.properties.{name}"
        if not isinstance(name, str):
            issues.append(ConfigIssue(at, f"property names must be strings, not {type(name).__name__}; quote it"))
        elif not isinstance(prop, dict):
            issues.append(ConfigIssue(at, f"must be an object such as {{type: string}}, not {_shown(prop)}"))
        elif "type" in prop and not _is_json_type(prop["type"]):
            issues.append(ConfigIssue(f"{at}.type", f"must be one of {', '.join(JSON_TYPES)}, or a list of them "
                                                    f"such as [string, null]; not {_shown(prop['type'])}"))
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        issues.append(ConfigIssue(f"{where}.required", f"must be a list of property names, such as [id]; "
                                                       f"not {_shown(required)}"))
    if issues:
        return issues

    import jsonschema

    meta = jsonschema.Draft7Validator(jsonschema.Draft7Validator.META_SCHEMA,
                                      format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    for error in sorted(meta.iter_errors(schema), key=lambda e: [str(p) for p in e.absolute_path]):
        issues.append(ConfigIssue(format_path([where, *error.absolute_path]),
                                  f"not valid JSON Schema: {error.message[:300]}"))
    from ..language.linear_regex import schema_patterns, unsupported

    for pattern in schema_patterns(schema):  # tenant values are matched in linear time, so RE2 syntax only
        why = unsupported(pattern)
        if why:
            issues.append(ConfigIssue(where, f"regular expression {pattern!r} is not supported ({why}); "
                                             "use RE2 syntax: no backreferences or look-around"))
    return issues


def _is_json_type(declared: Any) -> bool:
    if isinstance(declared, str):
        return declared in JSON_TYPES
    return (isinstance(declared, list) and bool(declared) and all(isinstance(t, str) and t in JSON_TYPES for t in declared)
            and len(set(declared)) == len(declared))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _template_issues(where: str, destination: Any) -> list[ConfigIssue]:
    from ..language.templates import TemplateError, parse_template

    template = destination.webhook.request_template
    per_record = destination.type == "webhook_record"
    fields = [("uri", template.uri), ("body", template.body)]
    fields += [(f"headers.{name}", value.template) for name, value in template.headers.items()]
    issues = []
    for name, text in fields:
        if text is None:
            continue
        place = "uri" if name == "uri" else "body" if name == "body" else "header"
        try:
            parse_template(text, allow_record=per_record, allow_records=not per_record and name != "body", place=place)
        except TemplateError as exc:
            issues.append(ConfigIssue(f"{where}.{name}", str(exc)))
    return issues


def destination_allowed(config: PrequelConfig, products: list[str], destination_id: str) -> bool:
    """Whether one of a provider's products includes the destination (``all`` includes every one)."""
    return _allowed(_destinations_by_product(config), products, destination_id)


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config to use: an explicit path, else ``$PREQUEL_CONFIG``, else ``./prequel.yaml`` if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR])
    default = Path.cwd() / DEFAULT_CONFIG_NAME
    return default if default.exists() else None
