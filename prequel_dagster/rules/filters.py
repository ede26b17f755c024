"""One ``FieldRule.filter`` as a boolean mask over a batch, typed by the field's Arrow type.

List items and bounds are text in Narrative's API; they are parsed with the type of the column they
are compared with, once per batch (a few values, not per row): integers, floats and decimals as
numbers, booleans as ``"true"``/``"false"`` (any case), timestamps and dates as ISO-8601 (a timestamp
without a zone is UTC; a zoned bound against a zoneless column is compared in UTC), strings as
they are. A value that does not parse is a :class:`RulesError` naming the item and the field's type.

Null values (the seed is silent; SQL's reading, chosen so that every behaviour can be composed):

- ``null`` and ``include_all_values_including_nulls_filter`` keep every row (no mask);
- ``include_only_if_not_null_filter`` keeps rows with a value;
- ``{type: include}``, ranges, recency windows and expressions are predicates on the value: a null
  value satisfies none of them and the row is dropped (an expression that is null counts as false);
- ``{type: exclude}`` drops rows whose value is in the list; a null is not in the list, so the row is
  kept. To drop nulls too, add ``include_only_if_not_null_filter`` on the same field (a field may
  repeat; all its filters hold).

``recency: P30D`` keeps values at or after *now* minus the duration (no upper limit: a future
timestamp is recent); ``from``/``to`` add absolute bounds. Lists are exact matches (no "broad
match" on text).
"""

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from ..config.data_rules import Bound, ExpressionsFilter, Filter, ListFilter, RangeFilter, RecencyFilter, RulesError
from ..config.durations import parse_duration
from ..language.expressions import ExpressionError, evaluate, parse_expression, referenced_columns
from .fields import FieldResolver, is_text

Mask: TypeAlias = pa.BooleanArray

NOT_NULL = "include_only_if_not_null_filter"
ALL_VALUES = "include_all_values_including_nulls_filter"


def is_noop(flt: Filter | None) -> bool:
    """Filters that keep every row: ``null`` and ``include_all_values_including_nulls_filter``."""
    return flt is None or flt == ALL_VALUES


def describe(flt: Filter | None) -> str:
    """A short human reading of a filter, for counts and ``explain_row``."""
    if flt is None or isinstance(flt, str):
        return {None: "no filter", ALL_VALUES: "any value, nulls included", NOT_NULL: "not null"}[flt]
    if isinstance(flt, ListFilter):
        items = ", ".join(f'"{v}"' for v in flt.list[:5]) + (", ..." if len(flt.list) > 5 else "")
        return f"{flt.type} [{items}]"
    if isinstance(flt, RangeFilter):
        return _describe_bounds(flt.min, flt.max)
    if isinstance(flt, RecencyFilter):
        parts = [f"within {flt.recency} of now"] if flt.recency else []
        if flt.from_ or flt.to:
            parts.append(_describe_bounds(flt.from_, flt.to))
        return ", ".join(parts)
    return " and ".join(flt.expressions)


def _describe_bounds(low: Bound | None, high: Bound | None) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low.type == 'inclusive' else '>'} {low.value}")
    if high is not None:
        parts.append(f"{'<=' if high.type == 'inclusive' else '<'} {high.value}")
    return " and ".join(parts)


def filter_mask(
    flt: Filter | None, field: str, resolver: FieldResolver, *, where: str, now: dt.datetime
) -> Mask | None:
    """The rows ``flt`` keeps (True) as a mask without nulls, or None when it keeps every row.

    ``where`` is the rule's path (``data_rules.column_sets[0].fields[3].filter``) for error messages.
    """
    if is_noop(flt):
        return None
    if isinstance(flt, ExpressionsFilter):
        return _expressions_mask(flt, resolver, where=where, now=now)
    values = resolver.values(field, where=where)
    if flt == NOT_NULL:
        return pc.is_valid(values)
    if isinstance(flt, ListFilter):
        if pa.types.is_null(values.type):  # no value in this batch: in no list
            return pa.repeat(pa.scalar(flt.type == "exclude"), len(values))
        value_set = parse_values(flt.list, values.type, field=field, where=f"{where}.list")
        found = pc.is_in(values, value_set=value_set)  # a null value is in no list: false
        return found if flt.type == "include" else pc.invert(found)
    if isinstance(flt, RangeFilter):
        return _between(values, flt.min, flt.max, field=field, where=where, low_key="min", high_key="max")
    assert isinstance(flt, RecencyFilter)
    return _recency_mask(flt, values, field=field, where=where, now=now)


# ---------------------------------------------------------------------------- typed values


def parse_values(texts: Sequence[str], t: pa.DataType, *, field: str, where: str) -> pa.Array:
    """List items or bounds (text) as an array of the field's type ``t``."""
    if is_text(t):
        return pa.array(list(texts), t)
    if pa.types.is_null(t):
        return pa.nulls(len(texts))  # a field without values anywhere in this batch matches nothing
    parse = _parser(t, field=field, where=where)
    return pa.array([parse(text, i) for i, text in enumerate(texts)], t)


