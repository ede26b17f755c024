"""``record_schema`` regular expressions in linear time, on every path.

The vectorised checks already use Arrow's RE2. The per-record ``jsonschema`` path (nested
properties, ``patternProperties``) would use Python's backtracking ``re``, where ``^(a+)+$`` on a
27-character tenant value takes seconds and doubles per character. These keywords send every
match through RE2 instead.
"""

from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def search(pattern: str, text: str) -> bool:
    """``re.search`` semantics (unanchored), with RE2's linear-time guarantee."""
    return bool(pc.match_substring_regex(pa.array([text], pa.string()), pattern)[0].as_py())


def unsupported(pattern: str) -> str | None:
    """Why RE2 cannot run ``pattern`` (backreferences, look-around), or None."""
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return str(exc).split(":", 1)[-1].strip() or "not a supported regular expression"
    return None


def schema_patterns(node: Any) -> Iterator[str]:
    """Every ``pattern`` and ``patternProperties`` key anywhere in a JSON Schema."""
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        if isinstance(node.get("patternProperties"), dict):
            yield from (k for k in node["patternProperties"] if isinstance(k, str))
        for value in node.values():
            yield from schema_patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from schema_patterns(value)


def _extras_message(extras: list[str]) -> str:
    return f"additional properties are not allowed ({', '.join(map(repr, extras))})"


def linear_validator_class(base: Any = None, extras_message: Callable[[list[str]], str] = _extras_message) -> Any:
    """``base`` (default ``Draft7Validator``) whose ``pattern``, ``patternProperties`` and
    ``additionalProperties`` use RE2; ``extras_message`` words the refusal of unlisted properties."""
    import jsonschema
    from jsonschema import ValidationError

    def pattern(validator: Any, patrn: str, instance: Any, schema: dict) -> Iterator[ValidationError]:
        if validator.is_type(instance, "string") and not search(patrn, instance):
            yield ValidationError(f"{instance[:80]!r} does not match {patrn!r}")

    def matches_any(schema: dict, name: str) -> bool:
        return any(search(p, name) for p in schema.get("patternProperties", {}))

    def pattern_properties(validator: Any, patterns: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
        if validator.is_type(instance, "object"):
            for patrn, subschema in patterns.items():
                for key, value in instance.items():
                    if search(patrn, key):
                        yield from validator.descend(value, subschema, path=key, schema_path=patrn)

    def additional_properties(validator: Any, ap: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
        if not validator.is_type(instance, "object"):
            return
        known = schema.get("properties", {})
        extras = sorted(k for k in instance if k not in known and not matches_any(schema, k))
        if validator.is_type(ap, "object"):
            for extra in extras:
                yield from validator.descend(instance[extra], ap, path=extra)
        elif ap is False and extras:
            yield ValidationError(extras_message(extras))

    return jsonschema.validators.extend(
        base or jsonschema.Draft7Validator,
        {"pattern": pattern, "patternProperties": pattern_properties, "additionalProperties": additional_properties},
    )
