"""Secret values: resolved from the environment only when used, masked everywhere else.

A :class:`Secret` keeps the *template* (``"${ACME_PG_PASSWORD}"``), never the value; ``reveal()``
resolves it at connection time and registers the value with :func:`redact`, so any message
the product emits afterwards has it replaced by ``***``.
"""

import os
import re
import threading
from typing import Any
from urllib.parse import quote, unquote

from pydantic_core import core_schema

ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
MASK = "********"

_revealed: dict[str, str] = {}  # a revealed text -> what replaces it in messages
_revealed_lock = threading.Lock()


class MissingEnvironmentVariable(ValueError):
    def __init__(self, name: str):
        self.name = name
        super().__init__(f"environment variable {name} is not set; export it before running")


def interpolate(text: str, environ: dict[str, str] | None = None) -> str:
    """Replace every ``${VAR}`` (or ``${VAR:-default}``) with its value; a missing variable is an error."""
    env = os.environ if environ is None else environ

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise MissingEnvironmentVariable(name)

    return ENV_PATTERN.sub(value, text)


def register_secret_value(value: str) -> None:
    """Remember a secret value so that :func:`redact` masks it from now on.

    A value shaped like a query string (an Azure SAS token) has its parameters registered too: SDKs
    quote them reordered and re-encoded (``...?skoid=...&sp=rl&sig=...``), never as the configured
    text. Each ``name=value`` is masked as ``name=***`` in every encoding; long values (signatures,
    object ids, timestamps) wherever they appear.
    """
    masks = {value: "***"} if len(value) >= 4 else {}  # masking 1-3 characters would garble every message
    if _QUERY_STRING.fullmatch(value):
        for part in value.lstrip("?").split("&"):
            name, _, raw = part.partition("=")
            if len(raw) < 4:
                continue  # a flag (sp=rl, sr=c): no secret, and too common to mask
            for form in {raw, unquote(raw), quote(unquote(raw), safe="")}:
                masks[f"{name}={form}"] = f"{name}=***"
                if len(form) >= 16 and name.lower() not in _PUBLIC_PARAMETERS:
                    masks[form] = "***"
    if masks:
        with _revealed_lock:
            _revealed.update(masks)


_QUERY_STRING = re.compile(r"\??[A-Za-z][\w.-]*=[^&\s]*(?:&[A-Za-z][\w.-]*=[^&\s]*)+")
_PUBLIC_PARAMETERS = {"sv", "skv", "spr", "sp", "ss", "srt", "sr", "sks", "sip", "sdd"}
"""SAS parameters that are versions, flags or ranges: masked as ``name=value`` only, never bare."""

# a signature runs to the next parameter: base64 ones may hold "/"; the sk* parameters of a user
# delegation SAS name the signing principal and key
_SIGNATURE_PARAMETER = re.compile(
    r"(?i)\b(sig|signature|x-amz-signature|x-goog-signature|x-amz-security-token"
    r"|skoid|sktid|skt|ske|saoid|suoid|scid)=[^&\s'\"]+"
)


def redact(text: str) -> str:
    """Mask every secret value revealed so far in this process, and URL signatures (an SDK may quote
    a shared access signature in another encoding than the one configured)."""
    with _revealed_lock:
        masks = sorted(_revealed.items(), key=lambda item: len(item[0]), reverse=True)
    for value, mask in masks:
        if value in text:
            text = text.replace(value, mask)
    return _SIGNATURE_PARAMETER.sub(r"\1=***", text)


class Secret:
    """A secret config value. ``str()`` and ``repr()`` never show it; ``reveal()`` does."""

    __slots__ = ("_literal", "_template")

    def __init__(self, template: str, *, literal: bool = False):
        self._template = template
        self._literal = literal  # a value from the catalog: never read as ``${ENV}`` references

    @property
    def literal(self) -> bool:
        return self._literal

    @property
    def template(self) -> str:
        """The configured text (``${ENV}`` references, or a literal): for parsing only, never for display."""
        return self._template

    def reveal(self) -> str:
        value = self._template if self._literal else interpolate(self._template)
        register_secret_value(value)
        return value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (other._template, other._literal) == (self._template, self._literal)

    def __hash__(self) -> int:
        return hash((self._template, self._literal))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        def build(value: Any, info: core_schema.ValidationInfo) -> "Secret":
            if isinstance(value, Secret):
                return value
            literal = bool(info.context and info.context.get("literal"))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise ValueError("expected a string (use ${ENV_VAR} to read it from the environment)")
            if not literal and not ENV_PATTERN.search(value):
                register_secret_value(value)  # a literal secret of the config is masked too
            # (a catalog value registers when revealed: a tenant's rejected bodies must not grow the registry)
            return cls(value, literal=literal)

        return core_schema.with_info_plain_validator_function(
            build, serialization=core_schema.plain_serializer_function_ser_schema(lambda s: MASK)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        """A write-only string in the API's OpenAPI document."""
        return {"type": "string", "writeOnly": True, "format": "password"}
