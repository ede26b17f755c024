"""Narrative's data-stream API over the catalog (issue 14): ``POST|GET /data-stream``,
``GET|PUT|DELETE /data-stream/{id}``, ``GET /data-stream/company/{company_id}/host/{host_name}`` and
``GET /data-stream/{id}/usage``.

A data stream is the ``data_streams:`` entry of ``prequel.yaml`` (same fields, same checks), kept in the
catalog. As Narrative's API, bodies are the object itself (not Prequel's envelope) and answers are the
object with the server's fields: ``id`` (a UUID the server assigns), ``company_id``, ``created_by``
(the id of the API key that created it), ``created_at``, ``updated_at`` and ``datasets: null``. Every
field sent is returned as written (``data_rules`` exactly); an offer without an ``id`` gets one. ``PUT``
replaces the whole object (the server's fields in its body are ignored; an ``id`` must be the path's).

Only the company's key reaches these routes: a data stream combines providers' data (its
``auth_rules`` and ``data_rules`` name other providers' ids), so a provider's key gets 404 for
everything under ``/data-stream``, exactly as for a data stream that does not exist.

Errors are ``{"error": <code>, "message": <what is wrong and the fix>}`` (Narrative documents no error
body), with ``issues: [{path, message}]`` naming each field path when the body is not valid.
"""

import datetime as dt
import os
import uuid
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from ..config.data_streams import DataStream, data_stream_datalake_id
from ..config.errors import ConfigError, ConfigIssue
from ..config.loading import shape_issues
from .app import _holds_sealed, _in_thread, principal
from .body import read_json
from .service import ApiError, Principal, Service

KIND = "data_streams"
PREFIX = "data_stream"  # the service's name for a body's fields (``data_stream.data_rules...``)
TAG = "Data streams (Narrative)"
COMPANY_ID_ENV = "PREQUEL_COMPANY_ID"
NARRATIVE_FIELDS = ("name", "slug", "content", "tags", "category", "offers", "data_rules", "auth_rules")
OUR_FIELDS = ("datalake_id", "description")
SERVER_FIELDS = ("id", "company_id", "created_by", "created_at", "updated_at", "datasets")
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    503: "unavailable",
}


def owner_company_id() -> Any:
    """The company that owns every data stream of this deployment: ``$PREQUEL_COMPANY_ID`` (a number
    when it is one, as Narrative's), default 1."""
    value = os.environ.get(COMPANY_ID_ENV, "1").strip() or "1"
    return int(value) if value.isdigit() else value


def narrative_error(status: int, message: str, issues: list[ConfigIssue] | None = None) -> Response:
    body: dict[str, Any] = {"error": CODES.get(status, "error"), "message": message}
    if issues:
        body["issues"] = [{"path": _path(i.path), "message": i.message} for i in issues]
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _path(path: str) -> str:
    """``data_stream.data_rules.column_sets[0]`` -> ``data_rules.column_sets[0]`` (bodies are not wrapped)."""
    if path == PREFIX:
        return ""
    return path[len(PREFIX) + 1 :] if path.startswith(PREFIX + ".") else path


def _invalid(issues: list[ConfigIssue]) -> Response:
    text = "; ".join(f"{_path(i.path)}: {i.message}" if _path(i.path) else i.message for i in issues)
    return narrative_error(400, f"the data stream is not valid: {text}", issues)


def _answer(fn: Any, *args: Any) -> Any:
    """Run a route's work, answering its errors in this API's error shape."""
    try:
        return fn(*args)
    except ApiError as exc:
        if exc.issues:
            return _invalid(exc.issues)
        message = str(exc).replace("data_stream ", "data stream ").replace("data_streams", "data streams")
        return narrative_error(exc.status, message[len(PREFIX) + 1 :] if message.startswith(PREFIX + ".") else message)
    except ConfigError as exc:
        if exc.source != "request":
            raise  # the server's configuration: the app's handler logs it (500)
        return _invalid(list(exc.issues))


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json", headers=headers)


