"""Read ``prequel.yaml`` (or a dict), validate it, and check every cross-reference."""

import contextlib
import gc
import os
from collections import Counter
from collections.abc import Hashable, Iterator
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from .errors import ConfigError, ConfigIssue, format_path
from .models import FILE_SOURCE_VENDORS, PUSH_SOURCE_VENDORS, PrequelConfig, sanitize_name
from .secrets import MissingEnvironmentVariable, interpolate

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
    with gc_paused():
        return _load_config(source, base_dir)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while building a config (or definitions from one): building makes
    a great many objects, nearly none of them garbage, and the collector would go over the whole
    growing heap again and again (a third of the time of loading a config of 1,000 providers)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_config(
    source: str | os.PathLike[str] | MappingABC[str, Any], base_dir: str | os.PathLike[str] | None
) -> PrequelConfig:
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
    raw, written = _notifications_key(raw, origin)
    try:
        config = PrequelConfig.model_validate(raw)
    except ValidationError as exc:
        # Every problem in one pass: the field errors, then the cross-reference checks (of the valid
        # entries in full, of the others as far as their ids and references are valid).
        issues = _pydantic_issues(exc)
        issues += _references_despite_field_errors(raw, exc)
        raise ConfigError(origin, _as_written(issues, written)) from None
    config._base_dir = root.resolve()
    config._origin = origin

    issues = check_references(config)
    if issues:
        raise ConfigError(origin, _as_written(issues, written))
    return config


NOTIFICATION_KEYS = ("notifications", "webhooks")
"""Failure notifications may be written ``webhooks:`` (the contract's name, as Prequel's ``/webhooks``)
or ``notifications:``; one of the two per file."""


def _notifications_key(raw: dict[str, Any], origin: str) -> tuple[dict[str, Any], str]:
    """``raw`` with its notifications under ``notifications`` (the model's name), and the key written."""
    if "webhooks" not in raw:
        return raw, "notifications"
    if "notifications" in raw:
        raise ConfigError(
            origin,
            [ConfigIssue("webhooks", "both webhooks: and notifications: are set; they are one list, keep one")],
        )
    raw = dict(raw)
    raw["notifications"] = raw.pop("webhooks")
    return raw, "webhooks"


def _as_written(issues: list[ConfigIssue], key: str) -> list[ConfigIssue]:
    if key == "notifications":
        return issues
    return [
        ConfigIssue(key + i.path[len("notifications") :], i.message) if i.path.startswith("notifications") else i
        for i in issues
    ]


