"""Catalog entries as config models, merged with the YAML config into one checked ``PrequelConfig``.

The API and the definitions read the catalog through :class:`CatalogState`: validated models kept
current by applying only what changed since the last read. Catalog strings are validated as
literals (``${ENV}`` is never resolved in a tenant's values), and a change is checked by the very
cross-reference checks that ``prequel.yaml`` gets.
"""

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..config.errors import ConfigError, ConfigIssue
from ..config.loading import (
    KINDS,
    _pydantic_issues,
    check_reference_entries,
    check_references,
    load_config,
    reference_entry,
)
from ..config.models import (
    LITERAL,
    AttributeDefinition,
    Datalake,
    Dataset,
    DataStream,
    Destination,
    Entry,
    Notification,
    PrequelConfig,
    Product,
    Provider,
    Source,
    Stream,
)
from .store import Catalog, StoredEntry, unseal_entry

MODELS: dict[str, type[Entry]] = {
    "datalakes": Datalake,
    "providers": Provider,
    "products": Product,
    "sources": Source,
    "datasets": Dataset,
    "destinations": Destination,
    "streams": Stream,
    "notifications": Notification,
    "attributes": AttributeDefinition,  # type: ignore[dict-item]  # (integer ids: YAML only, no API)
    "data_streams": DataStream,
}
SINGULAR = {kind: kind[:-1] for kind in KINDS} | {"notifications": "webhook"}
"""The wrapper key of each kind's API bodies (and the name in its messages): Prequel's notification
subscriptions are ``webhook`` resources (``POST /webhooks`` with ``{"webhook": {...}}``)."""
CATALOG_ORIGIN = "catalog"


def validate_entry(kind: str, body: Mapping[str, Any], *, where: str | None = None) -> Entry:
    """The config model of one entry (strings taken literally); :class:`ConfigError` naming each field path."""
    try:
        return MODELS[kind].model_validate(body, context=LITERAL)
    except ValidationError as exc:
        prefix = where if where is not None else SINGULAR[kind]
        issues = [ConfigIssue(f"{prefix}.{i.path}" if i.path else prefix, i.message) for i in _pydantic_issues(exc)]
        raise ConfigError("request", issues) from None


class CatalogState:
    """The catalog's entries as validated models at one revision."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.revision = -1
        self.stored: dict[str, dict[str, StoredEntry]] = {kind: {} for kind in KINDS}
        self.models: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}

    @classmethod
    def as_of(cls, catalog: Catalog, revision: int | None = None) -> "CatalogState":
        """The catalog as it was at ``revision`` (default: now)."""
        state = cls(catalog)
        at = catalog.revision() if revision is None else revision
        state._apply(catalog.entries(at), [])  # as of that revision exactly, whatever is written meanwhile
        state.revision = at
        return state

    def refresh(self) -> bool:
        """Catch up with the newest revision; whether anything changed."""
        if self.revision < 0:
            newest = self.catalog.revision()
            self._apply(self.catalog.entries(newest), [])
            self.revision = newest
            return True
        changes = self.catalog.changes_since(self.revision)
        if changes.revision == self.revision:
            return False
        self._apply(changes.written, changes.removed)
        self.revision = changes.revision
        return True

    def _apply(self, written: list[StoredEntry], removed: list[tuple[str, str]]) -> None:
        issues: list[ConfigIssue] = []
        for kind, id in removed:
            self.stored[kind].pop(id, None)
            self.models[kind].pop(id, None)
        for entry in written:
            self.stored[entry.kind][entry.id] = entry
            try:
                self.models[entry.kind][entry.id] = validate_entry(
                    entry.kind, unseal_entry(entry.kind, entry.body, self.catalog), where=f"{entry.kind}['{entry.id}']"
                )
            except ConfigError as exc:  # written by an older release whose models accepted it
                issues.extend(exc.issues)
        if issues:
            raise ConfigError(CATALOG_ORIGIN, issues)

    def set_status(self, kind: str, id: str, status: dict[str, Any]) -> None:
        """Record a connectivity result (stored, and in this state: it is not a revision)."""
        self.catalog.set_status(kind, id, status)
        stored = self.stored[kind].get(id)
        if stored is not None:
            self.stored[kind][id] = dataclasses.replace(stored, status=status)

    def merged(
        self, yaml: PrequelConfig | None, *, change: tuple[str, str, Entry | None] | None = None
    ) -> PrequelConfig:
        """YAML entries first, then the catalog's (with ``change``: one entry put, replaced or removed)."""
        lists: dict[str, list[Any]] = {}
        for kind in KINDS:
            models = self.models[kind]
            if change is not None and change[0] == kind:
                models = dict(models)
                if change[2] is None:
                    models.pop(change[1], None)
                else:
                    models[change[1]] = change[2]
            lists[kind] = [*(getattr(yaml, kind) if yaml is not None else ()), *models.values()]
        config = PrequelConfig.model_construct(**lists)  # type: ignore[arg-type]  # entries validated one by one
        if yaml is not None:
            config._base_dir = yaml.base_dir
            config._origin = f"{yaml.origin} + {CATALOG_ORIGIN}"
        else:
            config._origin = CATALOG_ORIGIN
        return config


