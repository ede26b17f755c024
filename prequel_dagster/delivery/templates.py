"""Request templates with Prequel's Go-template variables, parsed at config load.

Supported: ``{{.Record.<field>}}``, ``{{.Record.AsJson}}``, ``{{.IsDeleted}}``, ``{{.ProviderID}}``
and, in batch headers and uri, ``{{.Records[<i>].<field>}}``. Anything else is an error that gives
its position, raised when the config is loaded.
"""

import re
from dataclasses import dataclass
from typing import Any

import orjson

_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_VARIABLE = re.compile(r"^\.(?:(Record)\.([A-Za-z_][A-Za-z0-9_-]*)|(IsDeleted)|(ProviderID)|(Records)\[(\d+)\]\.([A-Za-z_][A-Za-z0-9_-]*))$")


class TemplateError(ValueError):
    """A template that cannot be rendered; the message gives the character position."""


@dataclass(frozen=True)
class _Part:
    literal: str | None = None
    kind: str | None = None  # record_field, record_json, is_deleted, provider_id, records_field
    field: str | None = None
    index: int = 0


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[_Part, ...]

    @property
    def is_static(self) -> bool:
        return all(p.literal is not None for p in self.parts)

    @property
    def uses_record(self) -> bool:
        return any(p.kind in ("record_field", "record_json", "is_deleted") for p in self.parts)

    @property
    def uses_records(self) -> bool:
        return any(p.kind == "records_field" for p in self.parts)

    def render(self, *, provider_id: str, record: dict[str, Any] | None = None, is_deleted: bool = False,
               records: list[dict[str, Any]] | None = None) -> str:
        out = []
        for p in self.parts:
            if p.literal is not None:
                out.append(p.literal)
            elif p.kind == "provider_id":
                out.append(provider_id)
            elif p.kind == "is_deleted":
                out.append("true" if is_deleted else "false")
            elif p.kind == "record_json":
                out.append(orjson.dumps(record or {}).decode())
            elif p.kind == "record_field":
                out.append(_text((record or {}).get(p.field)))  # type: ignore[arg-type]
            elif p.kind == "records_field":
                rows = records or []
                out.append(_text(rows[p.index].get(p.field) if p.index < len(rows) else None))  # type: ignore[arg-type]
        return "".join(out)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def parse_template(source: str, *, allow_record: bool, allow_records: bool) -> Template:
    """Parse once; raises :class:`TemplateError` naming the position of a bad action."""
    parts: list[_Part] = []
    pos = 0
    for match in _ACTION.finditer(source):
        if match.start() > pos:
            parts.append(_Part(literal=source[pos : match.start()]))
        expr = match.group(1)
        where = f"at position {match.start() + 1}"
        m = _VARIABLE.match(expr)
        if expr == ".Record.AsJson":
            kind = _Part(kind="record_json")
        elif m is None:
            raise TemplateError(
                f"unsupported template action '{{{{{expr}}}}}' {where}; use .Record.<field>, .Record.AsJson, "
                ".IsDeleted, .ProviderID or .Records[<i>].<field>"
            )
        elif m.group(1):
            kind = _Part(kind="record_field", field=m.group(2))
        elif m.group(3):
            kind = _Part(kind="is_deleted")
        elif m.group(4):
            kind = _Part(kind="provider_id")
        else:
            kind = _Part(kind="records_field", index=int(m.group(6)), field=m.group(7))
        if kind.kind in ("record_field", "record_json", "is_deleted") and not allow_record:
            raise TemplateError(f"'{{{{{expr}}}}}' {where} needs one record per request (type: webhook_record)")
        if kind.kind == "records_field" and not allow_records:
            raise TemplateError(f"'{{{{{expr}}}}}' {where} is only available in webhook_batch headers and uri")
        parts.append(kind)
        pos = match.end()
    if "{{" in source[pos:]:
        raise TemplateError(f"unclosed '{{{{' at position {source.index('{{', pos) + 1}")
    if pos < len(source):
        parts.append(_Part(literal=source[pos:]))
    return Template(source, tuple(parts))