# ---------------------------------------------------------------------------- reading YAML


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(path), [ConfigIssue("", "file not found; pass a config path or set PREQUEL_CONFIG")]
        ) from None
    except OSError as exc:
        raise ConfigError(str(path), [ConfigIssue("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            str(path),
            [
                ConfigIssue(
                    f"line {line}, column {column}",
                    f"not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start}; save the file as UTF-8",
                )
            ],
        ) from None
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
    return (
        f"nests deeper than {MAX_CONFIG_DEPTH} levels of lists and mappings; a config needs far fewer: "
        "look for unclosed or runaway brackets"
    )


class _TooDeep(yaml.MarkedYAMLError):
    pass


_MERGE_TAG = "tag:yaml.org,2002:merge"


_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
_FAST_DEPTH = 32
"""Lists and mappings the loader builds directly, one inside the other; deeper ones (and all those of
other tags) are built the way PyYAML builds them, which needs no recursion."""


def _config_loader(base: type) -> type:
    class Loader(base):  # type: ignore[misc, valid-type]
        """``base`` (a SafeLoader) that reports duplicate keys and values Python cannot hold, with their line.

        Builds plain strings, lists and mappings itself (what a config is made of), as PyYAML would:
        PyYAML's constructor costs several Python calls per value. Scalars' implicit tags (YAML 1.1:
        ``yes`` is true, ``1_000`` an int, ...) are resolved once per distinct scalar.
        """

        def __init__(self, stream: str):
            super().__init__(stream)
            self.duplicates: list[ConfigIssue] = []
            self._checked: set[int] = set()
            self._resolved: dict[tuple[str, Any], str] = {}
            self._depth = 0

        def resolve(self, kind: type, value: Any, implicit: Any) -> str:
            if kind is not yaml.ScalarNode:
                return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]
            tag = self._resolved.get((value, implicit))
            if tag is None:  # (no path resolvers: the tag depends on the value and the implicit flags only)
                tag = self._resolved[value, implicit] = super().resolve(kind, value, implicit)
            return tag

        def flatten_mapping(self, node: yaml.MappingNode) -> None:
            # Called on every mapping before its ``<<`` merges are folded in: its own keys, as written.
            self._check_duplicates(node)
            super().flatten_mapping(node)

        def _check_duplicates(self, node: yaml.MappingNode) -> None:
            if id(node) not in self._checked:
                self._checked.add(id(node))
                first: dict[tuple[str, str], int] = {}
                for key, _ in node.value:
                    if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                        continue
                    line = key.start_mark.line + 1
                    if (key.tag, key.value) in first:
                        self.duplicates.append(
                            ConfigIssue(
                                f"line {line}",
                                f"duplicate key '{key.value}' (first at line {first[key.tag, key.value]}); YAML would "
                                "keep only the last one: remove or rename one",
                            )
                        )
                    else:
                        first[key.tag, key.value] = line

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            tag = node.tag
            if tag == _STR_TAG and type(node) is yaml.ScalarNode:
                return node.value
            try:
                if (
                    not deep
                    and self._depth < _FAST_DEPTH
                    and node not in self.constructed_objects
                    and (
                        (tag == _MAP_TAG and type(node) is yaml.MappingNode)
                        or (tag == _SEQ_TAG and type(node) is yaml.SequenceNode)
                    )
                ):
                    self._depth += 1
                    try:
                        built = self._construct_collection(node)
                    finally:
                        self._depth -= 1
                    if built is not None:
                        return built
                return super().construct_object(node, deep=deep)
            except (ValueError, OverflowError) as exc:  # a 5,000-digit int, a date like 2024-13-45
                detail = str(exc).split(";")[0]
                raise yaml.constructor.ConstructorError(
                    None, None, f"cannot read this value ({detail}); quote it if it is text", node.start_mark
                ) from None

        def _construct_collection(self, node: yaml.Node) -> Any:
            """A list or a mapping without merge keys, as PyYAML's SafeConstructor would build it (the
            collection is registered before its children, so an alias inside it finds it); None for a
            mapping with ``<<`` merges (left to PyYAML)."""
            if type(node) is yaml.SequenceNode:
                items: list[Any] = []
                self.constructed_objects[node] = items
                items.extend(self.construct_object(child) for child in node.value)
                return items
            pairs = node.value
            if any(key.tag == _MERGE_TAG for key, _ in pairs):
                return None
            mapping: dict[Any, Any] = {}
            self.constructed_objects[node] = mapping
            plain_keys = True
            for key_node, value_node in pairs:
                if key_node.tag == _STR_TAG and type(key_node) is yaml.ScalarNode:
                    key = key_node.value
                else:
                    plain_keys = False
                    key = self.construct_object(key_node)
                    if not isinstance(key, Hashable):
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
                        )
                mapping[key] = self.construct_object(value_node)
            if not plain_keys or len(mapping) != len(pairs):  # (keys written twice are keys built twice)
                self._check_duplicates(node)
            self._checked.add(id(node))
            return mapping

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
                return [
                    ConfigIssue(
                        _short_path(value, parent),
                        f"expands to more than {MAX_CONFIG_VALUES:,} values (each use of a YAML alias "
                        "*name counts its anchor again); use fewer aliases",
                    )
                ]
            height[key], size[key] = h, n
            continue
        if key in height:
            continue
        if key in open_ids:
            return [
                ConfigIssue(
                    _short_path(value, parent),
                    "contains itself (a YAML alias *name inside its own &name); remove the alias",
                )
            ]
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


KINDS = (
    "datalakes",
    "providers",
    "products",
    "sources",
    "datasets",
    "destinations",
    "streams",
    "notifications",
    "attributes",
    "data_streams",
)

_REFERENCE_FIELDS = {
    "datalakes": (),
    "providers": ("datalake_id", "products"),
    "products": ("name", "destinations"),
    "sources": ("provider_id", "vendor"),
    "datasets": ("source_id", "method", "push"),
    "destinations": (),
    "streams": ("dataset_id", "destination_id"),
    "notifications": ("provider_id",),
    "attributes": (),
    "data_streams": (),
}
"""What the cross-reference checks read of each entry (besides ``id``): enough to check an entry
that has field errors elsewhere."""
_LIST_FIELDS = {"products", "destinations"}
_DEFAULTS = {"method": "table"}


