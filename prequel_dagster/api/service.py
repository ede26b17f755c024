"""The management API's resources without HTTP: create, read, list, update and delete, checked and scoped.

Every change is validated by the config models (strings taken literally) and by the cross-reference
checks of ``prequel.yaml``, against the YAML config and the catalog together. A key scoped to a
provider sees only that provider's entries; everything else answers as if it did not exist.
"""

import gc
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog.entries import (
    MODELS,
    SINGULAR,
    CatalogState,
    ReferenceChecker,
    change_issues,
    owner_of,
    validate_entry,
)
from ..catalog.keypairs import with_generated_keys
from ..catalog.secret_fields import merge_patch, strip
from ..catalog.store import (
    Catalog,
    DuplicateId,
    StaleCatalog,
    StoredEntry,
    decode_cursor,
    encode_cursor,
    unseal_entry,
)
from ..config.errors import ConfigIssue
from ..config.loading import KINDS, load_config, parse_yaml
from ..config.models import SLACK_WEBHOOK_PREFIX, Entry, Notification, PrequelConfig, Source
from ..config.secrets import MASK
from .tenancy import LOCAL_VENDORS, _host_issues, tenant_source_issues

log = logging.getLogger("prequel_dagster.api")

PLURAL = {singular: kind for kind, singular in SINGULAR.items()}
IMPORT_KINDS = tuple(kind for kind in KINDS if kind not in ("notifications", "attributes", "data_streams"))
"""The kinds served under ``/import/<kind>``; notifications are Prequel's ``/webhooks`` (api/webhooks.py)."""
COMPANY_KINDS = ("datalakes", "products", "destinations")
"""The company's own resources: a provider's key reads only the destinations its products allow, and changes none."""
IMMUTABLE = {
    "providers": ("datalake_id",),
    "sources": ("provider_id", "vendor"),
    "datasets": ("source_id",),
    "streams": ("dataset_id", "destination_id"),
    "notifications": ("provider_id",),
    "data_streams": ("datalake_id",),  # its log, cursors, deduplication state and usage ledger live there
}
"""Reference fields a PATCH may not change: moving a source to another provider would move its data."""
_REFERENCES = {
    "sources": ("provider_id",),
    "datasets": ("source_id",),
    "streams": ("dataset_id", "destination_id"),
    "notifications": ("provider_id",),
}
"""What ``_check_scope`` checks, in its order."""
STREAM_FIELDS = ("id", "name", "is_enabled", "destination_id", "dataset_id", "mappings", "created_at", "updated_at")


class ApiError(Exception):
    """An answer other than success: the HTTP status and a message naming the thing and the fix."""

    def __init__(self, status: int, message: str, issues: list[ConfigIssue] | None = None):
        self.status = status
        self.issues = issues or []
        if self.issues:
            message = message + ": " + "; ".join(str(i) for i in self.issues)
        super().__init__(message)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key, scoped to one provider or (``provider_id`` None) the company's."""

    key_id: str
    provider_id: str | None


def not_found(kind: str, id: str) -> ApiError:
    return ApiError(404, f"no {SINGULAR[kind]} with id '{id}'")


