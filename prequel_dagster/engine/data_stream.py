"""Materializing a data stream (issue 14): the new rows of the datasets it reads, through its data
rules, committed to its own dataset log in the lake, which Prequel streams then deliver.

One run:

1. reads each source dataset's commits after the data stream's cursor for it (the cursor is one
   commit seq per ``<provider_id>/<dataset_id>``, kept in the data stream's commit manifest), for the
   datasets of providers its ``auth_rules.company_constraint`` admits only;
2. fills the attributes each dataset declares (``attributes: {<id>: <expression>}``) as columns, and
   adds ``_provider_id``, ``_dataset_id`` and ``_record_id`` (``<provider>/<dataset>/<primary key>``:
   the record's identity, from which delivery ids derive);
3. applies the data rules per dataset (the column sets of that dataset, every attribute rule, then
   deduplication and the frequency filter over all datasets together, with one state);
4. commits the rows kept to ``lakehouse/_data_streams/<id>/`` with the new cursor, and only then the
   deduplication state (its data file is written before the commit, which names it; a run that
   finds the commit's state not yet committed commits it first), so a crash between the two never
   forgets a subject the committed rows hold.

Deletes at a source (``_prequel_op = delete``) pass the rules (a record that leaves a provider's data
leaves the stream) and are counted as ``deletes``.
"""

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..config.data_rules import ColumnSet, FieldRule
from ..config.data_streams import (
    DATA_STREAMS_NAMESPACE,
    DATASET_COLUMN,
    PROVIDER_COLUMN,
    RECORD_ID_COLUMN,
    DataStream,
    data_stream_datalake_id,
    data_stream_sources,
)
from ..config.errors import PrequelError
from ..config.models import Dataset, PrequelConfig
from ..lake.changes import KeySnapshot, latest_versions
from ..lake.commits import OP_COLUMN, Commit, DatasetLog
from ..language.expressions import ExpressionError, evaluate, parse_expression
from ..rules import CompiledRules, DataRules, RulesError, RulesState, apply_rules, compile_rules, load_state
from ..rules.engine import DEDUPLICATION, FREQUENCY_FILTER
from ..rules.state import finish_state, prepare_state
from ..stores import Store, open_datalake

Log = Callable[[str], None]
SYSTEM_COLUMNS = (RECORD_ID_COLUMN, PROVIDER_COLUMN, DATASET_COLUMN, OP_COLUMN)
_ARROW = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}


class DataStreamError(PrequelError):
    """A data stream that cannot be materialized (bad rules for the data, an attribute that fails)."""


def data_stream_state_dir(data_stream_id: str) -> str:
    """Where a data stream's deduplication state lives in its datalake."""
    return f"artifacts/{DATA_STREAMS_NAMESPACE}/data_streams/{data_stream_id}/_rules_state"


@dataclass
class DataStreamResult:
    data_stream_id: str
    commit: Commit | None
    counts: dict[str, int]  # rows_in, dropped_by.<rule>, rows_out, deletes
    by_provider: dict[str, dict[str, int]]  # per provider: rows_in, rows_out
    sources: dict[str, tuple[int, int]]  # "<provider>/<dataset>": (after, through) commit seqs read
    seconds: float
    data_uri: str
    schema: pa.Schema | None = None
    row_count: int = 0
    recovered_state: bool = False
    skipped_providers: list[str] = field(default_factory=list)


def rules_for_dataset(rules: DataRules, dataset_id: str) -> DataRules:
    """The data rules as they judge one dataset's rows: its own column sets, every attribute rule,
    deduplication and the frequency filter; delivering the data stream's exported fields, every
    dataset alike (a field another dataset's column set exports is null here): no dataset's other
    columns ever go out because its own column set exports nothing."""
    sets = [c for c in rules.column_sets or [] if str(c.dataset_id) == dataset_id]
    own = {f.field for c in sets for f in c.fields if f.exported}
    others = [
        f.field
        for c in rules.column_sets or []
        if str(c.dataset_id) != dataset_id
        for f in c.fields
        if f.exported and f.field not in own
    ]
    if others:
        exported = [FieldRule(field=name, filter=None, exported=True) for name in dict.fromkeys(others)]
        sets = [*sets, ColumnSet(dataset_id=dataset_id, fields=exported)]
    return rules.model_copy(update={"column_sets": sets or None})