@dataclass(frozen=True)
class _Entry:
    """One entry as the cross-reference checks see it: ``model`` is None when it has field errors, and
    ``fields`` then holds only its reference fields that are valid on their own."""

    path: str
    id: str | None
    model: Any
    fields: dict[str, Any]


def check_references(config: PrequelConfig) -> list[ConfigIssue]:
    """Cross-reference checks that need the whole file: ids exist, products allow, schema covered.

    Linear in the size of the config: ids are looked up in sets and dicts, never by scanning.
    """
    entries = {
        kind: [
            _Entry(f"{kind}[{i}]", e.id, e, {f: getattr(e, f) for f in _REFERENCE_FIELDS[kind]})
            for i, e in enumerate(getattr(config, kind))
        ]
        for kind in KINDS
    }
    return _check_references(entries, set())


def reference_entry(kind: str, model: Any, path: str) -> _Entry:
    """One valid entry as the cross-reference checks see it (for callers that keep them between checks)."""
    return _Entry(path, model.id, model, {f: getattr(model, f) for f in _REFERENCE_FIELDS[kind]})


def check_reference_entries(entries: dict[str, list[_Entry]]) -> list[ConfigIssue]:
    """:func:`check_references` over entries built with :func:`reference_entry` (each issue at its entry's path)."""
    return _check_references(entries, set())


def _references_despite_field_errors(raw: dict[str, Any], exc: ValidationError) -> list[ConfigIssue]:
    """The cross-reference checks of a config with field errors: the valid entries in full, and the
    reference fields (ids, products, destinations) of the others that are valid on their own.

    The valid entries are validated again (each validates on its own): this runs only for a config
    with errors.
    """
    failed: dict[str, set[int]] = {kind: set() for kind in KINDS}
    bad_fields: set[tuple[str, int, str]] = set()
    malformed: set[str] = set()  # kinds that are not a list: none of their entries can be read
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        if not loc or loc[0] not in failed:
            continue
        if len(loc) > 1 and isinstance(loc[1], int):
            failed[loc[0]].add(loc[1])
            if len(loc) > 2:
                bad_fields.add((loc[0], loc[1], str(loc[2])))
        else:
            malformed.add(str(loc[0]))
    valid: dict[str, list[Any]] = {}
    for kind in KINDS:
        items = raw.get(kind)
        valid[kind] = (
            []
            if kind in malformed or not isinstance(items, list)
            else [item for i, item in enumerate(items) if i not in failed[kind]]
        )
    try:
        config = PrequelConfig.model_validate(valid)
    except ValidationError:  # not expected: entries validate on their own
        return []
    entries: dict[str, list[_Entry]] = {}
    for kind in KINDS:
        models = iter(getattr(config, kind))
        listed = raw.get(kind)
        written: list[Any] = listed if kind not in malformed and isinstance(listed, list) else []
        entries[kind] = []
        for i, item in enumerate(written):
            path = f"{kind}[{i}]"
            if i not in failed[kind]:
                model = next(models)
                fields = {f: getattr(model, f) for f in _REFERENCE_FIELDS[kind]}
                entries[kind].append(_Entry(path, model.id, model, fields))
            elif isinstance(item, MappingABC):
                readable = {
                    f: _raw_reference(item, f)
                    for f in ("id", *_REFERENCE_FIELDS[kind])
                    if (kind, i, f) not in bad_fields
                }
                readable = {f: v for f, v in readable.items() if v is not None}
                entries[kind].append(_Entry(path, readable.pop("id", None), None, readable))
    return _check_references(entries, malformed)


def _raw_reference(item: MappingABC[str, Any], field: str) -> Any:
    """A reference field as written, if it has the type a valid one would (``${VAR}`` resolved)."""
    value = item.get(field, _DEFAULTS.get(field))
    try:
        if field in _LIST_FIELDS:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            return [interpolate(v) for v in value] if ok else None
        return interpolate(value) if isinstance(value, str) else None
    except MissingEnvironmentVariable:
        return None


