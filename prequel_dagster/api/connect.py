"""Stitch's Connect API for Import API sources (``/v4/...``): create a source for a provider, and
create, list and revoke its access tokens.

Authenticated with a management API key as ``Authorization: Bearer``. Which provider a source is
for: a provider's key creates sources for its own provider; the company's key names one with
``provider_id`` (our addition to Stitch's body). Connect's source object keeps Stitch's integer
``id`` and ``stitch_client_id`` (the ``client_id`` that ``/v2/import/push`` records carry).
"""

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..catalog import push_tokens
from .app import principal
from .body import MAX_MANAGEMENT_BODY_BYTES, read_at_most
from .service import ApiError, Principal, Service

REPORT_CARD = {
    "type": "platform.import_api",
    "current_step": 2,
    "current_step_type": "fully_configured",
    "steps": [{"type": "form", "properties": []}, {"type": "fully_configured", "properties": []}],
}
SOURCE_TYPE = {
    "type": "platform.import_api",
    "current_step": 1,
    "current_step_type": "form",
    "details": {
        "pricing_tier": "standard",
        "pipeline_state": "released",
        "default_scheduling_interval": 60,
        "default_start_date": "-30 days",
        "protocol": "import_api",
        "access": True,
    },
    "steps": REPORT_CARD["steps"],
}


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