def prepare_rows(
    config: PrequelConfig,
    stream: DataStream,
    provider_id: str,
    dataset: Dataset,
    table: pa.Table,
    compiled: CompiledRules,
) -> pa.Table:
    """A source dataset's row versions as the rules see them: its columns, the attributes it fills,
    null columns for fields it lacks, and the system columns."""
    for attribute_id, fill in (dataset.attributes or {}).items():
        attribute = config.attribute(attribute_id)
        fills = {attribute.name: fill} if isinstance(fill, str) else fill
        for column, expr in fills.items():
            try:
                values = evaluate(parse_expression(expr), table)
            except ExpressionError as exc:  # the expression itself (config, not data)
                raise DataStreamError(
                    f"data stream '{stream.id}': dataset '{dataset.id}' attributes.{attribute_id}"
                    f"{'.' + column if not isinstance(fill, str) else ''} ({expr!r}) failed: {exc}"
                ) from None
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise DataStreamError(  # the rows' values are the provider's data: named by kind, never shown
                    f"data stream '{stream.id}': dataset '{dataset.id}' attributes.{attribute_id}"
                    f"{'.' + column if not isinstance(fill, str) else ''} ({expr!r}) failed on the dataset's "
                    f"values ({type(exc).__name__}); make the expression hold for every value (e.g. guard it "
                    "with a condition)"
                ) from None
            table = _set_column(table, column, values)
    types = _attribute_types(config, stream)
    for name in _fields(compiled):
        parts = name.split(".")
        if not any(".".join(parts[:i]) in table.column_names for i in range(len(parts), 0, -1)):
            table = table.append_column(parts[0], pa.nulls(table.num_rows, types.get(parts[0], pa.string())))
    n = table.num_rows
    key = pc.cast(table.column(dataset.primary_key), pa.string())
    prefix = f"{provider_id}/{dataset.id}/"
    record_ids = pc.binary_join_element_wise(pa.repeat(pa.scalar(prefix), n), key, "")
    table = _set_column(table, RECORD_ID_COLUMN, record_ids)
    table = _set_column(table, PROVIDER_COLUMN, pa.repeat(pa.scalar(provider_id), n))
    table = _set_column(table, DATASET_COLUMN, pa.repeat(pa.scalar(dataset.id), n))
    if OP_COLUMN not in table.column_names:
        table = table.append_column(OP_COLUMN, pa.repeat(pa.scalar("insert"), n))
    return table


def _set_column(table: pa.Table, name: str, values: Any) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def _fields(compiled: CompiledRules) -> list[str]:
    names: dict[str, None] = {}
    for check in compiled.checks:
        names.setdefault(check.field)
    for fields in compiled.attribute_fields.values():
        for name in fields:
            names.setdefault(name)
    for name in (*compiled.subject_fields, *compiled.group_fields, *compiled.exported):
        names.setdefault(name)
    return list(names)


def _attribute_types(config: PrequelConfig, stream: DataStream) -> dict[str, pa.DataType]:
    out: dict[str, pa.DataType] = {}
    for attribute_id in stream.attribute_ids():
        try:
            attribute = config.attribute(attribute_id)
        except KeyError:
            continue
        for column in attribute.columns():
            declared = attribute.column_json_type(column)
            out.setdefault(column, _ARROW.get(declared or "", pa.string()))
    return out


def split_deletes(table: pa.Table) -> tuple[pa.Table, pa.Table | None]:
    deleted = pc.fill_null(pc.equal(table.column(OP_COLUMN), "delete"), False)
    if not pc.any(deleted).as_py():
        return table, None
    return table.filter(pc.invert(deleted)), table.filter(deleted)


def kept_rows(table: pa.Table, compiled: CompiledRules, result_table: pa.Table, kept: pa.Array) -> pa.Table:
    """The rules' output with the system columns of the rows they kept."""
    if not compiled.exported:
        return result_table
    system = table.filter(kept).select(list(SYSTEM_COLUMNS))
    out = result_table
    for name in SYSTEM_COLUMNS:
        out = _set_column(out, name, system.column(name))
    return out


def retracted_rows(out_log: DatasetLog, record_ids: pa.Array) -> pa.Table | None:
    """``delete`` versions of the records among ``record_ids`` the data stream holds live, carrying
    the values it delivered (never a source's newer or undelivered values); None when none are."""
    if not len(record_ids) or out_log.latest() is None or out_log.schema() is None:
        return None  # nothing delivered yet (or commits of cursors only)
    held = latest_versions(out_log, pc.unique(record_ids), RECORD_ID_COLUMN)
    if held is None or not held.num_rows:
        return None
    live = held.filter(pc.fill_null(pc.not_equal(held.column(OP_COLUMN), "delete"), True))
    if not live.num_rows:
        return None
    ops = pa.repeat(pa.scalar("delete"), live.num_rows)
    return live.set_column(live.schema.get_field_index(OP_COLUMN), OP_COLUMN, ops)