def _check_references(entries: dict[str, list[_Entry]], malformed: set[str]) -> list[ConfigIssue]:
    from ..language.expressions import ExpressionError, parse_expression

    issues: list[ConfigIssue] = []

    ids: dict[str, dict[str, _Entry]] = {}
    for kind in KINDS:
        counts = Counter(e.id for e in entries[kind] if e.id is not None)
        ids[kind] = {}
        for e in reversed(entries[kind]):  # the first one wins
            if e.id is not None:
                ids[kind][e.id] = e
        for e in entries[kind]:
            if e.id is not None and counts[e.id] > 1:
                issues.append(ConfigIssue(f"{e.path}.id", f"duplicate id '{e.id}' among {kind}"))

    def missing(kind: str, id: str) -> bool:
        return id not in ids[kind] and kind not in malformed

    def entry(kind: str, id: Any) -> _Entry | None:
        return ids[kind].get(id) if isinstance(id, str) else None

    bad_schemas: set[str] = set()
    for dest in entries["destinations"]:
        if dest.model is None:
            continue  # its record_schema or templates have field errors
        issues.extend(_template_issues(f"{dest.path}.{dest.model.type}.request_template", dest.model))
        schema_issues = record_schema_issues(f"{dest.path}.record_schema", dest.model.record_schema)
        if schema_issues:
            issues.extend(schema_issues)
            bad_schemas.add(dest.model.id)

    product_names: dict[str, _Entry] = {}
    for prod in entries["products"]:
        for name in (prod.id, prod.fields.get("name")):
            if name is not None:
                product_names.setdefault(name, prod)
    for p in entries["providers"]:
        if "datalake_id" in p.fields and missing("datalakes", p.fields["datalake_id"]):
            issues.append(ConfigIssue(f"{p.path}.datalake_id", f"no datalake with id '{p.fields['datalake_id']}'"))
        for j, name in enumerate(p.fields.get("products", ())):
            if name != "all" and name not in product_names and "products" not in malformed:
                issues.append(
                    ConfigIssue(f"{p.path}.products[{j}]", f"no product '{name}' (use 'all' or a product id)")
                )
    for prod in entries["products"]:
        if prod.id == "all":
            issues.append(ConfigIssue(f"{prod.path}.id", "'all' is the built-in product; choose another id"))
        for j, dest_id in enumerate(prod.fields.get("destinations", ())):
            if missing("destinations", dest_id):
                issues.append(ConfigIssue(f"{prod.path}.destinations[{j}]", f"no destination with id '{dest_id}'"))
    for n in entries["notifications"]:
        provider_id = n.fields.get("provider_id")
        if isinstance(provider_id, str) and missing("providers", provider_id):
            issues.append(
                ConfigIssue(
                    f"{n.path}.provider_id",
                    f"no provider with id '{provider_id}'; name one of the providers, or leave provider_id "
                    "out for a notification of every provider's events",
                )
            )
    for s in entries["sources"]:
        if "provider_id" in s.fields and missing("providers", s.fields["provider_id"]):
            issues.append(ConfigIssue(f"{s.path}.provider_id", f"no provider with id '{s.fields['provider_id']}'"))
    op_names: dict[str, tuple[tuple[str, ...], str]] = {}
    pushed_tables: dict[tuple[str, str], str] = {}  # (source, table) -> the dataset reading it
    for d in entries["datasets"]:
        source_id = d.fields.get("source_id")
        if source_id is None:
            continue
        table_name = getattr(d.fields.get("push"), "table_name", None)
        if isinstance(table_name, str) and isinstance(source_id, str):
            first = pushed_tables.setdefault((source_id, table_name), str(d.id))
            if first != str(d.id):
                issues.append(
                    ConfigIssue(
                        f"{d.path}.push.table_name",
                        f"dataset '{first}' already reads table '{table_name}' pushed to source '{source_id}': "
                        "one dataset per pushed table (remove one of them)",
                    )
                )
        if missing("sources", source_id):
            issues.append(ConfigIssue(f"{d.path}.source_id", f"no source with id '{source_id}'"))
            continue
        source = entry("sources", source_id)
        vendor, method = (source.fields.get("vendor") if source else None), d.fields.get("method")
        if (vendor in PUSH_SOURCE_VENDORS) != (method == "push") and vendor is not None and method is not None:
            issues.append(
                ConfigIssue(
                    f"{d.path}.method",
                    f"an {vendor} source's tables are pushed to it: use method: push with push: {{table_name: ...}}"
                    if vendor in PUSH_SOURCE_VENDORS
                    else f"method: push needs an import_api source, not {vendor}",
                )
            )
            continue
        if vendor is not None and method is not None:
            if method == "glob" and vendor not in FILE_SOURCE_VENDORS:
                issues.append(
                    ConfigIssue(f"{d.path}.method", f"glob datasets need a bucket, sftp or local source, not {vendor}")
                )
            if method != "glob" and vendor in FILE_SOURCE_VENDORS:
                issues.append(ConfigIssue(f"{d.path}.method", f"a {vendor} source is read with method: glob"))
        if source is not None and d.id is not None and "provider_id" in source.fields:
            provider_id = source.fields["provider_id"]
            issues.extend(
                _op_name_clash(
                    op_names,
                    f"{d.path}.source_id",
                    f"extract__{provider_id}__{source_id}",
                    ("extract", provider_id, source_id),
                )
            )
            issues.extend(
                _op_name_clash(
                    op_names, f"{d.path}.id", f"prequel__{provider_id}__{d.id}", ("dataset", provider_id, d.id)
                )
            )

    from .data_streams import data_stream_issues

    issues.extend(data_stream_issues(entries, ids))
    destinations_of: dict[str, set[str] | None] = {}  # None: a product whose destinations could not be read
    for prod in entries["products"]:
        for name in (prod.id, prod.fields.get("name")):
            if name is None:
                continue
            listed = prod.fields.get("destinations")
            known = destinations_of.setdefault(name, set())
            if listed is None or known is None:
                destinations_of[name] = None
            else:
                known.update(listed)
    for st in entries["streams"]:
        where = st.path
        dataset_id, destination_id = st.fields.get("dataset_id"), st.fields.get("destination_id")
        if dataset_id is not None and missing("datasets", dataset_id) and missing("data_streams", dataset_id):
            issues.append(ConfigIssue(f"{where}.dataset_id", f"no dataset with id '{dataset_id}'"))
        if destination_id is not None and missing("destinations", destination_id):
            issues.append(ConfigIssue(f"{where}.destination_id", f"no destination with id '{destination_id}'"))
        dataset = entry("datasets", dataset_id)
        source = entry("sources", dataset.fields.get("source_id")) if dataset else None
        provider = entry("providers", source.fields.get("provider_id")) if source else None
        if (
            provider is not None
            and provider.id is not None
            and not (destination_id is not None and missing("destinations", destination_id))
        ):
            if destination_id is not None:
                issues.extend(
                    _op_name_clash(
                        op_names,
                        f"{where}.destination_id",
                        f"load__{provider.id}__{destination_id}",
                        ("load", provider.id, destination_id),
                    )
                )
            if st.id is not None:
                issues.extend(
                    _op_name_clash(
                        op_names,
                        f"{where}.id",
                        f"prequel__{provider.id}__streams__{st.id}",
                        ("stream", provider.id, st.id),
                    )
                )
            products = provider.fields.get("products")
            if (
                products is not None
                and destination_id is not None
                and entry("destinations", destination_id) is not None
                and "products" not in malformed
                and not _allowed_or_unknown(destinations_of, products, destination_id)
            ):
                issues.append(
                    ConfigIssue(
                        f"{where}.destination_id",
                        f"destination '{destination_id}' is not in any product of provider "
                        f"'{provider.id}' (products: {', '.join(products)}); add it to one of "
                        "those products or give the provider the product 'all'",
                    )
                )
        if st.model is None:
            continue  # its mappings have field errors
        targets = Counter(m.target_field for m in st.model.mappings)
        for j, m in enumerate(st.model.mappings):
            if targets[m.target_field] > 1:
                issues.append(ConfigIssue(f"{where}.mappings[{j}].target_field", f"'{m.target_field}' is mapped twice"))
            if m.expression is not None:
                try:
                    parse_expression(m.expression.expr)
                except ExpressionError as exc:
                    issues.append(ConfigIssue(f"{where}.mappings[{j}].expression.expr", str(exc)))
        destination = entry("destinations", destination_id)
        if destination is not None and destination.model is not None and destination_id not in bad_schemas:
            schema = destination.model.record_schema
            props = schema.get("properties", {})
            for field in schema.get("required", []):
                if field not in targets:
                    issues.append(
                        ConfigIssue(f"{where}.mappings", f"required record_schema field '{field}' is not mapped")
                    )
            if schema.get("additionalProperties") is False:
                for j, m in enumerate(st.model.mappings):
                    if m.target_field not in props:
                        issues.append(
                            ConfigIssue(
                                f"{where}.mappings[{j}].target_field",
                                f"'{m.target_field}' is not a property of destination '{destination_id}'",
                            )
                        )
    return issues


