"""Narrative's ``data_rules`` object as pydantic models, field for field as Narrative's "Create a
data-stream" API writes it (seed 002; spec-notes §7.3-7.5).

One model per shape: the field rules of ``column_sets`` and ``attributes``, the filter variants a
``FieldRule.filter`` takes (two named strings, include/exclude lists, ranges, recency windows,
expression lists), ``deduplication`` and ``frequency_filter``. Unknown keys are refused; every
problem is reported by :func:`parse_data_rules` as one :class:`RulesError` line naming the path
(``data_rules.column_sets[0].fields[6].filter.max.type``), what is wrong and the fix.

Accepted beyond the seed, because a YAML author writes them naturally: numbers and booleans where
the seed writes strings (list items, bound values; ``true`` becomes ``"true"``), a missing
``filter`` (= ``null``), a missing ``exported`` (= ``true``) or ``optional`` (= ``true``), and
``column_references`` given as plain column names, a frequency filter without ``min_inclusive``
(= 0) or with ``max_inclusive: null`` (no upper bound). Values the seed leaves as placeholders
(``"timestamp01"``) parse here; they are checked against the column's type when rules are applied.
"""

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from ..language.expressions import ExpressionError, parse_expression
from .durations import parse_duration


class RulesError(ValueError):
    """Data rules that cannot be used: the message names the path inside ``data_rules`` and the fix."""


def _as_text(value: Any) -> Any:
    """The seed writes list items and bounds as strings; take YAML scalars too (``true`` -> ``"true"``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_as_text)]


class _Block(BaseModel):
    """A nested object: unknown keys refused (the error lists the keys allowed there)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.alias or name for name, f in cls.model_fields.items()]


# ---------------------------------------------------------------------------- filters


class Bound(_Block):
    """One side of a range: ``{type: inclusive|exclusive, value: "<text parsed per the column's type>"}``."""

    type: Literal["inclusive", "exclusive"]
    value: Text


class ListFilter(_Block):
    """``{type: include|exclude, list: [...]}``: allow-list or deny-list, items as text."""

    type: Literal["include", "exclude"]
    list: Annotated[list[Text], Field(min_length=1)]


class RangeFilter(_Block):
    """``{min: Bound|null, max: Bound|null}``: at least one side."""

    min: Bound | None = None
    max: Bound | None = None

    @model_validator(mode="after")
    def _one_side(self) -> "RangeFilter":
        if self.min is None and self.max is None:
            raise ValueError(
                "a range needs 'min', 'max' or both; for 'any value' use "
                '"include_only_if_not_null_filter" or null (no filter)'
            )
        return self


def _duration_text(value: str) -> str:
    parse_duration(value)  # raises ValueError with the fix
    return value


Duration = Annotated[str, AfterValidator(_duration_text)]


class RecencyFilter(_Block):
    """``{recency: "P30D", from: Bound|null, to: Bound|null}``: a time window on a timestamp or date field."""

    recency: Duration | None = None
    from_: Bound | None = Field(default=None, alias="from")
    to: Bound | None = None

    @model_validator(mode="after")
    def _something(self) -> "RecencyFilter":
        if self.recency is None and self.from_ is None and self.to is None:
            raise ValueError("a recency filter needs 'recency' (an ISO-8601 duration such as \"P30D\"), 'from' or 'to'")
        return self


def _expression_text(value: str) -> str:
    try:
        parse_expression(value)
    except ExpressionError as exc:
        raise ValueError(f'{exc}; write a predicate such as "col9 > -90"') from None
    return value


class ExpressionsFilter(_Block):
    """``{expressions: ["col9 > -90", ...]}``: predicates in our expression language; all must hold."""

    expressions: Annotated[list[Annotated[str, AfterValidator(_expression_text)]], Field(min_length=1)]


NamedFilter = Literal["include_all_values_including_nulls_filter", "include_only_if_not_null_filter"]

_TAGS: dict[type[_Block], str] = {
    ListFilter: "<list filter>",
    RangeFilter: "<range filter>",
    RecencyFilter: "<recency filter>",
    ExpressionsFilter: "<expressions filter>",
}


def _filter_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "<named filter>"
    if isinstance(value, _Block):
        return _TAGS.get(type(value))
    if not isinstance(value, dict):
        return None
    if "expressions" in value:
        return "<expressions filter>"
    if "list" in value or "type" in value:
        return "<list filter>"
    if "recency" in value or "from" in value or "to" in value:
        return "<recency filter>"
    if "min" in value or "max" in value:
        return "<range filter>"
    return None


FILTER_FORMS = (
    'null, "include_all_values_including_nulls_filter", "include_only_if_not_null_filter", '
    "{type: include|exclude, list: [...]}, {min: {type, value}, max: {type, value}}, "
    '{recency: "P30D", from: {type, value}, to: {type, value}} or {expressions: ["..."]}'
)

Filter = Annotated[
    Annotated[NamedFilter, Tag("<named filter>")]
    | Annotated[ListFilter, Tag("<list filter>")]
    | Annotated[RangeFilter, Tag("<range filter>")]
    | Annotated[RecencyFilter, Tag("<recency filter>")]
    | Annotated[ExpressionsFilter, Tag("<expressions filter>")],
    Discriminator(
        _filter_kind,
        custom_error_type="filter_kind",
        custom_error_message=f"not a filter; a filter is one of {FILTER_FORMS}",
    ),
]