def unadmitted_rows(out_log: DatasetLog, stream: DataStream) -> pa.Table | None:
    """``delete`` versions of the live records of providers the company constraint no longer admits."""
    if out_log.latest() is None or out_log.schema() is None:
        return None
    keys = KeySnapshot(out_log, RECORD_ID_COLUMN).all_keys()
    if not len(keys):
        return None
    providers = pc.list_element(pc.split_pattern(keys, "/", max_splits=1), 0)
    refused = [p for p in pc.unique(providers).to_pylist() if p is not None and not stream.allows(p)]
    if not refused:
        return None
    return retracted_rows(out_log, keys.filter(pc.is_in(providers, value_set=pa.array(refused, pa.string()))))


def filtered_out(live: pa.Table, result: Any) -> pa.Array:
    """Record ids of the rows a filter dropped (not deduplication or the frequency filter: a subject
    held back there was delivered, or may be later, and stays)."""
    by = result.dropped_by
    if by is None:
        return pa.array([], pa.string())
    held_back = pc.is_in(by, value_set=pa.array([DEDUPLICATION, FREQUENCY_FILTER], pa.string()))
    mask = pc.and_(pc.is_valid(by), pc.invert(pc.fill_null(held_back, False)))
    return live.column(RECORD_ID_COLUMN).filter(mask).combine_chunks()


# ---------------------------------------------------------------------------- a run


def _read_dataset(
    source_log: DatasetLog,
    after: int,
    through: int,
    config: PrequelConfig,
    stream: DataStream,
    provider_id: str,
    dataset: Dataset,
    compiled: CompiledRules,
    out_log: DatasetLog,
    state: RulesState | None,
    now: dt.datetime,
    outputs: list[pa.Table],
    counts: Counter[str],
) -> RulesState | None:
    """One source dataset's commits ``after``..``through`` through the rules: its kept rows, and the
    withdrawals of records it delivered, appended to ``outputs``; returns the deduplication state."""
    for batch in source_log.scan_between(after, through):
        if not batch.num_rows:
            continue
        table = prepare_rows(config, stream, provider_id, dataset, pa.Table.from_batches([batch]), compiled)
        live, deletes = split_deletes(table)
        if live.num_rows:
            try:
                result = apply_rules(live, compiled, state=state, now=now, explain=True)
            except RulesError as exc:
                raise DataStreamError(f"data stream '{stream.id}', dataset '{dataset.id}': {exc}") from None
            if state is not None:
                state = result.pending_state
            counts.update(result.counts)
            if result.table.num_rows:
                outputs.append(kept_rows(live, compiled, result.table, result.kept))
            # a delivered record whose new version no longer qualifies is withdrawn, not left current
            retracted = retracted_rows(out_log, filtered_out(live, result))
            if retracted is not None:
                counts["retracted"] += retracted.num_rows
                outputs.append(retracted)
        if deletes is not None:
            # deleted at the source: withdrawn if the data stream delivered it, with what it delivered
            gone = retracted_rows(out_log, deletes.column(RECORD_ID_COLUMN).combine_chunks())
            if gone is not None:
                counts["deletes"] += gone.num_rows
                outputs.append(gone)
    return state