def _allowed_or_unknown(destinations_of: dict[str, set[str] | None], products: list[str], destination_id: str) -> bool:
    """Whether a product allows the destination, or may (a product whose destinations have field errors)."""
    for name in products:
        if name == "all":
            return True
        listed = destinations_of.get(name, set())
        if listed is None or destination_id in listed:
            return True
    return False


def _op_name_clash(
    seen: dict[str, tuple[tuple[str, ...], str]], where: str, op: str, identity: tuple[str, ...]
) -> list[ConfigIssue]:
    """Dagster op names allow only letters, digits and _: a provider's extracts run in one op per source,
    its loads in one op per destination; ids that differ only in - and _ (or in where a __ falls) would
    give two of them the same op name, which Dagster refuses."""
    name = sanitize_name(op)
    owner, other = seen.setdefault(name, (identity, where))
    if owner == identity:
        return []
    return [
        ConfigIssue(
            where,
            f"gives the same Dagster name '{name}' as {other}; Dagster names allow only "
            "letters, digits and _ (so - becomes _): rename one of the two",
        )
    ]


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
        issues.append(
            ConfigIssue(
                f"{where}.properties", "must be a mapping of field name to its schema, such as {id: {type: string}}"
            )
        )
        props = {}
    for name, prop in props.items():
        at = f"{where}.properties.{name}"
        if not isinstance(name, str):
            issues.append(ConfigIssue(at, f"property names must be strings, not {type(name).__name__}; quote it"))
        elif not isinstance(prop, dict):
            issues.append(ConfigIssue(at, f"must be an object such as {{type: string}}, not {_shown(prop)}"))
        elif "type" in prop and not _is_json_type(prop["type"]):
            issues.append(
                ConfigIssue(
                    f"{at}.type",
                    f"must be one of {', '.join(JSON_TYPES)}, or a list of them "
                    f"such as [string, null]; not {_shown(prop['type'])}",
                )
            )
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        issues.append(
            ConfigIssue(f"{where}.required", f"must be a list of property names, such as [id]; not {_shown(required)}")
        )
    if issues:
        return issues

    import jsonschema

    meta = jsonschema.Draft7Validator(
        jsonschema.Draft7Validator.META_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    for error in sorted(meta.iter_errors(schema), key=lambda e: [str(p) for p in e.absolute_path]):
        issues.append(
            ConfigIssue(format_path([where, *error.absolute_path]), f"not valid JSON Schema: {error.message[:300]}")
        )
    from ..language.linear_regex import schema_patterns, unsupported

    for pattern in schema_patterns(schema):  # tenant values are matched in linear time, so RE2 syntax only
        why = unsupported(pattern)
        if why:
            issues.append(
                ConfigIssue(
                    where,
                    f"regular expression {pattern!r} is not supported ({why}); "
                    "use RE2 syntax: no backreferences or look-around",
                )
            )
    return issues


def _is_json_type(declared: Any) -> bool:
    if isinstance(declared, str):
        return declared in JSON_TYPES
    return (
        isinstance(declared, list)
        and bool(declared)
        and all(isinstance(t, str) and t in JSON_TYPES for t in declared)
        and len(set(declared)) == len(declared)
    )


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
        place: Literal["uri", "header", "body"] = "uri" if name == "uri" else "body" if name == "body" else "header"
        try:
            parse_template(text, allow_record=per_record, allow_records=not per_record and name != "body", place=place)
        except TemplateError as exc:
            issues.append(ConfigIssue(f"{where}.{name}", str(exc)))
    return issues


def find_config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config to use: an explicit path, else ``$PREQUEL_CONFIG``, else ``./prequel.yaml`` if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR])
    default = Path.cwd() / DEFAULT_CONFIG_NAME
    return default if default.exists() else None