def _company(request: Request, id: str | None = None) -> Principal:
    """The caller, if it is the company's key; a provider's key reads as a data stream that does not exist."""
    who = principal(request)
    if who.provider_id is not None:
        if id is not None:
            raise ApiError(404, f"no data stream with id '{id}'")
        raise ApiError(404, "no data streams; data streams are managed with the company's API key")
    return who


async def _with_body(request: Request, action: Any, *ids: str) -> Response:
    """Answer ``action(request, *ids, body)``: the caller is checked first, then the body is read."""
    denied = await _in_thread(_answer, _company, request, *ids)
    if isinstance(denied, Response):
        return denied
    try:
        body = await _body(request)
    except ApiError as exc:
        return narrative_error(exc.status, str(exc))
    return await _in_thread(_answer, action, request, *ids, body)  # type: ignore[no-any-return]


async def _body(request: Request) -> dict[str, Any]:
    """The data stream object (not wrapped), checked for size, depth and catalog-internal values."""
    data = await read_json(request, fix="send the data stream object")
    if not isinstance(data, dict):
        raise ApiError(400, 'the request body must be the data stream object: {"name": ..., "slug": ..., ...}')
    issues = shape_issues(data)
    if issues:
        raise ApiError(400, (f"{issues[0].path}: " if issues[0].path else "") + issues[0].message)
    if _holds_sealed(data):
        raise ApiError(400, "'$sealed' values are the catalog's own; remove them")
    return data


