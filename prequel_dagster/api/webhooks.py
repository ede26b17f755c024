"""Prequel's notification subscriptions: ``GET|POST /webhooks`` and ``GET|PATCH|DELETE /webhooks/{id}``.

A webhook is the ``notifications:`` entry of ``prequel.yaml`` (same fields), kept in the catalog. Bodies
are wrapped in ``webhook``; answers are Prequel's envelope, ``{"data": {"webhook": {...}}}``. A provider's
key sees and manages only the webhooks of its own provider (created without ``provider_id``, a webhook
is scoped to the key's provider), never the company's webhooks of every provider; the company's key
manages all. ``api_key`` and ``signing.private_key`` are write-only, and a Slack URL's path (its
credential) is shown as ``********``; a body as GET returned it can be sent back in a PATCH.
"""

from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..catalog.entries import SINGULAR
from ..catalog.store import CatalogError
from ..config.models import SLACK_WEBHOOK_PREFIX
from ..config.secrets import MASK
from . import envelope
from .app import _in_thread, _read_only, next_url, page_args, principal, wrapped
from .service import ApiError, Service

KIND = "notifications"
NAME = SINGULAR[KIND]  # "webhook"
TAG = "Webhooks"


def register_webhooks(app: FastAPI, service: Service) -> None:
    def create(request: Request, body: dict[str, Any]) -> Response:
        made = service.create(principal(request), KIND, body)
        return envelope.success({NAME: made}, f"{NAME} created")

    async def create_route(request: Request) -> Response:
        body = await wrapped(request, NAME)
        return await _in_thread(create, request, body)  # type: ignore[no-any-return]

    def list_route(request: Request) -> Response:
        who = principal(request)
        size, descending, cursor = page_args(request)
        try:
            found, more = service.list(who, KIND, page_size=size, descending=descending, cursor=cursor)
        except CatalogError as exc:
            raise ApiError(400, f"cursor: {exc}") from None
        return envelope.success({f"{NAME}s": found, **next_url(request, more)}, f"{len(found)} {NAME}s")

    def get_route(request: Request, id: str) -> Response:
        found = service.get(principal(request), KIND, id)
        read_only = _read_only(service, KIND, id)
        message = f"{NAME} (declared in the YAML config: read-only here)" if read_only else NAME
        return envelope.success({NAME: found}, message, headers=read_only)

    def update(request: Request, id: str, patch: dict[str, Any]) -> Response:
        who = principal(request)
        if patch.get("url") == SLACK_WEBHOOK_PREFIX + MASK:
            patch = {k: v for k, v in patch.items() if k != "url"}  # the URL as GET shows it: keep the stored one
        changed = service.update(who, KIND, id, patch)
        return envelope.success({NAME: changed}, f"{NAME} updated")

    async def update_route(request: Request, id: str) -> Response:
        patch = await wrapped(request, NAME)
        return await _in_thread(update, request, id, patch)  # type: ignore[no-any-return]

    def delete_route(request: Request, id: str) -> Response:
        service.delete(principal(request), KIND, id)
        return envelope.success({NAME: {"id": id}}, f"{NAME} deleted")

    add = app.add_api_route
    add(
        "/webhooks",
        create_route,
        methods=["POST"],
        tags=[TAG],
        summary="Create webhook",
        operation_id="create-webhook",
        openapi_extra=_body("CreateWebhookRequest"),
    )
    add("/webhooks", list_route, methods=["GET"], tags=[TAG], summary="List webhooks")
    add("/webhooks/{id}", get_route, methods=["GET"], tags=[TAG], summary="Get webhook")
    add(
        "/webhooks/{id}",
        update_route,
        methods=["PATCH"],
        tags=[TAG],
        summary="Update webhook",
        openapi_extra=_body("UpdateWebhookRequest"),
    )
    add("/webhooks/{id}", delete_route, methods=["DELETE"], tags=[TAG], summary="Delete webhook")


def _body(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        }
    }