def _parser(t: pa.DataType, *, field: str, where: str) -> Callable[[str, int], object]:
    def fail(text: str, i: int, example: str) -> RulesError:
        at = f"{where}[{i}]" if where.endswith(".list") else where
        return RulesError(f"{at}: {text!r} is not a valid {t} value (field '{field}' is {t}); write {example}")

    if pa.types.is_boolean(t):

        def boolean(text: str, i: int) -> object:
            if text.strip().lower() not in ("true", "false"):
                raise fail(text, i, '"true" or "false"')
            return text.strip().lower() == "true"

        return boolean
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        example = '"100" or "-90"' if pa.types.is_integer(t) else '"100" or "-0.5"'

        def number(text: str, i: int) -> object:
            try:
                return pa.array([text.strip()]).cast(t)[0].as_py()
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise fail(text, i, f"a number such as {example}") from None

        return number
    if pa.types.is_timestamp(t):

        def timestamp(text: str, i: int) -> object:
            try:
                moment = dt.datetime.fromisoformat(text.strip())
            except ValueError:
                raise fail(
                    text, i, 'an ISO-8601 timestamp such as "2021-12-10 12:00:00" or "2021-12-10T12:00:00Z"'
                ) from None
            return align_moment(moment, t)

        return timestamp
    if pa.types.is_date(t):

        def date(text: str, i: int) -> object:
            try:
                return dt.date.fromisoformat(text.strip())
            except ValueError:
                raise fail(text, i, 'an ISO-8601 date such as "2021-12-10"') from None

        return date
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return lambda text, i: text.encode()

    def unsupported(text: str, i: int) -> object:
        raise RulesError(
            f"{where}: field '{field}' is {t}, which a list or range cannot be compared with; "
            "filter a leaf with a dotted path (col.key) or use an expressions filter"
        )

    return unsupported


def align_moment(moment: dt.datetime, t: pa.TimestampType) -> dt.datetime:
    """A moment in the zone convention of column type ``t``: aware (UTC if naive) or naive UTC."""
    if t.tz:
        return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _bound_scalar(bound: Bound, t: pa.DataType, *, field: str, where: str) -> pa.Scalar:
    if pa.types.is_boolean(t) or pa.types.is_struct(t) or pa.types.is_list(t) or pa.types.is_map(t):
        raise RulesError(
            f"{where}: field '{field}' is {t}, which has no order; use an include/exclude list"
            if pa.types.is_boolean(t)
            else f"{where}: field '{field}' is {t}, which a range cannot be compared with; filter a leaf (col.key)"
        )
    return parse_values([bound.value], t, field=field, where=where)[0]


def _between(
    values: pa.Array,
    low: Bound | None,
    high: Bound | None,
    *,
    field: str,
    where: str,
    low_key: str,
    high_key: str,
) -> Mask:
    if pa.types.is_null(values.type):
        return pa.repeat(pa.scalar(False), len(values))
    mask = None
    for bound, key, strict, loose in (
        (low, low_key, pc.greater, pc.greater_equal),
        (high, high_key, pc.less, pc.less_equal),
    ):
        if bound is None:
            continue
        limit = _bound_scalar(bound, values.type, field=field, where=f"{where}.{key}.value")
        side = (loose if bound.type == "inclusive" else strict)(values, limit)
        mask = side if mask is None else pc.and_kleene(mask, side)
    assert mask is not None
    return pc.fill_null(mask, False)


def _recency_mask(flt: RecencyFilter, values: pa.Array, *, field: str, where: str, now: dt.datetime) -> Mask:
    t = values.type
    if not (pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_null(t)):
        raise RulesError(
            f"{where}: a recency filter needs a timestamp or date field, and '{field}' is {t}; "
            "use a range ({min, max}) for other types, or TIMESTAMPVALUE() in an expressions filter"
        )
    if pa.types.is_null(t):
        return pa.repeat(pa.scalar(False), len(values))
    mask = pa.repeat(pa.scalar(True), len(values))
    if flt.recency is not None:
        since = parse_duration(flt.recency).before(_aware(now))
        threshold: object = since.date() if pa.types.is_date(t) else align_moment(since, t)
        mask = pc.fill_null(pc.greater_equal(values, pa.scalar(threshold, t)), False)
    if flt.from_ is not None or flt.to is not None:
        window = _between(values, flt.from_, flt.to, field=field, where=where, low_key="from", high_key="to")
        mask = pc.and_(mask, window)
    return mask


def _aware(now: dt.datetime) -> dt.datetime:
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------- expressions


def _expressions_mask(flt: ExpressionsFilter, resolver: FieldResolver, *, where: str, now: dt.datetime) -> Mask:
    batch = resolver.batch
    mask = None
    for i, text in enumerate(flt.expressions):
        at = f"{where}.expressions[{i}]"
        node = parse_expression(text)  # checked when the rules were parsed
        for name in referenced_columns(node):  # dotted paths written as `col9.foo.bar`
            if name not in batch.schema.names and resolver.has(name):
                batch = batch.append_column(name, resolver.values(name, where=at))
        try:
            result = evaluate(node, batch, now=_aware(now))
        except ExpressionError as exc:
            raise RulesError(f"{at}: {exc}") from None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise RulesError(f"{at}: {text!r} cannot be computed on this data: {exc}") from None
        if not (pa.types.is_boolean(result.type) or pa.types.is_null(result.type)):
            raise RulesError(f'{at}: {text!r} gives {result.type}, not true/false; write a comparison such as "x > 0"')
        mask = result if mask is None else pc.and_kleene(mask, result)
    assert mask is not None
    return pc.fill_null(mask.cast(pa.bool_()), False)