def _stored_body(body: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a body: the server's fields dropped, and an ``id`` for each offer that has none."""
    out = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
    offers = out.get("offers")
    if isinstance(offers, list):
        out["offers"] = [
            {"id": str(uuid.uuid4()), **o} if isinstance(o, dict) and o.get("id") is None else o for o in offers
        ]
    return out


def resource(service: Service, model: DataStream) -> dict[str, Any]:
    """The data stream as Narrative answers it: its fields as written, with the server's."""
    shown = service.view(KIND, model)
    out: dict[str, Any] = {"id": model.id, "company_id": owner_company_id()}
    for field in NARRATIVE_FIELDS:
        out[field] = shown.get(field)
    if isinstance(out["offers"], list):  # a YAML offer without an id: the ledger's (usage rows name it so)
        out["offers"] = [
            {"id": f"{o.get('channel')}-{i}", **o} if isinstance(o, dict) and o.get("id") is None else o
            for i, o in enumerate(out["offers"])
        ]
    for field in OUR_FIELDS:
        if shown.get(field) is not None:
            out[field] = shown[field]
    out["created_by"] = shown.get("created_by")
    out["created_at"], out["updated_at"] = shown.get("created_at"), shown.get("updated_at")
    out["datasets"] = None
    return out


def _model(service: Service, who: Principal, id: str) -> DataStream:
    _, model = service.find(who, KIND, id)
    return model  # type: ignore[return-value]


def register_data_streams(app: FastAPI, service: Service) -> None:
    def create(request: Request, body: dict[str, Any]) -> Response:
        who = _company(request)
        if "id" in body:
            raise ApiError(400, "id: ids of data streams are assigned by the server; remove it")
        stored = {**_stored_body(body), "created_by": who.key_id}
        made = service.create(who, KIND, stored)
        return _json(resource(service, _model(service, who, made["id"])))

    async def create_route(request: Request) -> Response:
        return await _with_body(request, create)

    def list_records(request: Request) -> list[dict[str, Any]]:
        who = _company(request)
        found, _ = service.list(who, KIND, page_size=1 << 30, descending=False, cursor=None)
        return [resource(service, _model(service, who, d["id"])) for d in found]

    def list_route(request: Request) -> Response:
        return _answer(lambda: _json({"records": list_records(request)}))

    def host_route(request: Request, company_id: str, host_name: str) -> Response:
        """A company's data streams sold in the data shop at ``host_name`` (an offer on ``data_shop`` whose
        ``shops`` name it, or are null: any shop)."""

        def run() -> Response:
            records = list_records(request)
            if company_id != str(owner_company_id()):
                return _json({"records": []})
            host = host_name.lower()
            return _json({"records": [r for r in records if _sold_at(r, host)]})

        return _answer(run)

    def get_route(request: Request, id: str) -> Response:
        def run() -> Response:
            model = _model(service, _company(request, id), id)
            read_only = {"X-Prequel-Read-Only": "true"} if service.is_yaml(KIND, id) else None
            return _json(resource(service, model), headers=read_only)

        return _answer(run)

    def update(request: Request, id: str, body: dict[str, Any]) -> Response:
        who = _company(request, id)
        if "id" in body and body["id"] != id:
            raise ApiError(400, f"id: '{body['id']}' is not the path's id '{id}'; an id cannot be changed")
        stored = service.stored(KIND, id)
        created_by = stored.body.get("created_by") if stored is not None else None
        service.update(who, KIND, id, {**_stored_body(body), "created_by": created_by}, replace=True)
        return _json(resource(service, _model(service, who, id)))

    async def update_route(request: Request, id: str) -> Response:
        return await _with_body(request, update, id)

    def delete_route(request: Request, id: str) -> Response:
        def run() -> Response:
            service.delete(_company(request, id), KIND, id)
            return _json({"id": id})

        return _answer(run)

    def usage_route(request: Request, id: str) -> Response:
        """The usage ledger of the data stream: records and cost per day, provider, stream and offer."""

        def run() -> Response:
            model = _model(service, _company(request, id), id)
            q = request.query_params
            since = None
            if q.get("since"):
                try:
                    since = dt.date.fromisoformat(q["since"])
                except ValueError:
                    raise ApiError(400, f"since: {q['since']!r} is not a date; write YYYY-MM-DD") from None
            return _json({"records": usage_rows(service, model, since=since, provider_id=q.get("provider_id"))})

        return _answer(run)

    add = app.add_api_route
    add(
        "/data-stream", create_route, methods=["POST"], tags=[TAG], summary="Create a data-stream", openapi_extra=_doc()
    )
    add("/data-stream", list_route, methods=["GET"], tags=[TAG], summary="List data-streams")
    add(
        "/data-stream/company/{company_id}/host/{host_name}",
        host_route,
        methods=["GET"],
        tags=[TAG],
        summary="List a company's data-streams sold at a data-shop host",
    )
    add("/data-stream/{id}", get_route, methods=["GET"], tags=[TAG], summary="Get a data-stream")
    add(
        "/data-stream/{id}",
        update_route,
        methods=["PUT"],
        tags=[TAG],
        summary="Update a data-stream (full replace)",
        openapi_extra=_doc(),
    )
    add("/data-stream/{id}", delete_route, methods=["DELETE"], tags=[TAG], summary="Delete a data-stream")
    add("/data-stream/{id}/usage", usage_route, methods=["GET"], tags=[TAG], summary="A data-stream's usage")


def _sold_at(record: dict[str, Any], host: str) -> bool:
    for offer in record.get("offers") or []:
        if isinstance(offer, dict) and offer.get("channel") == "data_shop":
            shops = offer.get("shops")
            if shops is None or host in {str(s).lower() for s in shops}:
                return True
    return False


def usage_rows(
    service: Service, model: DataStream, *, since: dt.date | None, provider_id: str | None
) -> list[dict[str, Any]]:
    """The ledger's rows of one data stream (``micro_cents``: the exact cost; ``cost_usd`` = it / 10^8)."""
    from ..lake.usage import read_usage
    from ..stores import open_datalake

    config = service.config()
    try:
        lake = config.datalake(data_stream_datalake_id(config, model))
    except KeyError:
        return []  # no datalake: nothing was ever delivered
    store = open_datalake(lake, config)
    rows = read_usage(store, data_stream_id=model.id, since=since, provider_id=provider_id)
    return [{**r.as_dict(), "micro_cents": r.micro_cents} for r in rows]


def _doc() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Data_streamOptions"}}},
        }
    }