def load_merged(yaml: PrequelConfig | None, state: CatalogState) -> PrequelConfig:
    """The definitions' config: the YAML file's entries and the catalog's, checked together."""
    config = state.merged(yaml)
    issues = check_references(config)
    if issues:
        raise ConfigError(config.origin, [_named(config, issue) for issue in issues])
    return config


class ReferenceChecker:
    """The cross-reference checks of ``prequel.yaml`` for a config that changes one entry at a time:
    what they read of each entry is kept between checks (per model object), and issues are named by
    entry id (``streams['orders'].mappings[0]``)."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Any] = {}  # (kind, id) -> (model, its reference entry)

    def issues(self, config: PrequelConfig) -> set[ConfigIssue]:
        entries: dict[str, list[Any]] = {}
        kept: dict[tuple[str, str], Any] = {}
        for kind in KINDS:
            listed = entries[kind] = []
            for model in getattr(config, kind):
                key = (kind, model.id)
                cached = self._entries.get(key)
                if cached is None or cached[0] is not model:
                    cached = (model, reference_entry(kind, model, f"{kind}['{model.id}']"))
                kept[key] = cached
                listed.append(cached[1])
        self._entries = kept
        return set(check_reference_entries(entries))


def change_issues(
    checker: ReferenceChecker, before: set[ConfigIssue], after: PrequelConfig, kind: str, id: str
) -> tuple[list[ConfigIssue], set[ConfigIssue]]:
    """The cross-reference problems a change brings (those ``before`` had are not its fault), the
    changed entry's named as ``stream.mappings[0]``; and all of ``after``'s (the next change's
    ``before``: one check per change, not two)."""
    now = checker.issues(after)
    prefix = f"{kind}['{id}']"
    found = [
        ConfigIssue(SINGULAR[kind] + i.path[len(prefix) :], i.message) if i.path.startswith(prefix) else i
        for i in sorted(now - before, key=lambda i: (i.path, i.message))
    ]
    return found, now


_INDEXED = re.compile(r"^([a-z]+)\[(\d+)\]")


def _named(config: PrequelConfig, issue: ConfigIssue, kind: str | None = None, id: str | None = None) -> ConfigIssue:
    """``streams[12].mappings[0]`` as ``streams['orders'].mappings[0]`` (or ``stream.mappings[0]`` for ``id``)."""
    match = _INDEXED.match(issue.path)
    if match is None or match.group(1) not in KINDS:
        return issue
    entries = getattr(config, match.group(1))
    index = int(match.group(2))
    if index >= len(entries):
        return issue
    entry_id = entries[index].id
    rest = issue.path[match.end() :]
    if kind is not None and match.group(1) == kind and entry_id == id:
        return ConfigIssue(f"{SINGULAR[kind]}{rest}", issue.message)
    return ConfigIssue(f"{match.group(1)}['{entry_id}']{rest}", issue.message)


def owner_of(config: PrequelConfig, kind: str, model: Entry) -> str | None:
    """The provider an entry belongs to (None: the company's own, as datalakes, destinations and
    notifications of every provider)."""
    try:
        if kind == "providers":
            return model.id
        if kind == "sources":
            return model.provider_id  # type: ignore[attr-defined,no-any-return]
        if kind == "datasets":
            return config.source(model.source_id).provider_id  # type: ignore[attr-defined]
        if kind == "streams":
            dataset = config.dataset(model.dataset_id)  # type: ignore[attr-defined]
            return config.source(dataset.source_id).provider_id
        if kind == "notifications":
            return model.provider_id  # type: ignore[attr-defined,no-any-return]  # None: every provider's
    except KeyError:
        return None
    return None


def load_with_catalog(path: Path | None, *, revision: int | None = None) -> tuple[PrequelConfig, int | None] | None:
    """The YAML file's config and the catalog's (``.prequel/catalog.db`` or ``$PREQUEL_CATALOG_URL``)
    together, and the catalog revision read (None: no catalog); None when there is neither."""
    catalog = Catalog.open(create=False)
    if catalog is None:
        return (load_config(path), None) if path is not None else None
    try:
        state = CatalogState.as_of(catalog, revision)
        return load_merged(load_config(path) if path is not None else None, state), state.revision
    finally:
        catalog.close()
