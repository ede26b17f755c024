"""Applying a stream's ``data_rules`` to a batch: filters, then deduplication, then the frequency
filter, then the projection to exported fields, all vectorised (Arrow masks, numpy hashes).

Order of the rules, which is also the order in which a dropped row is charged to one of them (so
``rows_in`` = the drops + ``rows_out``): the filters of ``column_sets`` (fields in order), then for
each attribute its presence check (``optional: false``) and its filters, then ``deduplication``,
then ``frequency_filter``. Filters that keep every row (``null``,
``include_all_values_including_nulls_filter``) are not rules here and have no count.

Attributes are taken as already materialised into columns (the provider-column-to-attribute
mapping happens before); an attribute is *present* in a row when at least one of its fields has a
value. With ``optional: true`` its filters only judge rows where it is present; with ``optional:
false`` rows without it are dropped (counted as ``attributes[i]``) and its filters judge the rest.

Delivered columns: every field with ``exported: true`` once (a field listed twice is exported if
any entry says so), named by its ``field`` text (``col9.foo.bar`` for a path), in first-listed
order. When no field is exported (or there are no field lists), every column is kept: the rules
only choose rows.

Across batches and loads: give each call the ``pending_state`` of the previous one, and once the
load's delivery is committed write it with ``commit_state`` (see ``state``).
"""

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..config.data_rules import DataRules, Filter, FrequencyFilter, RulesError, parse_data_rules
from ..config.durations import Duration, parse_duration
from .dedup import candidates, record
from .fields import FieldResolver
from .filters import describe, filter_mask, is_noop
from .frequency import counts_in_rows, state_counts, within
from .hashing import column_hashes, column_key, combine, subject_hashes
from .state import RulesState, aware, empty_state, epoch_seconds, fingerprint

DEDUPLICATION = "deduplication"
FREQUENCY_FILTER = "frequency_filter"
_GROUP_KEY = 0x6A09E667F3BCC908  # the frequency subject's hash key, derived from the state's
_DEDUP = "data_rules.deduplication"
_FREQ = "data_rules.frequency_filter"


@dataclass(frozen=True)
class RuleInfo:
    """A rule that can drop rows: ``key`` is its path in ``data_rules`` (``column_sets[0].fields[3]``,
    ``attributes[1]``, ``deduplication``, ``frequency_filter``)."""

    key: str
    field: str | None
    description: str


@dataclass(frozen=True)
class _FieldCheck:
    info: RuleInfo
    field: str
    filter: Filter | None  # None: the attribute presence check
    attribute: int | None  # the attribute this check belongs to
    optional: bool


@dataclass(frozen=True)
class CompiledRules:
    """``data_rules`` prepared once: the checks in order, the exported fields, the subject fields."""

    rules: DataRules
    checks: tuple[_FieldCheck, ...]
    attribute_fields: dict[int, tuple[str, ...]]
    exported: tuple[str, ...]
    exported_at: dict[str, str]  # each exported field's first rule, for error messages
    subject_fields: tuple[str, ...]
    group_fields: tuple[str, ...]
    period: Duration | None
    fingerprint: str

    @property
    def infos(self) -> list[RuleInfo]:
        out = [c.info for c in self.checks]
        dedup, frequency = self.rules.deduplication, self.rules.frequency_filter
        if dedup is not None:
            subject = ", ".join(self.subject_fields)
            out.append(
                RuleInfo(DEDUPLICATION, None, f"{subject} delivered within {dedup.period}, or earlier in this batch")
            )
        if frequency is not None:
            most = "or more" if frequency.max_inclusive is None else f"to {frequency.max_inclusive}"
            times = f"{frequency.min_inclusive} {most} times"
            out.append(RuleInfo(FREQUENCY_FILTER, None, f"{', '.join(self.group_fields)} not seen {times}"))
        return out