class Service:
    """The catalog and the YAML config behind the API, with a merged, checked view kept current."""

    def __init__(
        self,
        catalog: Catalog,
        yaml_path: Path | None = None,
        *,
        on_change: Callable[[str, str, int], None] = lambda kind, id, revision: None,
        check_destination: Callable[[PrequelConfig, str], str | None] | None = None,
        freeze_after_load: bool = False,
    ):
        self.catalog = catalog
        self.yaml_path = yaml_path
        self.on_change = on_change
        self.check_destination = check_destination
        self.freeze_after_load = freeze_after_load  # a server process: see config()
        self.lock = threading.RLock()
        self.state = CatalogState(catalog)
        self._yaml: PrequelConfig | None = None
        self._yaml_stamp: tuple[int, int] | None = None
        self._yaml_raw: dict[str, dict[str, dict[str, Any]]] = {}
        self._config: PrequelConfig | None = None
        self._config_key: tuple[int, Any] | None = None
        self._issues: tuple[Any, set[ConfigIssue]] | None = None
        self.checker = ReferenceChecker()

    # ------------------------------------------------------------------ the merged config

    def yaml(self) -> PrequelConfig | None:
        if self.yaml_path is None:
            return None
        stat = os.stat(self.yaml_path)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._yaml_stamp:
            self._yaml, self._yaml_stamp = load_config(self.yaml_path), stamp
            self._yaml_raw = _raw_entries(self.yaml_path)
        return self._yaml

    def config(self) -> PrequelConfig:
        """YAML and catalog together, as of the newest revision."""
        with self.lock:
            first = self.state.revision < 0
            self.state.refresh()
            key = (self.state.revision, self._yaml_stamp if self.yaml() is not None else None)
            if self._config is None or key != self._config_key:
                self._config, self._config_key = self.state.merged(self.yaml()), key
            if first and self.freeze_after_load:
                # Thousands of entries that live as long as the process: keep the cyclic collector from
                # walking them on every full collection (a 100+ ms pause per create with 1,000 providers).
                # Frozen objects are still freed by reference counting when an entry is replaced.
                gc.freeze()
            return self._config

    def issues(self) -> set[ConfigIssue]:
        """The cross-reference problems the config has now (kept from the last change: one check per change)."""
        with self.lock:
            self.config()
            if self._issues is None or self._issues[0] != self._config_key:
                assert self._config is not None
                self._issues = (self._config_key, self.checker.issues(self._config))
            return self._issues[1]

    def is_yaml(self, kind: str, id: str) -> bool:
        yaml = self.yaml()
        return yaml is not None and any(e.id == id for e in getattr(yaml, kind))

    # ------------------------------------------------------------------ scoping

    def visible(self, principal: Principal, config: PrequelConfig, kind: str, model: Entry) -> bool:
        if principal.provider_id is None:
            return True
        if kind in ("datalakes", "products"):
            return False
        if kind == "destinations":
            try:
                products = config.provider(principal.provider_id).products
            except KeyError:  # the key's provider was deleted
                return False
            return "all" in products or any(
                model.id in p.destinations for p in config.products if p.id in products or p.name in products
            )
        return owner_of(config, kind, model) == principal.provider_id

    def find(self, principal: Principal, kind: str, id: str) -> tuple[PrequelConfig, Entry]:
        """The entry if this key may see it; 404 alike for one that does not exist and one of another provider."""
        config = self.config()
        try:
            model = config._by_id(kind, id)
        except KeyError:
            raise not_found(kind, id) from None
        if not self.visible(principal, config, kind, model):
            raise not_found(kind, id)
        return config, model

    # ------------------------------------------------------------------ views

    def view(self, kind: str, model: Entry) -> dict[str, Any]:
        """The resource as the API returns it: what was written, secrets removed, with server fields."""
        stored = self.state.stored[kind].get(model.id)
        if stored is not None:
            body = strip(MODELS[kind], stored.body)
            created, updated, status = stored.created_at, stored.updated_at, stored.status or {}
        else:  # from the YAML file: as written (``${VAR}`` shown, never its value)
            raw = self._yaml_raw.get(kind, {}).get(model.id)
            body = strip(MODELS[kind], raw if raw is not None else _dump(model))
            created = updated = self._yaml_time()
            status = {}
        return shape(kind, model, body, created, updated, status)

    def _yaml_time(self) -> str:
        import datetime as dt

        if self.yaml_path is None:
            return ""
        stamp = os.stat(self.yaml_path).st_mtime
        return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as the catalog's

    # ------------------------------------------------------------------ CRUD

    def get(self, principal: Principal, kind: str, id: str) -> dict[str, Any]:
        _, model = self.find(principal, kind, id)
        return self.view(kind, model)

    def list(
        self, principal: Principal, kind: str, *, page_size: int, descending: bool, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page, ordered by creation time then id; YAML entries first (they have the file's time)."""
        config = self.config()
        with self.lock:
            stored = self.state.stored[kind]
            yaml_time = self._yaml_time()
            rows = [
                (stored[m.id].created_at if m.id in stored else yaml_time, m.id, m)
                for m in getattr(config, kind)
                if self.visible(principal, config, kind, m)
            ]
        rows.sort(key=lambda r: (r[0], r[1]), reverse=descending)
        if cursor:
            at = decode_cursor(cursor)
            rows = [r for r in rows if ((r[0], r[1]) < at if descending else (r[0], r[1]) > at)]
        page = rows[:page_size]
        more = len(rows) > page_size
        return [self.view(kind, m) for _, _, m in page], (encode_cursor(page[-1][0], page[-1][1]) if more else None)

    def create(
        self, principal: Principal, kind: str, body: Mapping[str, Any], *, skip_validation: bool = False
    ) -> dict[str, Any]:
        return self._retrying(self._create, principal, kind, body, skip_validation=skip_validation)

    def update(
        self,
        principal: Principal,
        kind: str,
        id: str,
        patch: Mapping[str, Any],
        *,
        skip_validation: bool = False,
        replace: bool = False,
    ) -> dict[str, Any]:
        """``patch`` merged into the stored entry (JSON merge patch), or with ``replace`` the whole new body."""
        return self._retrying(
            self._update, principal, kind, id, patch, skip_validation=skip_validation, replace=replace
        )

    def delete(self, principal: Principal, kind: str, id: str) -> None:
        self._retrying(self._delete, principal, kind, id)

    def _retrying(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A change checked against a catalog another process changed meanwhile is checked again."""
        for _ in range(5):
            try:
                return fn(*args, **kwargs)
            except StaleCatalog:
                continue  # config() catches up on the next attempt
        raise ApiError(503, "the catalog kept changing while this change was checked; send it again")

    def _create(
        self, principal: Principal, kind: str, body: Mapping[str, Any], *, skip_validation: bool = False
    ) -> dict[str, Any]:
        singular = SINGULAR[kind]
        if principal.provider_id is not None and kind in (*COMPANY_KINDS, "providers"):
            raise ApiError(403, f"a provider's key cannot create {kind}; use the company's key")
        body = dict(body)
        if kind == "providers":
            if "id" not in body:
                raise ApiError(400, "provider.id: required: providers keep the id you choose (as 'acme')")
            id = body["id"]
        else:
            if "id" in body:
                raise ApiError(400, f"{singular}.id: ids of {kind} are assigned by the server; remove it")
            id = str(uuid.uuid4())
            body = {"id": id, **body}
        body = _with_defaults(kind, body)
        if kind == "notifications" and principal.provider_id is not None:
            if "provider_id" not in body:  # a provider's key subscribes to its own provider's events
                body["provider_id"] = principal.provider_id
            elif body["provider_id"] is None:
                raise ApiError(
                    403,
                    f"{singular}.provider_id: a provider's key cannot create a notification of every provider's "
                    "events; leave provider_id out (your provider's events), or use the company's key",
                )
        if kind == "sources":
            body = self._prepare_source(principal, body)
        model = validate_entry(kind, body)
        with self.lock:
            before = self.config()
            if self._exists(before, kind, model.id):
                raise ApiError(409, f"{singular}.id: a {singular} with id '{model.id}' already exists")
            self._check_scope(principal, before, kind, body)
            _company_fields(principal, kind, body, {})
            self.check_tenant_source(principal, model)
            after = self.state.merged(self.yaml(), change=(kind, model.id, model))
            issues, now = change_issues(self.checker, self.issues(), after, kind, model.id)
            self._refuse(principal, kind, issues)
            if kind == "destinations" and not skip_validation:
                self._check_reachable(after, model.id)
            try:
                self.catalog.create(
                    kind,
                    model.id,
                    owner_of(after, kind, model),
                    body,
                    actor=principal.key_id,
                    expected=self.state.revision,
                )
            except DuplicateId as exc:
                raise ApiError(409, f"{singular}.id: {exc}") from None
            self._changed(kind, model.id, now)
            return self.view(kind, model)

    def _update(
        self,
        principal: Principal,
        kind: str,
        id: str,
        patch: Mapping[str, Any],
        *,
        skip_validation: bool = False,
        replace: bool = False,
    ) -> dict[str, Any]:
        singular = SINGULAR[kind]
        self.find(principal, kind, id)
        if principal.provider_id is not None and kind in COMPANY_KINDS:
            raise not_found(kind, id)  # may read, may not change
        if principal.provider_id is not None and kind == "providers":  # its products decide what it may reach
            raise ApiError(403, "a provider's key cannot change its provider; use the company's key")
        if self.is_yaml(kind, id):
            raise ApiError(
                400,
                f"{singular} '{id}' is declared in {self.yaml_path}; change it there (YAML entries are read-only here)",
            )
        if "id" in patch and patch["id"] != id:
            raise ApiError(400, f"{singular}.id: an id cannot be changed; create a new {singular}")
        with self.lock:
            self.find(principal, kind, id)  # again, under the lock: it may have gone meanwhile
            stored = self.state.stored[kind].get(id)
            if stored is None:
                raise not_found(kind, id)
            for field in IMMUTABLE.get(kind, ()):
                if field in patch and patch[field] != stored.body.get(field):
                    raise ApiError(400, f"{singular}.{field}: cannot be changed; create a new {singular} instead")
            _company_fields(principal, kind, patch, stored.body)
            if replace:  # a whole new body, which keeps what may not change when it leaves it out
                kept = {f: stored.body[f] for f in IMMUTABLE.get(kind, ()) if f in stored.body and f not in patch}
                merged = {"id": id, **kept, **patch}
            else:
                merged = merge_patch(stored.body, dict(patch))
            if kind == "sources":
                merged = self._prepare_source(principal, merged)
            model = validate_entry(kind, unseal_entry(kind, merged, self.catalog))
            self.check_tenant_source(principal, model)
            after = self.state.merged(self.yaml(), change=(kind, id, model))
            issues, now = change_issues(self.checker, self.issues(), after, kind, id)
            self._refuse(principal, kind, issues)
            if kind == "destinations" and not skip_validation:
                self._check_reachable(after, id)
            self.catalog.update(
                kind, id, stored.provider_id, merged, actor=principal.key_id, expected=self.state.revision
            )
            self._changed(kind, id, now)
            return self.view(kind, model)

    def _delete(self, principal: Principal, kind: str, id: str) -> None:
        singular = SINGULAR[kind]
        self.find(principal, kind, id)
        if principal.provider_id is not None and kind in COMPANY_KINDS:
            raise not_found(kind, id)
        if principal.provider_id is not None and kind == "providers":
            raise ApiError(403, "a provider's key cannot delete its provider; use the company's key")
        if self.is_yaml(kind, id):
            raise ApiError(
                400,
                f"{singular} '{id}' is declared in {self.yaml_path}; remove it there (YAML entries are read-only here)",
            )
        with self.lock:
            after = self.state.merged(self.yaml(), change=(kind, id, None))
            issues, now = change_issues(self.checker, self.issues(), after, kind, id)
            users = sorted({i.path.split(".")[0] for i in issues})
            if users:
                raise ApiError(400, f"{singular} '{id}' is used by {', '.join(users)}; delete or change them first")
            self.catalog.delete(kind, id, actor=principal.key_id, expected=self.state.revision)
            self._changed(kind, id, now)

    # ------------------------------------------------------------------ helpers

    def _changed(self, kind: str, id: str, issues: set[ConfigIssue]) -> None:
        """After a write: catch up, and keep the new config's problems when no other writer came between."""
        revision = self.state.revision
        self.config()
        if self.state.revision == revision + 1:
            self._issues = (self._config_key, issues)
        self.on_change(kind, id, self.state.revision)

    def _exists(self, config: PrequelConfig, kind: str, id: str) -> bool:
        try:
            config._by_id(kind, id)
        except KeyError:
            return False
        return True

    def _check_scope(self, principal: Principal, config: PrequelConfig, kind: str, body: Mapping[str, Any]) -> None:
        """A reference to another provider's entry reads exactly as one to an entry that does not exist."""
        if principal.provider_id is None:
            return
        singular = SINGULAR[kind]
        refs = {
            "sources": ("provider_id", "providers"),
            "datasets": ("source_id", "sources"),
            "notifications": ("provider_id", "providers"),
        }
        if kind in refs:
            field, target = refs[kind]
            ref = body.get(field)
            if not isinstance(ref, str) or not self._exists(config, target, ref):
                return  # the reference checks report it
            if owner_of(config, target, config._by_id(target, ref)) != principal.provider_id:
                raise ApiError(
                    400, f"the {singular} is not valid", [ConfigIssue(f"{singular}.{field}", _no(target, ref))]
                )
        if kind == "streams":
            ref = body.get("dataset_id")
            if isinstance(ref, str) and config.is_data_stream(ref) and not self._exists(config, "datasets", ref):
                # the company's data streams (every provider's data) are not a provider's to deliver
                raise ApiError(
                    400, f"the {singular} is not valid", [ConfigIssue(f"{singular}.dataset_id", _no("datasets", ref))]
                )
            for field, target in (("dataset_id", "datasets"), ("destination_id", "destinations")):
                ref = body.get(field)
                if isinstance(ref, str) and self._exists(config, target, ref):
                    if not self.visible(principal, config, target, config._by_id(target, ref)):
                        raise ApiError(
                            400, f"the {singular} is not valid", [ConfigIssue(f"{singular}.{field}", _no(target, ref))]
                        )

    def candidate(self, principal: Principal, kind: str, model: Entry, body: Mapping[str, Any]) -> PrequelConfig:
        """The config as if ``model`` were saved (nothing is), after the checks a save would make:
        test-stream and test-transform of an unsaved stream, test-source of an unsaved source."""
        with self.lock:
            before = self.config()
            self._check_scope(principal, before, kind, body)
            self.check_tenant_source(principal, model)
            after = self.state.merged(self.yaml(), change=(kind, model.id, model))
            issues, _ = change_issues(self.checker, self.issues(), after, kind, model.id)
            self._refuse(principal, kind, issues)
            return after

    def _refuse(self, principal: Principal, kind: str, issues: Sequence[ConfigIssue]) -> None:
        """400 with the issues. For a provider's key, a reference to a missing entry is reported alone,
        as one to another provider's entry is (which ``_check_scope`` refuses first): the two read the same."""
        if not issues:
            return
        singular = SINGULAR[kind]
        if principal.provider_id is not None:
            missing = [
                i
                for i in issues
                if i.message.startswith("no ") and i.path in {f"{singular}.{f}" for f in _REFERENCES.get(kind, ())}
            ]
            issues = missing[:1] or issues
        raise ApiError(400, f"the {singular} is not valid", [*issues])

    def check_tenant_source(self, principal: Principal, model: Entry) -> None:
        """A provider's key: only sources that reach the provider's systems with the provider's own credentials,
        and only notifications of its own provider's events, sent outside the API's own network."""
        if principal.provider_id is not None and isinstance(model, Source):
            issues = tenant_source_issues(model)
            if issues:
                raise ApiError(400, "the source is not valid", issues)
        if principal.provider_id is not None and isinstance(model, Notification):
            issues = tenant_notification_issues(principal.provider_id, model)
            if issues:
                raise ApiError(400, f"the {SINGULAR['notifications']} is not valid", issues)

    def _prepare_source(self, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
        vendor = body.get("vendor")
        if principal.provider_id is not None and vendor in LOCAL_VENDORS:
            raise ApiError(
                400,
                f"source.vendor: '{vendor}' reads files on the API's own machine; only the company's key may use it",
            )
        if isinstance(vendor, str) and isinstance(body.get(vendor), dict):
            body = {**body, vendor: with_generated_keys(vendor, body[vendor])}
        return body

    def _check_reachable(self, config: PrequelConfig, destination_id: str) -> None:
        if self.check_destination is None:
            return
        problem = self.check_destination(config, destination_id)
        if problem:
            raise ApiError(
                400, f"destination is not reachable: {problem}; start the endpoint or pass ?skip_validation=true"
            )

    def stored(self, kind: str, id: str) -> StoredEntry | None:
        return self.state.stored[kind].get(id)


def tenant_notification_issues(provider_id: str, model: Notification) -> list[ConfigIssue]:
    """Why a provider's key may not save this notification: another scope than its own provider, or a
    URL on the API's own machine or network (the sender checks the addresses a name resolves to, too)."""
    from ..notify.sender import literal_host_problem

    name = SINGULAR["notifications"]
    if model.provider_id != provider_id:
        if model.provider_id is None:
            return [
                ConfigIssue(
                    f"{name}.provider_id",
                    "a provider's key cannot subscribe to every provider's events; leave provider_id out",
                )
            ]
        return [ConfigIssue(f"{name}.provider_id", _no("providers", model.provider_id))]
    if model.url is None:
        return []
    from urllib.parse import urlsplit

    host = urlsplit(model.url).hostname or ""
    issues = _host_issues(f"{name}.url", host)
    if not issues:
        problem = literal_host_problem(host)
        if problem:
            issues = [ConfigIssue(f"{name}.url", problem)]
    return issues


COMPANY_FIELDS = {"datasets": ("attributes",)}
"""Fields a provider's key may not set: which attributes a dataset fills decides which of the company's
data streams its rows join (and with which values), so that is the company's choice."""


def _company_fields(principal: Principal, kind: str, body: Mapping[str, Any], stored: Mapping[str, Any]) -> None:
    if principal.provider_id is None:
        return
    for field in COMPANY_FIELDS.get(kind, ()):
        value = body.get(field)
        changed = field in body and value != stored.get(field)
        if changed and (stored.get(field) is not None or value not in (None, {})):
            raise ApiError(
                403, f"{SINGULAR[kind]}.{field}: set by the company (it decides which data streams the rows join)"
            )


def _no(kind: str, id: str) -> str:
    return f"no {SINGULAR[kind]} with id '{id}'"


def _with_defaults(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """Prequel's datasets have no name: ours take the table's name (or the id)."""
    if kind == "datasets" and "name" not in body:
        table = body.get("table")
        name = table.get("source_table_name") if isinstance(table, dict) else None
        body = {**body, "name": name if isinstance(name, str) and name else body["id"]}
    return body


def _raw_entries(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The YAML file's entries as written, by kind and id."""
    raw = parse_yaml(path.read_text(encoding="utf-8-sig"), str(path))
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in MODELS:
        items = raw.get(kind)
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                found.setdefault(kind, {})[item["id"]] = item
    return found


def _dump(model: Entry) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def shape(
    kind: str, model: Entry, body: dict[str, Any], created: str, updated: str, status: Mapping[str, Any]
) -> dict[str, Any]:
    """The seed's response fields for each kind."""
    out: dict[str, Any] = {"id": model.id, **{k: v for k, v in body.items() if k != "id"}}
    out["created_at"], out["updated_at"] = created, updated
    if kind == "streams":
        out.setdefault("is_enabled", model.is_enabled)  # type: ignore[attr-defined]
        return {k: out[k] for k in STREAM_FIELDS if k in out}
    if isinstance(model, Notification):
        out.setdefault("name", model.name)  # (as written: a YAML entry's ${VAR} is shown, never its value)
        out.setdefault("provider_id", model.provider_id)
        out.setdefault("events", list(model.events))
        out.setdefault("is_enabled", model.is_enabled)
        if model.vendor == "slack" and "url" in out:
            out["url"] = SLACK_WEBHOOK_PREFIX + MASK  # its path is the credential
        if model.api_key is not None:
            out["api_key"] = MASK  # write-only: shown set, never shown
        return out
    if kind == "sources":
        vendor = out.get("vendor")
        out["is_reachable"] = bool(status.get("is_reachable", False))
        block = out.get(vendor) if isinstance(vendor, str) else None
        if isinstance(block, dict):
            block = dict(block)
            block["is_valid"] = bool(status.get("is_valid", True))
            auth = block.get("password_auth")
            if isinstance(auth, dict) and "username" in auth:
                block.setdefault("username", auth["username"])
            live = getattr(model, vendor) if isinstance(vendor, str) else None
            timeout = getattr(live, "connection_timeout_in_seconds", None)
            if timeout is not None:
                block.setdefault("connection_timeout_in_seconds", timeout)
            out[vendor] = block  # type: ignore[index]
    return out