def _field_path(value: str) -> str:
    if not value or any(not part for part in value.split(".")):
        raise ValueError(f"'{value}' is not a field: give a column name or a dotted path such as col9.foo.bar")
    return value


FieldPath = Annotated[str, AfterValidator(_field_path)]


class FieldRule(_Block):
    """``{field, filter, exported}``: ``exported: false`` fields only filter; a field may repeat (all hold)."""

    field: FieldPath
    filter: Filter | None = None
    exported: bool = True


class ColumnSet(_Block):
    """Fields of one dataset (Narrative's numeric ``dataset_id``; ours may be a string id)."""

    dataset_id: int | str
    fields: list[FieldRule]


class Attribute(_Block):
    """Fields of one attribute; ``optional: false`` drops rows where the attribute is missing."""

    attribute_id: int | str
    fields: Annotated[list[FieldRule], Field(min_length=1)]
    optional: bool = True


# ---------------------------------------------------------------------------- dedup and frequency


class ColumnReference(_Block):
    """Not shown by Narrative (spec-notes §7.5); read as ``{dataset_id, column_names}`` like attribute references."""

    dataset_id: int | str | None = None
    column_names: Annotated[list[FieldPath], Field(min_length=1)]


class AttributeReference(_Block):
    attribute_id: int | str
    column_names: Annotated[list[FieldPath], Field(min_length=1)]


class _References(_Block):
    column_references: list[FieldPath | ColumnReference] | None = None
    attribute_references: list[AttributeReference] | None = None

    def referenced_fields(self) -> list[str]:
        """The fields whose values, combined, make a subject: column references first, no repeats."""
        names: dict[str, None] = {}
        for ref in self.column_references or []:
            for name in [ref] if isinstance(ref, str) else ref.column_names:
                names.setdefault(name)
        for aref in self.attribute_references or []:
            for name in aref.column_names:
                names.setdefault(name)
        return list(names)

    @model_validator(mode="after")
    def _some_reference(self) -> "_References":
        if not self.referenced_fields():
            raise ValueError(
                "name the fields that make a subject: column_references: [col] or "
                "attribute_references: [{attribute_id, column_names: [col]}]"
            )
        return self


class Deduplication(_References):
    """``{period: "P60D", column_references, attribute_references}``: a subject at most once per period."""

    period: Duration


class FrequencyFilter(_References):
    """Subjects seen ``min_inclusive`` to ``max_inclusive`` times (``null`` max: no upper bound)."""

    min_inclusive: Annotated[int, Field(ge=0)] = 0
    max_inclusive: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "FrequencyFilter":
        if self.max_inclusive is not None and self.max_inclusive < self.min_inclusive:
            raise ValueError(
                f"max_inclusive ({self.max_inclusive}) is below min_inclusive ({self.min_inclusive}); "
                "swap them or raise max_inclusive"
            )
        return self


class DataRules(_Block):
    """``data_rules``: which fields are delivered, which rows qualify, and how often a subject goes out."""

    column_sets: list[ColumnSet] | None = None
    attributes: list[Attribute] | None = None
    deduplication: Deduplication | None = None
    frequency_filter: FrequencyFilter | None = None


# ---------------------------------------------------------------------------- errors that name the path


def format_loc(prefix: str, loc: tuple[int | str, ...]) -> str:
    """``('column_sets', 0, 'fields', 2)`` -> ``data_rules.column_sets[0].fields[2]`` (union tags left out)."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("<") or part in ("function-after", "function-before"):
            continue
        else:
            out += f".{part}" if out else part
    return out


def _models_in(annotation: Any) -> list[type[_Block]]:
    if isinstance(annotation, type) and issubclass(annotation, _Block):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _model_at(loc: tuple[int | str, ...]) -> type[_Block] | None:
    """The model of the object at ``loc`` (for listing its keys)."""
    model: type[_Block] | None = DataRules
    tags: dict[str, type[_Block]] = {tag: cls for cls, tag in _TAGS.items()}
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        if part in tags:
            model = tags[part]
            continue
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return None
        found = _models_in(field.annotation)
        model = found[0] if len(found) == 1 else None
    return model


def _message(error: Any) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "extra_forbidden":
        model = _model_at(tuple(error["loc"][:-1]))
        allowed = f" (the keys here are: {', '.join(model.keys())})" if model else ""
        return f"unknown key; remove it{allowed}"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind == "missing":
        return "is required"
    if kind == "literal_error" and error["loc"] and error["loc"][-1] == "<named filter>":
        return f"{error['input']!r} is not a filter; a filter is one of {FILTER_FORMS}"
    return msg[0].lower() + msg[1:] if msg else msg


def parse_data_rules(raw: Any, *, where: str = "data_rules") -> DataRules:
    """``raw`` (parsed JSON/YAML) as :class:`DataRules`, or one :class:`RulesError` listing every problem."""
    try:
        return DataRules.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{format_loc(where, tuple(e['loc'])) or where}: {_message(e)}" for e in exc.errors()]
        noun = "problem" if len(lines) == 1 else "problems"
        raise RulesError(f"{len(lines)} data_rules {noun}:\n" + "\n".join(f"  {line}" for line in lines)) from None