def compile_rules(rules: DataRules | Mapping[str, Any]) -> CompiledRules:
    """Check and prepare ``rules`` (a :class:`DataRules` or its JSON form)."""
    if not isinstance(rules, DataRules):
        rules = parse_data_rules(rules)
    checks: list[_FieldCheck] = []
    exported: dict[str, str] = {}
    attribute_fields: dict[int, tuple[str, ...]] = {}
    for i, column_set in enumerate(rules.column_sets or []):
        for j, rule in enumerate(column_set.fields):
            if rule.exported:
                exported.setdefault(rule.field, f"column_sets[{i}].fields[{j}]")
            if not is_noop(rule.filter):
                info = RuleInfo(f"column_sets[{i}].fields[{j}]", rule.field, f"{rule.field}: {describe(rule.filter)}")
                checks.append(_FieldCheck(info, rule.field, rule.filter, None, False))
    for i, attribute in enumerate(rules.attributes or []):
        fields = tuple(dict.fromkeys(rule.field for rule in attribute.fields))
        attribute_fields[i] = fields
        if not attribute.optional:
            info = RuleInfo(
                f"attributes[{i}]",
                None,
                f"attribute {attribute.attribute_id} missing (optional: false; none of {', '.join(fields)} has a value)",
            )
            checks.append(_FieldCheck(info, fields[0], None, i, False))
        for j, rule in enumerate(attribute.fields):
            if rule.exported:
                exported.setdefault(rule.field, f"attributes[{i}].fields[{j}]")
            if not is_noop(rule.filter):
                info = RuleInfo(f"attributes[{i}].fields[{j}]", rule.field, f"{rule.field}: {describe(rule.filter)}")
                checks.append(_FieldCheck(info, rule.field, rule.filter, i, attribute.optional))
    dedup, frequency = rules.deduplication, rules.frequency_filter
    return CompiledRules(
        rules=rules,
        checks=tuple(checks),
        attribute_fields=attribute_fields,
        exported=tuple(exported),
        exported_at=exported,
        subject_fields=tuple(dedup.referenced_fields()) if dedup else (),
        group_fields=tuple(frequency.referenced_fields()) if frequency else (),
        period=parse_duration(dedup.period) if dedup else None,
        fingerprint=fingerprint(rules),
    )


@dataclass(frozen=True)
class RulesResult:
    """What the rules did to one batch."""

    table: pa.Table  # the kept rows, exported fields only
    kept: pa.BooleanArray  # per input row
    counts: dict[str, int]  # rows_in, dropped_by.<rule key>..., rows_out
    pending_state: RulesState  # give to the next batch; commit after delivery
    rules: list[RuleInfo]
    dropped_by: pa.Array | None = None  # with explain=True: per input row, the key of the rule that dropped it

    def explain(self, row: int) -> RuleInfo | None:
        """The rule that dropped input row ``row`` (None: it was kept); needs ``explain=True``."""
        if self.dropped_by is None:
            raise ValueError("call apply_rules(..., explain=True) to ask which rule dropped a row")
        key = self.dropped_by[row].as_py()
        return None if key is None else next(r for r in self.rules if r.key == key)


def apply_rules(
    table: pa.Table | pa.RecordBatch,
    rules: DataRules | CompiledRules | Mapping[str, Any],
    *,
    state: RulesState | None = None,
    now: dt.datetime | None = None,
    explain: bool = False,
) -> RulesResult:
    """Apply ``rules`` to ``table``. ``state``: the stream's subjects (``load_state``, or the previous
    batch's ``pending_state``); without one, deduplication starts from nothing. ``now`` (default: the
    clock, UTC if naive) anchors recency filters and the deduplication period."""
    compiled = rules if isinstance(rules, CompiledRules) else compile_rules(rules)
    now = aware(now or dt.datetime.now(dt.UTC))
    batch = _one_batch(table)
    n = batch.num_rows
    resolver = FieldResolver(batch)
    infos = compiled.infos
    counts: dict[str, int] = {"rows_in": n}
    blame = np.full(n, -1, np.int16) if explain else None

    alive: pa.BooleanArray | None = None
    presence: dict[int, pa.BooleanArray] = {}
    for index, check in enumerate(compiled.checks):
        where = f"data_rules.{check.info.key}"
        if check.attribute is not None and (check.filter is None or check.optional):
            if check.attribute not in presence:
                presence[check.attribute] = _present(resolver, compiled.attribute_fields[check.attribute], where)
        if check.filter is None:
            assert check.attribute is not None
            mask = presence[check.attribute]
        else:
            mask = filter_mask(check.filter, check.field, resolver, where=f"{where}.filter", now=now)
            assert mask is not None
            if check.optional and check.attribute is not None:
                mask = pc.or_(mask, pc.invert(presence[check.attribute]))
        before = n if alive is None else alive.true_count
        if blame is not None:
            dropped = pc.invert(mask) if alive is None else pc.and_not(alive, mask)
            blame[dropped.to_numpy(zero_copy_only=False)] = index
        alive = mask if alive is None else pc.and_(alive, mask)
        counts[f"dropped_by.{check.info.key}"] = before - alive.true_count

    rows = np.arange(n) if alive is None else np.flatnonzero(alive.to_numpy(zero_copy_only=False))
    if compiled.subject_fields:
        rows, pending, dedup_dropped, freq_dropped = _deduplicate(
            batch,
            resolver,
            rows,
            compiled,
            _checked_state(state, compiled),
            now=now,
            blame=blame,
            first_index=len(compiled.checks),
        )
        counts[f"dropped_by.{DEDUPLICATION}"] = dedup_dropped
        if compiled.group_fields:
            counts[f"dropped_by.{FREQUENCY_FILTER}"] = freq_dropped
    else:
        pending = state if state is not None else empty_state(compiled.rules)
    if compiled.group_fields and not compiled.subject_fields:  # the window: this call's rows
        groups = subject_hashes(
            _values_at(resolver, compiled.group_fields, rows, alive, "data_rules.frequency_filter"),
            0,
            fields=compiled.group_fields,
            where="data_rules.frequency_filter",
        )
        keep = within(counts_in_rows(groups), _frequency(compiled))
        if blame is not None:
            blame[rows[~keep]] = len(compiled.checks)
        counts[f"dropped_by.{FREQUENCY_FILTER}"] = int((~keep).sum())
        rows = rows[keep]

    kept_np = np.zeros(n, np.bool_)
    kept_np[rows] = True
    kept = pa.array(kept_np, pa.bool_())
    counts["rows_out"] = len(rows)
    return RulesResult(
        table=_project(batch, resolver, kept, compiled, all_kept=len(rows) == n),
        kept=kept,
        counts=counts,
        pending_state=pending,
        rules=infos,
        dropped_by=None if blame is None else _blame_keys(blame, infos),
    )


