"""The OpenAPI document at ``/openapi.json``, with the schema names of Prequel's own (``CreateStreamRequest``...)."""

from functools import cache
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..catalog.entries import MODELS, SINGULAR

_MAPPING = {
    "properties": {
        "field_type": {"type": "string", "description": "Type of field mapping (field or expression)."},
        "column": {"additionalProperties": {"type": "string"}, "type": "object"},
        "expression": {"additionalProperties": {"type": "string"}, "type": "object"},
        "target_field": {"type": "string", "description": "The target field name in the destination."},
    },
    "additionalProperties": False,
    "type": "object",
    "required": ["field_type", "target_field"],
}
_STREAM_RESOURCE = {
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "is_enabled": {"type": "boolean"},
        "destination_id": {"type": "string"},
        "dataset_id": {"type": "string"},
        "mappings": {"items": {"$ref": "#/components/schemas/MappingResource"}, "type": "array"},
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
    },
    "additionalProperties": False,
    "type": "object",
    "required": ["id", "name", "is_enabled", "destination_id", "dataset_id", "mappings", "created_at", "updated_at"],
}
ERROR_RESPONSE = {
    "properties": {
        "status": {"type": "string", "const": "error"},
        "message": {"type": "string"},
        "data": {"type": "null"},
    },
    "type": "object",
    "required": ["status", "message"],
}


@cache
def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {"ErrorResponse": ERROR_RESPONSE, "MappingOptions": _MAPPING, "MappingResource": _MAPPING}
    for kind, model in MODELS.items():
        name = SINGULAR[kind]
        title = name.capitalize()
        options = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        for sub, schema in options.pop("$defs", {}).items():
            schemas.setdefault(sub, schema)
        if kind != "providers":  # ids are the server's, except a provider's
            options["properties"].pop("id", None)
            options["required"] = [r for r in options.get("required", []) if r != "id"]
        schemas[f"{title}Options"] = options
        schemas[f"Create{title}Request"] = {
            "properties": {name: {"$ref": f"#/components/schemas/{title}Options"}},
            "additionalProperties": False,
            "type": "object",
            "required": [name],
        }
        schemas[f"Update{title}Request"] = {
            "properties": {name: {"type": "object", "description": f"The {name}'s fields to change (merge patch)."}},
            "additionalProperties": False,
            "type": "object",
            "required": [name],
        }
        resource = (
            _STREAM_RESOURCE if kind == "streams" else {"type": "object", "description": f"A {name}, secrets removed."}
        )
        schemas[f"{title}Resource"] = resource
        schemas[f"Get{title}Response"] = {
            "properties": {name: {"$ref": f"#/components/schemas/{title}Resource"}},
            "additionalProperties": False,
            "type": "object",
            "required": [name],
        }
    schemas["StreamOptions"]["properties"]["mappings"] = {
        "items": {"$ref": "#/components/schemas/MappingOptions"},
        "type": "array",
    }
    return schemas


def document(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        doc = get_openapi(title="Prequel Data Import (prequel-dagster)", version="2023-12-01", routes=app.routes)
        doc.setdefault("components", {}).setdefault("schemas", {}).update(_components())
        doc["components"]["securitySchemes"] = {"ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "X-API-KEY"}}
        doc["security"] = [{"ApiKeyAuth": []}]
        app.openapi_schema = doc
    return app.openapi_schema