def run_data_stream(
    config: PrequelConfig,
    data_stream_id: str,
    *,
    storage: Store | None = None,
    open_store: Callable[[str], Store] | None = None,
    run_id: str | None = None,
    log: Log = lambda message: None,
    now: dt.datetime | None = None,
) -> DataStreamResult:
    """Materialize a data stream: its source datasets' new commits through its rules, committed.

    ``storage`` is the data stream's datalake; ``open_store(datalake_id)`` opens the datalakes of
    source datasets elsewhere (default: :func:`open_datalake`)."""
    started = time.monotonic()
    stream = config.data_stream(data_stream_id)
    lake_id = data_stream_datalake_id(config, stream)
    stores: dict[str, Store] = {}
    if storage is not None:
        stores[lake_id] = storage

    def store_of(datalake_id: str) -> Store:
        if datalake_id not in stores:
            stores[datalake_id] = (
                open_store(datalake_id) if open_store else open_datalake(config.datalake(datalake_id), config)
            )
        return stores[datalake_id]

    store = store_of(lake_id)
    out_log = DatasetLog(store, DATA_STREAMS_NAMESPACE, stream.id, log=log)
    latest = out_log.refresh().latest
    cursor: dict[str, Any] = dict(latest.cursor) if latest is not None and isinstance(latest.cursor, dict) else {}
    state_dir = data_stream_state_dir(stream.id)
    recovered = False
    if cursor.get("rules_state"):
        recovered = finish_state(store, state_dir, cursor["rules_state"])
        if recovered:
            log(f"data stream '{stream.id}': committed the deduplication state its last commit named")
    try:
        rules = stream.rules
    except RulesError as exc:
        raise DataStreamError(f"data stream '{stream.id}': {exc}") from None
    state = load_state(store, state_dir, rules) if rules.deduplication is not None else None
    now = now or dt.datetime.now(dt.UTC)

    positions: dict[str, int] = dict(cursor.get("sources") or {})
    sources: dict[str, tuple[int, int]] = {}
    counts: Counter[str] = Counter()
    by_provider: dict[str, Counter[str]] = {}
    outputs: list[pa.Table] = []
    failed: dict[str, str] = {}  # "<provider>/<dataset>": why its rows wait for the next run
    allowed = data_stream_sources(config, stream)
    skipped = sorted(
        {
            config.chain(d).provider.id
            for d in _all_readers(config, stream)
            if (config.chain(d).provider.id, d) not in allowed
        }
    )
    for provider_id, dataset_id in allowed:
        chain = config.chain(dataset_id)
        source_log = DatasetLog(store_of(chain.datalake.id), provider_id, dataset_id, log=log)
        key = f"{provider_id}/{dataset_id}"
        after = int(positions.get(key, 0))
        source_latest = source_log.refresh().latest
        through = source_latest.seq if source_latest is not None else 0
        if through <= after:
            continue
        try:
            compiled = compile_rules(rules_for_dataset(rules, dataset_id))
        except RulesError as exc:
            raise DataStreamError(f"data stream '{stream.id}': {exc}") from None
        # one dataset's failure (its values, its expressions) must not stop the others: its rows, its
        # counts and its changes to the deduplication state are kept apart until it has been read whole
        state_before = state
        mine_outputs: list[pa.Table] = []
        mine_counts: Counter[str] = Counter()
        try:
            state = _read_dataset(
                source_log,
                after,
                through,
                config,
                stream,
                provider_id,
                chain.dataset,
                compiled,
                out_log,
                state,
                now,
                mine_outputs,
                mine_counts,
            )
        except (DataStreamError, pa.ArrowException) as exc:
            state = state_before
            why = str(exc) if isinstance(exc, DataStreamError) else f"{type(exc).__name__} on its values"
            failed[key] = why
            log(f"data stream '{stream.id}': dataset {key} not taken this run (its rows wait): {why}")
            continue
        sources[key] = (after, through)
        positions[key] = through
        outputs.extend(mine_outputs)
        counts.update(mine_counts)
        mine = by_provider.setdefault(provider_id, Counter())
        mine.update({"rows_in": mine_counts["rows_in"], "rows_out": mine_counts["rows_out"]})
    constraint = json.dumps(stream.auth_rules.model_dump() if stream.auth_rules else None, sort_keys=True)
    if latest is not None and cursor.get("constraint", constraint) != constraint:
        # providers the company constraint no longer admits: their records leave the stream now
        withdrawn = unadmitted_rows(out_log, stream)
        if withdrawn is not None:
            counts["withdrawn_by_constraint"] += withdrawn.num_rows
            outputs.append(withdrawn)
    counts.setdefault("rows_in", 0)
    counts.setdefault("rows_out", 0)
    totals = dict(counts)
    uri = store.uri(out_log.directory)
    if not sources and not outputs and cursor.get("constraint", constraint) == constraint:
        _refuse_failed(stream.id, failed, committed=False)
        log(f"data stream '{stream.id}': nothing new in its {len(allowed)} datasets")
        return DataStreamResult(
            stream.id,
            None,
            totals,
            {},
            {},
            time.monotonic() - started,
            uri,
            out_log.schema(),
            latest.row_count if latest else 0,
            recovered,
            skipped,
        )
    writer = out_log.begin()
    try:
        if outputs:
            try:
                combined = pa.concat_tables(outputs, promote_options="permissive")
                held = out_log.schema()
                if held is not None:  # a type the log's earlier commits do not share would break its reads
                    pa.unify_schemas([held, combined.schema], promote_options="permissive")
                writer.write(combined)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # names columns and types, never values
                raise DataStreamError(
                    f"data stream '{stream.id}': its datasets give a delivered field different types, now or "
                    f"in what it committed before ({exc}); make the attribute mappings or columns agree (cast "
                    "them in the dataset's attributes)"
                ) from None
        manifest = prepare_state(store, state_dir, state, now) if state is not None else None
        new_cursor = {"sources": positions, "rules_state": manifest, "constraint": constraint}
        commit = writer.commit(
            cursor=new_cursor,
            counts=totals,
            row_count=(latest.row_count if latest else 0) + totals["rows_out"],
            run_id=run_id,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # the commit's schema against the earlier ones'
        writer.abort()
        raise DataStreamError(
            f"data stream '{stream.id}': its datasets give a delivered field another type than it committed "
            f"before ({exc}); make the attribute mappings or columns agree (cast them in the dataset's attributes)"
        ) from None
    except BaseException:
        writer.abort()
        raise
    if manifest is not None:
        finish_state(store, state_dir, manifest)
    _refuse_failed(stream.id, failed, committed=True)
    log(
        f"data stream '{stream.id}': {totals['rows_in']} rows in, {totals['rows_out']} out "
        f"(commit {commit.seq}; {', '.join(f'{k} {v}' for k, v in totals.items() if k.startswith('dropped_by.')) or 'none dropped'})"
    )
    return DataStreamResult(
        stream.id,
        commit,
        totals,
        {p: dict(c) for p, c in by_provider.items()},
        sources,
        time.monotonic() - started,
        uri,
        out_log.schema(),
        commit.row_count,
        recovered,
        skipped,
    )


def _refuse_failed(stream_id: str, failed: dict[str, str], *, committed: bool) -> None:
    """The datasets whose rows could not be taken this run fail it, by name (their cursors did not move:
    the next run takes their rows again), after the others' rows were committed."""
    if not failed:
        return
    listed = "; ".join(f"{key}: {why}" for key, why in sorted(failed.items()))
    done = "the other datasets' rows were committed" if committed else "nothing else was new"
    raise DataStreamError(f"data stream '{stream_id}': {len(failed)} dataset(s) not taken ({done}): {listed}")


def _all_readers(config: PrequelConfig, stream: DataStream) -> list[str]:
    from ..config.data_streams import _readers

    return [d for d in _readers(stream, config.datasets) if _has_chain(config, d)]


def _has_chain(config: PrequelConfig, dataset_id: str) -> bool:
    try:
        config.chain(dataset_id)
    except KeyError:
        return False
    return True


# ---------------------------------------------------------------------------- test-transform


@dataclass(frozen=True)
class ExplainedRow:
    provider_id: str
    dataset_id: str
    record_id: str
    rule: str | None  # the key of the rule that dropped it (None: delivered)
    description: str | None
    row: dict[str, Any]


def explain_data_stream(
    config: PrequelConfig,
    data_stream_id: str,
    *,
    limit: int = 10,
    storage: Store | None = None,
    now: dt.datetime | None = None,
) -> list[ExplainedRow]:
    """The latest ``limit`` rows of each dataset the data stream reads, and which rule drops each
    (judged as the next run would: against the committed deduplication state, which is not changed)."""
    stream = config.data_stream(data_stream_id)
    lake_id = data_stream_datalake_id(config, stream)
    stores: dict[str, Store] = {lake_id: storage} if storage is not None else {}
    rules = stream.rules
    home = stores.get(lake_id) or open_datalake(config.datalake(lake_id), config)
    stores[lake_id] = home
    state = load_state(home, data_stream_state_dir(stream.id), rules) if rules.deduplication is not None else None
    out: list[ExplainedRow] = []
    for provider_id, dataset_id in data_stream_sources(config, stream):
        chain = config.chain(dataset_id)
        if chain.datalake.id not in stores:
            stores[chain.datalake.id] = open_datalake(chain.datalake, config)
        source_log = DatasetLog(stores[chain.datalake.id], provider_id, dataset_id)
        tail: list[pa.Table] = []
        kept_rows = 0
        for batch in source_log.scan():
            tail.append(pa.Table.from_batches([batch]))
            kept_rows += batch.num_rows
            while tail and kept_rows - tail[0].num_rows >= limit:
                kept_rows -= tail.pop(0).num_rows
        if not tail:
            continue
        table = pa.concat_tables(tail, promote_options="permissive")
        table = table.slice(max(0, table.num_rows - limit))
        compiled = compile_rules(rules_for_dataset(rules, dataset_id))
        table = prepare_rows(config, stream, provider_id, chain.dataset, table, compiled)
        live, _ = split_deletes(table)
        if not live.num_rows:
            continue
        result = apply_rules(live, compiled, state=state, now=now, explain=True)
        if state is not None:
            state = result.pending_state
        for i, row in enumerate(live.to_pylist()):
            info = result.explain(i)
            out.append(
                ExplainedRow(
                    provider_id,
                    dataset_id,
                    row[RECORD_ID_COLUMN],
                    info.key if info else None,
                    info.description if info else None,
                    row,
                )
            )
    return out