def explain_row(
    table: pa.Table | pa.RecordBatch,
    rules: DataRules | CompiledRules | Mapping[str, Any],
    row: int,
    *,
    state: RulesState | None = None,
    now: dt.datetime | None = None,
) -> RuleInfo | None:
    """Which rule drops row ``row`` of ``table`` (None: the row is delivered). Deduplication and the
    frequency filter depend on the other rows, so the whole table is evaluated, as a load would."""
    if not 0 <= row < table.num_rows:
        raise IndexError(f"row {row} is outside the table's {table.num_rows} rows")
    return apply_rules(table, rules, state=state, now=now, explain=True).explain(row)


# ---------------------------------------------------------------------------- steps


def _one_batch(table: pa.Table | pa.RecordBatch) -> pa.RecordBatch:
    if isinstance(table, pa.RecordBatch):
        return table
    combined = table.combine_chunks()
    batches = combined.to_batches()
    return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)


def _present(resolver: FieldResolver, fields: tuple[str, ...], where: str) -> pa.BooleanArray:
    mask = None
    for name in fields:
        valid = pc.is_valid(resolver.values(name, where=where))
        mask = valid if mask is None else pc.or_(mask, valid)
    assert mask is not None
    return mask


def _values_at(
    resolver: FieldResolver, fields: tuple[str, ...], rows: np.ndarray, alive: pa.BooleanArray | None, where: str
) -> list[pa.Array]:
    values = [resolver.values(name, where=where) for name in fields]
    if alive is None and len(rows) == resolver.batch.num_rows:
        return values
    index = pa.array(rows, pa.int64())
    return [v.take(index) for v in values]


def _frequency(compiled: CompiledRules) -> FrequencyFilter:
    assert compiled.rules.frequency_filter is not None
    return compiled.rules.frequency_filter


def _checked_state(state: RulesState | None, compiled: CompiledRules) -> RulesState:
    if state is None:
        return empty_state(compiled.rules)
    if state.fingerprint != compiled.fingerprint:
        raise RulesError(
            "data_rules.deduplication: the state was loaded for other subject fields; "
            "load it with load_state(store, directory, rules) for these rules"
        )
    return state


