"""Stitch's Import API (``/v2/import/*``): pushed batches validated and staged durably in the lake of
the provider whose source the access token belongs to, before the client hears 2xx.

A token writes to one source of one provider: nothing in a body (``client_id``, ``table_name``)
can direct records anywhere else. Nothing waits for Dagster: staged batches are committed into
the provider's datasets later.
"""

import logging
import threading
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..catalog import push_tokens
from ..config.errors import PrequelError
from ..config.models import PrequelConfig
from ..config.secrets import redact
from ..push.staging import SDC_RECEIVED_AT, StagingUnavailable, stage, stage_request
from ..push.synthetic_keys import key_column
from ..push.wire import MAX_BODY_BYTES, BatchHead, WireError, check_batch, parse_push
from ..stores import Store, open_datalake
from .body import read_at_most
from .service import Principal, Service

log = logging.getLogger("prequel_dagster.api")

STATUS_BODY = {"name": "pipeline.gate", "version": "2", "revision": "prequel-dagster", "status": "OK", "reason": None}


def _answer(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _answer(status, {"status": "ERROR", "message": message})


class ImportApi:
    """The Import API's routes over the service's catalog and config."""

    def __init__(self, service: Service):
        self.service = service
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()
        self._pushed_tables: tuple[PrequelConfig, frozenset[tuple[str, str]]] | None = None

    def owner(self, request: Request) -> tuple[push_tokens.TokenOwner, PrequelConfig] | Response:
        """The token's source, if the token is live and its source still exists; else Stitch's 401."""
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "Not Authorized: send the source's access token as Authorization: Bearer <token>")
        owner = push_tokens.authenticate(self.service.catalog, token.strip())
        if owner is None:
            return _error(401, "Not Authorized: the access token is invalid or revoked")
        config = self.service.config()
        try:
            source = config.source(owner.source_id)
        except KeyError:
            return _answer(401, {"error": "Forbidden", "errors": {"error": "Connection is not active."}})
        if source.provider_id != owner.provider_id or source.vendor != "import_api":
            return _answer(401, {"error": "Forbidden", "errors": {"error": "Connection is not active."}})
        return owner, config

    def _has_dataset(self, config: PrequelConfig, source_id: str, table_name: str) -> bool:
        """Whether a dataset of the source already reads the pushed table (every request asks: the
        answer is kept for the config, which is replaced, never changed, when the catalog or YAML does)."""
        found = self._pushed_tables
        if found is None or found[0] is not config:
            tables = frozenset((d.source_id, d.push.table_name) for d in config.datasets if d.push is not None)
            found = self._pushed_tables = (config, tables)
        return (source_id, table_name) in found[1]

    def storage(self, config: PrequelConfig, provider_id: str) -> Store:
        datalake = config.datalake(config.provider(provider_id).datalake_id)
        with self._lock:
            store = self._stores.get(datalake.id)
            if store is None:
                store = self._stores[datalake.id] = open_datalake(datalake, config)
        return store

    def register(self, app: FastAPI) -> None:
        api = self

        async def status_route() -> Response:
            return _answer(200, STATUS_BODY)

        async def batch_route(request: Request) -> Response:
            return await api._accept(request, "batch")

        async def push_route(request: Request) -> Response:
            return await api._accept(request, "push")

        async def validate_route(request: Request) -> Response:
            return await api._accept(request, "validate")

        app.add_api_route("/v2/import/status", status_route, methods=["GET"], tags=["Import API"])
        app.add_api_route("/v2/import/batch", batch_route, methods=["POST"], tags=["Import API"])
        app.add_api_route("/v2/import/push", push_route, methods=["POST"], tags=["Import API"])
        app.add_api_route("/v2/import/validate", validate_route, methods=["POST"], tags=["Import API"])
        app.add_middleware(ImportLane, api=self)

    async def _accept(self, request: Request, kind: str) -> Response:
        found = await run_in_threadpool(self.owner, request)
        if isinstance(found, Response):
            return found
        owner, config = found
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _error(413, f"Request rejected: request size ({declared} bytes) exceeds the maximum")
        body = await read_at_most(request, MAX_BODY_BYTES)
        if body is None:  # a chunked body that kept going: never held whole
            return _error(413, f"Request rejected: request size (over {MAX_BODY_BYTES} bytes) exceeds the maximum")
        content_type = request.headers.get("content-type")
        return await run_in_threadpool(self._take, config, owner, kind, body, content_type)

    def _take(
        self, config: PrequelConfig, owner: push_tokens.TokenOwner, kind: str, body: bytes, content_type: str | None
    ) -> Response:
        """Check the body, then stage it: the answer (one hop to a thread for both, the CPU-bound part)."""
        try:
            if kind == "batch":  # staged as it arrived: checked here, its table built by the commit
                batches: list[Any] = [check_batch(body, content_type)]
            else:
                batches = parse_push(body, content_type, owner.client_id)
        except WireError as exc:
            if exc.plain:  # a few of Stitch's errors are plain strings
                return Response(exc.message, status_code=exc.status, media_type="text/plain")
            return _answer(exc.status, exc.body)
        if kind == "validate":
            return _answer(200, {"status": "OK", "message": "Batch is valid!"})
        try:
            self._stage_all(config, owner, batches, body)
        except StagingUnavailable as exc:
            log.error("push to source %s not staged: %s", owner.source_id, exc)
            return _error(503, "The Import API cannot take writes right now; send the batch again later")
        return _answer(201, {"status": "OK", "message": "Batch Accepted!"})

    def _dataset_for(self, config: PrequelConfig, owner: push_tokens.TokenOwner, batch: Any) -> None:
        """A table's first accepted batch makes it a push dataset of the provider (an asset once the
        definitions follow), keyed by its single key, else by the key column staging adds: a
        composite key's ``_sdc_primary_key``, or for an append-only table (no ``key_names``) each
        record's ``_sdc_record_id`` (a fact dataset by ``_sdc_received_at``)."""
        keys = batch.key_names or []
        if self._has_dataset(config, owner.source_id, batch.table_name):
            return  # (the request's config: the usual case costs no second look at the catalog)
        with self._lock:
            if self._has_dataset(self.service.config(), owner.source_id, batch.table_name):
                return
            key = key_column(keys) or keys[0]
            kind: dict[str, Any] = (
                {"type": "fact", "fact": {"primary_key_column": key, "created_at_column": SDC_RECEIVED_AT}}
                if not keys
                else {"type": "dimension", "dimension": {"primary_key_column": key}}
            )
            body = {
                "name": batch.table_name[:200],
                "source_id": owner.source_id,
                "method": "push",
                "push": {"table_name": batch.table_name},
                **kind,
                "frequency_minutes": 5,
            }
            try:
                self.service.create(Principal("import_api", None), "datasets", body)
            except Exception as exc:  # the batch is staged either way; the dataset can be declared by hand
                if self._has_dataset(self.service.config(), owner.source_id, batch.table_name):
                    return  # another API process made it first
                log.error("push to source %s: no dataset for table %r: %s", owner.source_id, batch.table_name, exc)

    def _stage_all(self, config: PrequelConfig, owner: push_tokens.TokenOwner, batches: list[Any], body: bytes) -> None:
        try:
            storage = self.storage(config, owner.provider_id)
        except Exception as exc:  # the lake cannot be opened: nothing accepted, the client retries
            log.error("push to source %s: the lake cannot be opened: %s", owner.source_id, redact(str(exc)))
            raise StagingUnavailable(type(exc).__name__) from exc
        for batch in batches:
            if isinstance(batch, BatchHead):
                stage_request(storage, owner.provider_id, owner.source_id, batch.table_name, body, records=batch.count)
            else:
                stage(storage, owner.provider_id, owner.source_id, batch)
            self._dataset_for(config, owner, batch)


class ImportLane:
    """The Import API's POSTs answered before FastAPI's routing and request machinery (the routes above
    stay for the OpenAPI document and the rest of the stack): a client pushing thousands of batches
    a minute pays for the checks and the write, not for the framework. Any other request passes on.
    Registered last (``add_middleware`` puts it outermost): a middleware added before it would not
    see these requests."""

    _KINDS = {"/v2/import/batch": "batch", "/v2/import/push": "push", "/v2/import/validate": "validate"}

    def __init__(self, app: ASGIApp, api: ImportApi):
        self.app, self.api = app, api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = None
        if scope["type"] == "http" and scope["method"] == "POST":
            path, root = scope["path"], scope.get("root_path", "")
            kind = self._KINDS.get(path[len(root) :] if root and path.startswith(root) else path)
        if kind is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await self.api._accept(Request(scope, receive), kind)
        except PrequelError as exc:  # the catalog or the config failed (the routes' handlers are not here)
            log.error("Import API %s not answered: %s", kind, redact(str(exc)))
            response = _error(503, "The Import API cannot take writes right now; send the batch again later")
        await response(scope, receive, send)
