"""Request templates with Prequel's Go-template variables, parsed at config load.

Supported: ``{{.Record.<field>}}``, ``{{.Record.AsJson}}``, ``{{.IsDeleted}}``, ``{{.ProviderID}}``
and, in batch headers and uri, ``{{.Records[<i>].<field>}}``. Anything else is an error that gives
its position, raised when the config is loaded.

Values are data, never syntax: each action is encoded for the place it stands in, found when the
template is parsed. In a uri, a value is one percent-encoded path segment, or one encoded query
parameter value; actions may not stand in the scheme, host or port. In a JSON body, a value inside
a string literal is JSON-escaped, elsewhere it is a JSON value. In a header, a value that is not
printable ASCII is refused (:class:`UnsafeValue`), for that record alone.
"""

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import orjson

_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_VARIABLE = re.compile(
    r"^\.(?:(Record)\.([A-Za-z_][A-Za-z0-9_-]*)|(IsDeleted)|(ProviderID)|(Records)\[(\d+)\]\.([A-Za-z_][A-Za-z0-9_-]*))$"
)
HEADER_UNSAFE_PATTERN = r"[^\x20-\x7e]"
"""What a header value may not hold: anything but printable ASCII (CR/LF would split the header)."""
_HEADER_UNSAFE = re.compile(HEADER_UNSAFE_PATTERN)

Place = Literal["uri", "header", "body"]
Context = Literal["path", "query", "json_string", "json_value", "header"]


class TemplateError(ValueError):
    """A template that cannot be rendered; the message gives the character position."""


class UnsafeValue(ValueError):
    """A record's value that cannot be placed where the template puts it (the record is refused alone)."""


@dataclass(frozen=True)
class _Part:
    literal: str | None = None
    kind: str | None = None  # record_field, record_json, is_deleted, provider_id, records_field
    field: str | None = None
    index: int = 0
    context: Context = "header"


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[_Part, ...]
    place: Place = "header"

    @property
    def uses_record(self) -> bool:
        return any(p.kind in ("record_field", "record_json", "is_deleted") for p in self.parts)

    @property
    def uses_records(self) -> bool:
        return any(p.kind == "records_field" for p in self.parts)

    @property
    def fields(self) -> set[str]:
        """Record fields the template reads (``.Record.x`` and ``.Records[i].x``)."""
        return {p.field for p in self.parts if p.field is not None}

    def with_literals(self, resolve: Any) -> "Template":
        """The same template with each literal passed through ``resolve`` (secrets: ``${ENV}`` references)."""
        parts = tuple(_Part(literal=resolve(p.literal)) if p.literal is not None else p for p in self.parts)
        return Template(self.source, parts, self.place)

    def render(
        self,
        *,
        provider_id: str,
        record: dict[str, Any] | None = None,
        is_deleted: bool = False,
        records: list[dict[str, Any]] | None = None,
    ) -> str:
        """The text with every action replaced by its encoded value; raises :class:`UnsafeValue`."""
        out = []
        for p in self.parts:
            if p.literal is not None:
                out.append(p.literal)
                continue
            if p.kind == "provider_id":
                value: Any = provider_id
            elif p.kind == "is_deleted":
                value = is_deleted
            elif p.kind == "record_json":
                value = record or {}
            elif p.kind == "record_field":
                value = (record or {}).get(p.field)  # type: ignore[arg-type]
            else:
                rows = records or []
                value = rows[p.index].get(p.field) if p.index < len(rows) else None  # type: ignore[arg-type]
            out.append(_encode(value, p))
        text = "".join(out)
        if self.place == "uri":
            check_same_origin(self.source, text)
        return text


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _encode(value: Any, part: _Part) -> str:
    if part.context == "json_value":
        return orjson.dumps(value).decode()
    text = "true" if value is True else "false" if value is False else _text(value)
    if part.context == "json_string":
        return orjson.dumps(text).decode()[1:-1]
    if part.context in ("path", "query"):
        return quote(text, safe="")
    bad = _HEADER_UNSAFE.search(text)
    if bad:
        raise UnsafeValue(
            f"the value of {_name(part)} holds {bad.group()!r} (U+{ord(bad.group()):04X}), "
            "which a header cannot carry; only printable ASCII is sent in headers"
        )
    return text