def _deduplicate(
    batch: pa.RecordBatch,
    resolver: FieldResolver,
    rows: np.ndarray,
    compiled: CompiledRules,
    state: RulesState,
    *,
    now: dt.datetime,
    blame: np.ndarray | None,
    first_index: int,
) -> tuple[np.ndarray, RulesState, int, int]:
    """:func:`_deduplicate_subjects` over the rows that have a subject. A row whose subject fields are
    all null has none (a missing or mistyped field, a provider that does not fill the attribute): it
    is kept, neither deduplicated nor counted, instead of all such rows collapsing into one subject."""
    no_subject = np.ones(len(rows), np.bool_)
    for name in compiled.subject_fields:
        values = _take(resolver.values(name, where=_DEDUP), rows)
        no_subject &= np.asarray(pc.is_null(values).to_numpy(zero_copy_only=False), np.bool_)
    if not no_subject.any():
        return _deduplicate_subjects(
            batch, resolver, rows, compiled, state, now=now, blame=blame, first_index=first_index
        )
    if no_subject.all():
        return rows, state, 0, 0
    kept, pending, dedup_dropped, freq_dropped = _deduplicate_subjects(
        batch, resolver, rows[~no_subject], compiled, state, now=now, blame=blame, first_index=first_index
    )
    return np.sort(np.concatenate([kept, rows[no_subject]])), pending, dedup_dropped, freq_dropped


def _deduplicate_subjects(
    batch: pa.RecordBatch,
    resolver: FieldResolver,
    rows: np.ndarray,
    compiled: CompiledRules,
    state: RulesState,
    *,
    now: dt.datetime,
    blame: np.ndarray | None,
    first_index: int,
) -> tuple[np.ndarray, RulesState, int, int]:
    """The rows kept by deduplication and the frequency filter, the state with them pending, and the
    two drop counts."""
    assert compiled.period is not None
    key = column_key(state.seed)
    hashed = {  # per field, over the rows the filters kept (a field in both subjects is hashed once)
        name: column_hashes(_take(resolver.values(name, where=_DEDUP), rows), key, field=name, where=_DEDUP)
        for name in compiled.subject_fields
    }
    hashes = combine([hashed[name] for name in compiled.subject_fields], state.seed)
    cutoff = epoch_seconds(compiled.period.before(now))
    found = candidates(hashes, state, cutoff=cutoff)
    accepted = found.accepted
    accepted_at = found.first_rows[accepted]  # positions in rows, in hash order
    accepted_rows = rows[accepted_at]
    groups = None
    delivered = np.ones(len(accepted_rows), np.bool_)
    if compiled.group_fields:
        parts = [
            hashed[name][accepted_at]
            if name in hashed
            else column_hashes(_take(resolver.values(name, where=_FREQ), accepted_rows), key, field=name, where=_FREQ)
            for name in compiled.group_fields
        ]
        groups = combine(parts, state.seed ^ _GROUP_KEY)
        distinct, inverse = np.unique(groups, return_inverse=True)
        new = ~found.counted[accepted]  # not yet counted in the state's window
        in_batch = np.bincount(inverse, weights=new, minlength=len(distinct)).astype(np.int64)
        totals = state_counts(state, distinct, cutoff=cutoff) + in_batch
        delivered = within(totals[inverse], _frequency(compiled))
    pending = record(state, found, delivered=delivered, groups=groups, now=epoch_seconds(now))
    if blame is not None:
        duplicate = np.ones(len(rows), np.bool_)
        duplicate[accepted_at] = False
        blame[rows[duplicate]] = first_index
        blame[accepted_rows[~delivered]] = first_index + 1
    kept_rows = np.sort(accepted_rows[delivered])
    return kept_rows, pending, len(rows) - len(accepted_rows), int((~delivered).sum())


def _take(values: pa.Array, rows: np.ndarray) -> pa.Array:
    return values if len(rows) == len(values) else values.take(pa.array(rows, pa.int64()))


def _project(
    batch: pa.RecordBatch, resolver: FieldResolver, kept: pa.BooleanArray, compiled: CompiledRules, *, all_kept: bool
) -> pa.Table:
    if compiled.exported:
        names = list(compiled.exported)
        arrays = [resolver.values(name, where=f"data_rules.{compiled.exported_at[name]}") for name in names]
        selected = pa.Table.from_arrays(arrays, names=names)
    else:
        selected = pa.Table.from_batches([batch])
    return selected if all_kept else selected.filter(kept)


def _blame_keys(blame: np.ndarray, infos: list[RuleInfo]) -> pa.Array:
    keys = pa.array([info.key for info in infos] or [""], pa.string())
    indices = pa.array(blame.astype(np.int32), mask=blame < 0)
    return pa.DictionaryArray.from_arrays(indices, keys).cast(pa.string())