class ConnectError(ApiError):
    """An error Connect answers in its own shape: ``{"error": "<Code>", "data": {"message": ...}}``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(status, message)
        self.code = code


# Connect's codes for the errors our service raises (by status) when no route names its own.
_CODES = {400: "InvalidBody", 401: "Unauthorized", 403: "AccessDenied", 404: "NotFound", 413: "InvalidBody"}


def _connect_error(exc: ApiError) -> Response:
    code = exc.code if isinstance(exc, ConnectError) else _CODES.get(exc.status, "Error")
    return _json(exc.status, {"error": code, "data": {"message": str(exc)}})


def _in_connect_shape(route: Callable[..., Any]) -> Callable[..., Any]:
    """The route's ApiErrors answered in Connect's shape (Stitch's clients read ``error``/``data``)."""
    if inspect.iscoroutinefunction(route):

        @functools.wraps(route)
        async def answer_async(*args: Any, **kwargs: Any) -> Any:
            try:
                return await route(*args, **kwargs)
            except ApiError as exc:
                return _connect_error(exc)

        return answer_async

    @functools.wraps(route)
    def answer(*args: Any, **kwargs: Any) -> Any:
        try:
            return route(*args, **kwargs)
        except ApiError as exc:
            return _connect_error(exc)

    return answer


def snake(name: str) -> str:
    """Stitch's schema name for a display name: ``Import API`` → ``import_api``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "import_api"


class Connect:
    def __init__(self, service: Service):
        self.service = service

    def source_object(self, source: push_tokens.PushSource) -> dict[str, Any]:
        config = self.service.config()
        model = config.source(source.source_id)
        display = (model.import_api.display_name if model.import_api else None) or model.name
        return {
            "id": source.id,
            "stitch_client_id": source.id,
            "type": "platform.import_api",
            "name": snake(display),
            "display_name": display,
            "provider_id": source.provider_id,
            "prequel_source_id": source.source_id,
            "created_at": source.created_at,
            "updated_at": source.created_at,
            "report_card": REPORT_CARD,
            "properties": {},
            "paused_at": None,
            "deleted_at": None,
        }

    def find(self, who: Principal, id: str) -> push_tokens.PushSource:
        """A push source this key may see; 404 alike for missing and another provider's."""
        found = push_tokens.push_source_by_id(self.service.catalog, int(id)) if id.isdigit() else None
        if found is None or (who.provider_id is not None and found.provider_id != who.provider_id):
            raise ConnectError(404, "NotFound", f"source not found ({id})")
        try:
            self.service.find(who, "sources", found.source_id)
        except ApiError:
            raise ConnectError(404, "NotFound", f"source not found ({id})") from None
        return found

    def _exists(self, source: push_tokens.PushSource) -> bool:
        try:
            self.service.config().source(source.source_id)
        except KeyError:
            return False
        return True

    def create_source(self, who: Principal, body: dict[str, Any]) -> dict[str, Any]:
        """Connect's ``POST /v4/sources``: Stitch's checks and codes; display names (as schema
        names) are unique among a provider's Import API sources."""
        kind = body.get("type")
        if kind not in ("import_api", "platform.import_api"):
            shown = kind.removeprefix("platform.") if isinstance(kind, str) else kind
            raise ConnectError(400, "InvalidType", f"invalid source type (platform.{shown}): only import_api")
        display = body.get("display_name")
        extra = sorted(set(body) - {"type", "display_name", "provider_id", "properties"})
        if not isinstance(display, str) or not display.strip() or extra:
            raise ConnectError(
                400,
                "InvalidBody",
                "POST body may only include a non-empty type, a non-empty display_name, a map of string "
                "properties and (with the company's key) provider_id"
                + (f"; unknown key {extra[0]!r}" if extra else ""),
            )
        if snake(display) == "import_api" and not re.search(r"[A-Za-z0-9]", display):
            raise ConnectError(
                400, "InvalidDisplayName", f"invalid name after deriving it from display_name ({display} -> )"
            )
        provider_id = who.provider_id or body.get("provider_id")
        if not isinstance(provider_id, str):
            raise ConnectError(
                400, "InvalidBody", "provider_id: the company's key names the provider the source is for"
            )
        taken = {
            snake(self.source_object(s)["display_name"])
            for s in push_tokens.push_sources(self.service.catalog, provider_id)
            if self._exists(s)
        }
        if snake(display) in taken:
            raise ConnectError(
                400,
                "InvalidName",
                f"non-unique name after deriving it from display_name ({display} -> {snake(display)})",
            )
        made = self.service.create(
            who,
            "sources",
            {
                "name": display,
                "vendor": "import_api",
                "provider_id": provider_id,
                "import_api": {"display_name": display},
            },
        )
        return self.source_object(push_tokens.push_source(self.service.catalog, made["id"], provider_id))

    def register(self, app: FastAPI) -> None:
        connect = self

        async def source_type_route(request: Request) -> Response:
            await run_in_threadpool(principal, request)
            return _json(200, SOURCE_TYPE)

        async def create_route(request: Request) -> Response:
            raw = await read_at_most(request, MAX_MANAGEMENT_BODY_BYTES)
            if raw is None:
                raise ConnectError(413, "InvalidBody", "the request body is too large")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ConnectError(400, "InvalidBody", f"the request body is not JSON ({exc})") from None
            if not isinstance(body, dict):
                raise ConnectError(400, "InvalidBody", "the request body must be a JSON object")
            who = await run_in_threadpool(principal, request)
            return _json(200, await run_in_threadpool(connect.create_source, who, body))

        def list_route(request: Request) -> Response:
            who = principal(request)
            found = push_tokens.push_sources(connect.service.catalog, who.provider_id)
            visible = []
            for source in found:
                try:
                    visible.append(connect.source_object(connect.find(who, str(source.id))))
                except (ApiError, KeyError):
                    continue  # deleted since
            return _json(200, visible)

        def get_route(request: Request, id: str) -> Response:
            return _json(200, connect.source_object(connect.find(principal(request), id)))

        def create_token_route(request: Request, id: str) -> Response:
            source = connect.find(principal(request), id)
            try:
                token_id, token = push_tokens.create_token(connect.service.catalog, source)
            except push_tokens.TooManyTokens as exc:
                raise ConnectError(400, "TooManyTokens", str(exc)) from None
            return _json(200, {"id": token_id, "access_token": token})

        def list_tokens_route(request: Request, id: str) -> Response:
            source = connect.find(principal(request), id)
            return _json(200, push_tokens.token_ids(connect.service.catalog, source.source_id))

        def revoke_token_route(request: Request, id: str, token_id: str) -> Response:
            source = connect.find(principal(request), id)
            if not token_id.isdigit() or not push_tokens.revoke_token(
                connect.service.catalog, source.source_id, int(token_id)
            ):
                raise ConnectError(404, "NotFound", f"no active access token with id {token_id} for source {id}")
            return _json(200, connect.source_object(source))

        def add(path: str, route: Callable[..., Any], **kwargs: Any) -> None:
            app.add_api_route(path, _in_connect_shape(route), **kwargs)

        add("/v4/source-types/import_api", source_type_route, methods=["GET"], tags=["Connect"])
        add("/v4/sources", create_route, methods=["POST"], tags=["Connect"])
        add("/v4/sources", list_route, methods=["GET"], tags=["Connect"])
        add("/v4/sources/{id}", get_route, methods=["GET"], tags=["Connect"])
        add("/v4/sources/{id}/tokens", create_token_route, methods=["POST"], tags=["Connect"])
        add("/v4/sources/{id}/tokens", list_tokens_route, methods=["GET"], tags=["Connect"])
        add("/v4/sources/{id}/tokens/{token_id}", revoke_token_route, methods=["DELETE"], tags=["Connect"])