def _name(part: _Part) -> str:
    return f"'{part.field}'" if part.field else part.kind or "the value"


def _origin(uri: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return parts.scheme.lower(), parts.hostname, port


def check_same_origin(template_source: str, rendered: str) -> None:
    """Refuse a rendered uri whose scheme, host or port differ from the template's own."""
    expected = _origin(_ACTION.sub("", template_source))
    if _origin(rendered) != expected or any(c in rendered for c in "\r\n\x00 "):
        raise UnsafeValue(
            f"the rendered uri does not stay on {expected[0]}://{expected[1]}:{expected[2] or ''}; "
            "record values may only fill path segments and query values"
        )


def _uri_contexts(source: str, actions: list[re.Match[str]]) -> list[Context]:
    """Where each action stands in a uri: a path segment or a query (or fragment) value."""
    blank = _ACTION.sub(lambda m: "\x00" * len(m.group()), source)
    scheme_end = blank.find("://")
    authority_start = scheme_end + 3 if scheme_end >= 0 else 0
    path_start = blank.find("/", authority_start)
    path_start = len(blank) if path_start < 0 else path_start
    query_start = min((i for i in (blank.find("?"), blank.find("#")) if i >= 0), default=len(blank))
    out: list[Context] = []
    for m in actions:
        if m.start() < path_start:
            raise TemplateError(
                f"'{m.group()}' at position {m.start() + 1} is in the uri's scheme, host or port; "
                "record values may only fill path segments and query values"
            )
        out.append("query" if m.start() > query_start else "path")
    return out


def _body_contexts(source: str, actions: list[re.Match[str]]) -> list[Context]:
    """Whether each action of a JSON body stands inside a string literal."""
    out: list[Context] = []
    in_string, escaped, pos = False, False, 0
    for m in actions:
        for ch in source[pos : m.start()]:
            if escaped:
                escaped = False
            elif ch == "\\" and in_string:
                escaped = True
            elif ch == '"':
                in_string = not in_string
        out.append("json_string" if in_string else "json_value")
        pos = m.end()
    return out


def parse_template(source: str, *, allow_record: bool, allow_records: bool, place: Place = "header") -> Template:
    """Parse once; raises :class:`TemplateError` naming the position of a bad action."""
    actions = list(_ACTION.finditer(source))
    if place == "uri":
        contexts = _uri_contexts(source, actions)
    elif place == "body":
        contexts = _body_contexts(source, actions)
    else:
        contexts = ["header"] * len(actions)
    parts: list[_Part] = []
    pos = 0
    for match, context in zip(actions, contexts):
        if match.start() > pos:
            parts.append(_Part(literal=source[pos : match.start()]))
        expr = match.group(1)
        where = f"at position {match.start() + 1}"
        m = _VARIABLE.match(expr)
        if expr == ".Record.AsJson":
            kind = _Part(kind="record_json", context=context)
        elif m is None:
            raise TemplateError(
                f"unsupported template action '{{{{{expr}}}}}' {where}; use .Record.<field>, .Record.AsJson, "
                ".IsDeleted, .ProviderID or .Records[<i>].<field>"
            )
        elif m.group(1):
            kind = _Part(kind="record_field", field=m.group(2), context=context)
        elif m.group(3):
            kind = _Part(kind="is_deleted", context=context)
        elif m.group(4):
            kind = _Part(kind="provider_id", context=context)
        else:
            kind = _Part(kind="records_field", index=int(m.group(6)), field=m.group(7), context=context)
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
    return Template(source, tuple(parts), place)
