"""The ASGI app: Prequel's ``/import/*`` management API over the catalog (FastAPI, mountable in yours).

FastAPI because it is the ecosystem's ASGI framework with OpenAPI built in, runs our synchronous
service code in its thread pool, and mounts into a user's own FastAPI or Starlette app.
"""

import logging
import uuid
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..catalog.entries import SINGULAR
from ..catalog.secret_fields import is_sealed
from ..catalog.store import Catalog, CatalogError
from ..config.errors import ConfigError, PrequelError
from ..config.loading import find_config_path, shape_issues
from ..config.secrets import redact
from . import envelope
from .body import read_json
from .openapi import document
from .service import IMPORT_KINDS, ApiError, Principal, Service

log = logging.getLogger("prequel_dagster.api")

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100


def create_app(
    catalog: Catalog | None = None,
    *,
    config_path: Path | None = None,
    service: Service | None = None,
    actions: Any = None,
) -> FastAPI:
    """The API over ``catalog`` (default: ``$PREQUEL_CATALOG_URL`` or ``.prequel/catalog.db``) and the YAML config."""
    if service is None:
        if catalog is None:
            catalog = Catalog.open()
            assert catalog is not None
        service = Service(catalog, config_path if config_path is not None else find_config_path())
    app = FastAPI(title="prequel-dagster", version="2023-12-01", docs_url="/docs", redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.actions = actions
    _errors(app)
    _routes(app, service)
    from .connect import Connect
    from .import_api import ImportApi

    ImportApi(service).register(app)
    Connect(service).register(app)
    from .webhooks import register_webhooks

    register_webhooks(app, service)
    from .data_streams import register_data_streams

    register_data_streams(app, service)
    if actions is not None:
        actions.register(app)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> Response:
        return Response(orjson.dumps(document(app)), media_type="application/json")

    return app


# ---------------------------------------------------------------------- authentication


def principal(request: Request) -> Principal:
    """The caller's key: ``X-API-KEY`` (Prequel) or ``Authorization: Bearer`` (Connect, Narrative)."""
    key = request.headers.get("x-api-key")
    if not key:
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        key = value.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise ApiError(401, "missing API key: send it as the X-API-KEY header (prequel-dagster api keys create)")
    service: Service = request.app.state.service
    found = service.catalog.authenticate(key)
    if found is None:
        raise ApiError(401, "invalid or revoked API key; create one with `prequel-dagster api keys create`")
    return Principal(found.id, found.provider_id)


async def wrapped(request: Request, name: str) -> dict[str, Any]:
    """The resource inside its wrapper key (``{"source": {...}}``); 400 naming what is wrong otherwise."""
    data = await read_json(request, fix=f'send {{"{name}": {{...}}}}')
    if not isinstance(data, dict) or name not in data:
        raise ApiError(400, f'the request body must be a JSON object {{"{name}": {{...}}}}')
    extra = sorted(set(data) - {name})
    if extra:
        raise ApiError(400, f'{extra[0]}: unknown key; the body holds only "{name}"')
    body = data[name]
    if not isinstance(body, dict):
        raise ApiError(400, f"{name}: expected an object")
    refuse_deep(body, name)
    if _holds_sealed(body):
        raise ApiError(400, f"{name}: '$sealed' values are the catalog's own; send secrets in clear")
    return body


def refuse_deep(body: Any, name: str) -> None:
    """A body nested deeper than a config may be (or expanding past its size limit): 400, measured
    without recursion, before anything walks it recursively."""
    issues = shape_issues(body)
    if issues:
        raise ApiError(400, f"{name}" + (f".{issues[0].path}" if issues[0].path else "") + f": {issues[0].message}")


def _holds_sealed(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if is_sealed(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def page_args(request: Request) -> tuple[int, bool, str | None]:
    q = request.query_params
    try:
        size = int(q.get("page_size", DEFAULT_PAGE_SIZE))
    except ValueError:
        raise ApiError(400, "page_size: expected an integer from 1 to 100") from None
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ApiError(400, "page_size: expected an integer from 1 to 100")
    order = q.get("order", "asc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order: expected 'asc' or 'desc'")
    return size, order == "desc", q.get("cursor") or None


def next_url(request: Request, cursor: str | None) -> dict[str, Any]:
    if cursor is None:
        return {"has_next": False}
    return {"has_next": True, "next_url": str(request.url.include_query_params(cursor=cursor))}


def flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------- routes


def _routes(app: FastAPI, service: Service) -> None:
    @app.get("/", include_in_schema=False)
    def root(request: Request) -> Response:
        principal(request)
        return envelope.success({"service": "prequel-dagster", "api_version": "2023-12-01"}, "the API is reachable")

    for kind in IMPORT_KINDS:
        _resource_routes(app, service, kind)


def _read_only(service: Service, kind: str, id: str) -> dict[str, str] | None:
    return {"X-Prequel-Read-Only": "true"} if service.is_yaml(kind, id) else None


def _resource_routes(app: FastAPI, service: Service, kind: str) -> None:
    name = SINGULAR[kind]
    tag = f"Import {kind.capitalize()}"
    title = name.capitalize()

    def create(request: Request, body: dict[str, Any]) -> Response:
        who = principal(request)
        made = service.create(who, kind, body, skip_validation=flag(request, "skip_validation"))
        return envelope.success({name: made}, f"{name} created")

    async def create_route(request: Request) -> Response:
        body = await wrapped(request, name)
        return await _in_thread(create, request, body)

    def list_route(request: Request) -> Response:
        who = principal(request)
        size, descending, cursor = page_args(request)
        try:
            found, more = service.list(who, kind, page_size=size, descending=descending, cursor=cursor)
        except CatalogError as exc:
            raise ApiError(400, f"cursor: {exc}") from None
        return envelope.success({kind: found, **next_url(request, more)}, f"{len(found)} {kind}")

    def get_route(request: Request, id: str) -> Response:
        who = principal(request)
        found = service.get(who, kind, id)
        read_only = _read_only(service, kind, id)
        message = f"{name} (declared in the YAML config: read-only here)" if read_only else name
        return envelope.success({name: found}, message, headers=read_only)

    def update(request: Request, id: str, patch: dict[str, Any]) -> Response:
        who = principal(request)
        changed = service.update(who, kind, id, patch, skip_validation=flag(request, "skip_validation"))
        return envelope.success({name: changed}, f"{name} updated")

    async def update_route(request: Request, id: str) -> Response:
        patch = await wrapped(request, name)
        return await _in_thread(update, request, id, patch)

    def delete_route(request: Request, id: str) -> Response:
        who = principal(request)
        service.delete(who, kind, id)
        return envelope.success({name: {"id": id}}, f"{name} deleted")

    base = f"/import/{kind}"
    app.add_api_route(
        base,
        create_route,
        methods=["POST"],
        tags=[tag],
        summary=f"Create import {name}",
        operation_id=f"create-import-{name}",
        openapi_extra=_body(f"Create{title}Request"),
    )
    app.add_api_route(base, list_route, methods=["GET"], tags=[tag], summary=f"List import {kind}")
    app.add_api_route(base + "/{id}", get_route, methods=["GET"], tags=[tag], summary=f"Get import {name}")
    app.add_api_route(
        base + "/{id}",
        update_route,
        methods=["PATCH"],
        tags=[tag],
        summary=f"Update import {name}",
        openapi_extra=_body(f"Update{title}Request"),
    )
    app.add_api_route(base + "/{id}", delete_route, methods=["DELETE"], tags=[tag], summary=f"Delete import {name}")


def _body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }


async def _in_thread(fn: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


# ---------------------------------------------------------------------- errors


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return envelope.error(exc.status, str(exc))

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> Response:
        issues = "; ".join(str(i) for i in exc.issues)
        if exc.source == "request":
            return envelope.error(400, f"the request is not valid: {issues}")
        incident = uuid.uuid4().hex[:12]
        log.error("incident %s: the configuration is not valid: %s", incident, redact(str(exc)))
        del issues  # other tenants' entries may be named: the details go to the log only
        return envelope.error(500, f"the server's configuration is not valid (incident {incident}); see the API's log")

    @app.exception_handler(PrequelError)
    async def prequel_error(request: Request, exc: PrequelError) -> Response:
        status = 503 if type(exc).__name__ == "DagsterUnavailable" else 400
        return envelope.error(status, redact(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = [".".join(str(p) for p in e["loc"] if p != "body") + ": " + e["msg"] for e in exc.errors()]
        return envelope.error(400, "the request is not valid: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = "no such endpoint; see /openapi.json" if exc.status_code == 404 else str(exc.detail)
        return envelope.error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        incident = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s %s: %s", incident, request.method, request.url.path, redact(repr(exc)))
        return envelope.error(500, f"internal error (incident {incident}); the API's log has the details")
