"""Load: deliver a stream's pending records (mapped, validated) to its destination, resumably.

A normal load covers the dataset commits the stream has not delivered; a redelivery covers chosen
record ids (Prequel's ``record_ids``) or the stream's dead letters, re-read from the lake at their
latest version. Every record ends acknowledged, in the dead letter with its reason, or — only when
the destination stays down — pending for the next load, which resumes with the same batch ids.
"""

import datetime as dt
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ..config.errors import DeliveryError
from ..config.models import PrequelConfig, Stream, WebhookBatch
from ..delivery.counts import LoadCounts
from ..delivery.requests import RequestTemplates
from ..delivery.sender import BatchSender
from ..delivery.webhook import WebhookClient
from ..delivery.wire import Batcher, Part, envelope_overhead, load_id_for
from ..lake.changes import latest_versions
from ..lake.commits import OP_COLUMN, DatasetLog
from ..lake.deliveries import LoadPlan, StreamState
from ..lake.identity import lake_id
from ..language.expressions import ExpressionError
from ..stores import Store, open_datalake
from ..transform.encoding import encode_records
from ..transform.mapping import StreamMapper, apply_isolating
from ..transform.schema import converted_table, validate_records
from .metering import Meter
from .windows import Window, live_records

Log = Callable[[str], None]
PREPARE_THREADS = 2


@dataclass
class LoadResult:
    stream_id: str
    provider_id: str
    load_id: str | None
    from_commit: int
    to_commit: int
    resumed: bool
    counts: LoadCounts
    seconds: float
    dead_letters: list[str] = field(default_factory=list)
    redelivery: bool = False
    window: Window | None = None  # the partition window the load ran for (a normal load covers every pending commit)
    resent: "LoadResult | None" = None  # the re-send that followed the load, when one was asked for
    metering: dict[str, Any] | None = None  # a data stream's load: records_metered, cost_usd (engine.metering)


class _Load:
    """Shared state of one load: config objects, lake, state, mapper, client, counters."""

    def __init__(
        self,
        config: PrequelConfig,
        stream: Stream,
        storage: Store | None,
        transport: httpx.BaseTransport | None,
        sleep: Callable[[float], None],
        log: Log,
    ):
        self.stream = stream
        self.dataset = config.dataset(stream.dataset_id)
        chain = config.chain(self.dataset.id)
        self.provider = chain.provider
        self.destination = config.destination(stream.destination_id)
        self.storage = storage or open_datalake(chain.datalake, config)
        self.lake = DatasetLog(self.storage, self.provider.id, self.dataset.id, log=log)
        self.state = StreamState(self.storage, self.provider.id, stream.id)
        self.mapper = StreamMapper(stream)
        self.templates = RequestTemplates.of(self.destination, reveal=False)
        self.schema = self.destination.record_schema
        self.required = set(self.schema.get("required", []))
        props = self.schema.get("properties", {})
        self.raw_json = {name for name, p in props.items() if p.get("type") in ("object", "array")}
        self.transport, self.sleep, self.log = transport, sleep, log
        self.counts = LoadCounts()
        self.dead_letters: list[str] = []
        self.meter = Meter.of(config, stream, self.storage)  # a stream of a data stream: its usage ledger
        # a stream of a data stream: the providers its company constraint admits now (see ``admitted``)
        self.data_stream = config.data_stream(stream.dataset_id) if config.is_data_stream(stream.dataset_id) else None

    def admitted(self, table: pa.Table, delivered_through: int) -> pa.Table:
        """A data stream's rows of providers its company constraint admits as the load runs: rows
        committed before a provider was removed from it never go out, and of its withdrawals (deletes)
        only those of records delivered before (through commit ``delivered_through``) do."""
        key = self.dataset.primary_key
        if self.data_stream is None or key not in table.column_names or not table.num_rows:
            return table
        keys = pc.cast(table.column(key), pa.string())
        providers = pc.list_element(pc.split_pattern(keys, "/", max_splits=1), 0)
        refused = [p for p in pc.unique(providers).to_pylist() if p is not None and not self.data_stream.allows(p)]
        if not refused:
            return table
        theirs = pc.fill_null(pc.is_in(providers, value_set=pa.array(refused, pa.string())), False)
        deletes = pc.fill_null(pc.equal(table.column(OP_COLUMN), "delete"), False)
        withdrawn = keys.filter(pc.and_(theirs, deletes)).combine_chunks()
        told = self._delivered_live(withdrawn, delivered_through) if len(withdrawn) else pa.array([], pa.string())
        keep = pc.or_(pc.invert(theirs), pc.and_(deletes, pc.fill_null(pc.is_in(keys, value_set=told), False)))
        kept = table.filter(keep)
        self.log(
            f"stream '{self.stream.id}': {table.num_rows - kept.num_rows} records of providers the data stream "
            f"no longer admits ({', '.join(sorted(refused))}) withheld"
        )
        return kept

    def read_columns(self) -> list[str]:
        """What a load reads of the lake: the mapped columns, the key and the operation."""
        return list(dict.fromkeys([*self.mapper.source_columns, self.dataset.primary_key, OP_COLUMN]))

    def _delivered_live(self, keys: pa.Array, through: int) -> pa.Array:
        """Which of ``keys`` were live (delivered, not deleted) as of commit ``through``."""
        key = self.dataset.primary_key
        last: dict[str, str] = {}
        wanted = pads.field(key).isin(keys)
        for batch in self.lake.scan_between(0, through, columns=[key, OP_COLUMN], filter=wanted, use_threads=False):
            for k, op in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                last[str(k)] = op
        return pa.array([k for k, op in last.items() if op != "delete"], pa.string())

    def check_mappings(self, schema: pa.Schema | None) -> None:
        """Column and type errors of the mappings, found before anything is sent."""
        available = schema.names if schema is not None else []
        problems = self.mapper.check_columns(available)
        if problems:
            raise DeliveryError("; ".join(problems) + " — fix the stream's mappings; nothing was sent")
        if schema is not None:
            try:
                self.mapper.apply(schema.empty_table())
            except ExpressionError as exc:
                raise DeliveryError(f"{exc} — fix the stream's mappings; nothing was sent") from None

    def prepare(self, table: pa.Table, load_id: str) -> tuple[Part, list[dict[str, Any]], LoadCounts]:
        """Map, validate and encode one table (thread-safe); invalid records become dead-letter rows."""
        counts = LoadCounts()
        counts.records_processed = table.num_rows
        invalid: list[dict[str, Any]] = []
        try:
            mapped, mapped_rows, failed = apply_isolating(self.mapper, table)
        except ExpressionError as exc:
            raise DeliveryError(f"{exc} — fix the mapping; the records stay pending for the next load") from None
        if mapped_rows is not None:  # rows whose own values make a mapping fail: dead letter, alone
            invalid += self._dead_rows(
                table.filter(pc.invert(mapped_rows)), load_id, [f"mapping: {failed[i]}" for i in sorted(failed)]
            )
            table = table.filter(mapped_rows)
        n = table.num_rows
        counts.records_transformed = mapped.num_rows
        checked = validate_records(mapped, self.schema, self.templates.header_checks(mapped))
        deleted = pc.fill_null(pc.equal(table.column(OP_COLUMN), "delete"), False).combine_chunks()
        keys = table.column(self.dataset.primary_key).combine_chunks()
        valid = checked.valid_mask
        counts.records_valid = checked.valid.num_rows
        all_valid = counts.records_valid == n
        part = Part(
            encode_records(checked.valid, required=self.required, raw_json_fields=self.raw_json),
            deleted if all_valid else deleted.filter(valid),
            keys if all_valid else keys.filter(valid),
        )
        if not all_valid:
            bad = pc.invert(valid)
            shown = converted_table(mapped.filter(bad), self.schema)
            reasons = [f"record_schema: {why}" for why in checked.violations.filter(bad).to_pylist()]
            invalid += self._dead_rows(table.filter(bad), load_id, reasons, shown=shown)
        counts.records_errored = len(invalid)
        return part, invalid, counts

    def _dead_rows(
        self, rows: pa.Table, load_id: str, reasons: list[str], *, shown: pa.Table | None = None
    ) -> list[dict[str, Any]]:
        """Dead-letter rows for records refused before sending; ``shown`` is what each record would have
        been (by default, the source values the mappings read)."""
        if shown is None:
            shown = rows.select([c for c in self.mapper.source_columns if c in rows.column_names])
        texts = encode_records(shown, required=set()).to_pylist()
        keys = rows.column(self.dataset.primary_key).cast(pa.string()).to_pylist()
        deleted = pc.fill_null(pc.equal(rows.column(OP_COLUMN), "delete"), False).to_pylist()
        return [
            {
                "record_id": rid,
                "record": text[:-1],
                "is_deleted": is_del,
                "reason": why,
                "load_id": load_id,
                "batch_id": None,
            }
            for rid, text, is_del, why in zip(keys, texts, deleted, reasons)
        ]

    def prepared(self, tables: Iterable[pa.Table], load_id: str) -> Iterator[tuple[Part, list[dict[str, Any]]]]:
        """``prepare`` on PREPARE_THREADS threads (Arrow compute releases the GIL), in order, a few tables ahead."""
        with ThreadPoolExecutor(max_workers=PREPARE_THREADS, thread_name_prefix="prequel-prepare") as pool:
            ahead: deque = deque()
            for table in tables:
                ahead.append(pool.submit(self.prepare, table, load_id))
                if len(ahead) > PREPARE_THREADS:
                    yield self._take(ahead.popleft().result())
            while ahead:
                yield self._take(ahead.popleft().result())

    def _take(self, prepared: tuple[Part, list[dict[str, Any]], LoadCounts]) -> tuple[Part, list[dict[str, Any]]]:
        part, invalid, counts = prepared
        self.counts.add(
            **{
                name: getattr(counts, name)
                for name in ("records_processed", "records_transformed", "records_valid", "records_errored")
            }
        )
        return part, invalid

    def deliver(
        self,
        tables: Iterable[pa.Table],
        plan: LoadPlan,
        *,
        persist: bool,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Send every record of ``tables``; invalid ones go to the dead letter. ``metadata`` goes in every
        batch envelope (``{"resend": true, ...}`` for a re-send)."""
        tables = (self.admitted(table, plan.from_commit) for table in tables)
        settings = self.destination.webhook
        per_record = not isinstance(settings, WebhookBatch)
        batcher = Batcher(
            1 if per_record else settings.max_records_per_batch,  # type: ignore[union-attr]
            10**12 if per_record else settings.max_bytes_per_batch,  # type: ignore[union-attr]
            envelope_overhead(self.provider.id, self.stream.id, metadata),
        )
        client = WebhookClient(self.destination, self.provider.id, transport=self.transport, sleep=self.sleep)
        sender = BatchSender(
            self.destination,
            client,
            plan,
            self.state,
            provider_id=self.provider.id,
            stream_id=self.stream.id,
            counts=self.counts,
            log=self.log,
            persist=persist,
            metadata=metadata,
            on_accepted=self.meter.callback(plan.load_id) if self.meter is not None else None,
        )
        invalid: list[dict[str, Any]] = []
        try:
            for part, bad in self.prepared(tables, plan.load_id):
                invalid.extend(bad)
                for batch in batcher.add(part):
                    sender.submit(batch)
                if sender.stopped:
                    break
            if not sender.stopped:
                for batch in batcher.flush():
                    sender.submit(batch)
        finally:
            try:
                sender.close()
            finally:
                client.close()
                self.dead_letters.extend(sender.dead_letters)
        if invalid:
            self.dead_letters.append(self.state.write_dead_letter(f"{plan.load_id}-invalid", invalid))
            self.log(f"  {len(invalid)} records failed record_schema and were kept in the dead letter")
        if not sender.stopped and plan.highest_batch() >= sender.batches_seen:
            raise DeliveryError(
                f"stream '{self.stream.id}': the pending load {plan.load_id} has batch {plan.highest_batch()} on record "
                f"but only {sender.batches_seen} batches; its plan or ack log in "
                f"{self.storage.uri(self.state.directory + '/_pending')} was changed by something else. Delete both "
                "files to start the load again."
            )
        if sender.stopped:
            raise DeliveryError(
                f"stream '{self.stream.id}': destination '{self.destination.id}' {sender.stopped}; "
                f"{self.counts.records_loaded} records were delivered, the rest stay pending and the next load "
                "resumes with the same batch ids"
            )


def run_load(
    config: PrequelConfig,
    stream_id: str,
    *,
    storage: Store | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Log = lambda message: None,
    record_ids: list[str] | None = None,
    redeliver_dead_letters: bool = False,
    window: Window | tuple[dt.datetime, dt.datetime] | None = None,
    resend: bool = False,
    resend_id: str | None = None,
) -> LoadResult:
    """One Load of a stream; with ``record_ids`` or ``redeliver_dead_letters``, a redelivery instead.

    The stream has one position in its dataset's commits, whatever its partitions: a load for a
    partition ``window`` is the stream's normal load (every pending commit, which holds what that
    window's extract changed). ``resend`` then sends every current record of the window again (of
    the whole dataset without a window), with new batch ids (a load id of their own, from
    ``resend_id``, by default a fresh one) so an idempotent receiver takes them, and
    ``"metadata": {"resend": true, "window": {...}}`` in each envelope; the position does not move.
    """
    started = time.monotonic()
    stream = config.stream(stream_id)
    load = _Load(config, stream, storage, transport, sleep, log)
    if record_ids is not None or redeliver_dead_letters:
        redelivered = _redeliver(load, record_ids or [], redeliver_dead_letters, started)
        redelivered.metering = load.meter.summary() if load.meter is not None else None
        return redelivered
    scope = Window.of(window) if window is not None else None
    result = _load_pending(load, started)
    result.window = scope
    result.metering = load.meter.summary() if load.meter is not None else None
    if resend:
        again = _Load(config, stream, load.storage, transport, sleep, log)
        result.resent = _resend(again, scope, resend_id or uuid.uuid4().hex, time.monotonic())
        if again.meter is not None:  # a re-send is a delivery: metered, in the ledger and here alike
            result.metering = _metered_together(result.metering, again.meter.summary())
    return result


def _metered_together(first: dict[str, Any] | None, second: dict[str, Any]) -> dict[str, Any]:
    if first is None:
        return second
    by_offer = dict(first["cost_usd_by_offer"])
    for offer, usd in second["cost_usd_by_offer"].items():
        by_offer[offer] = by_offer.get(offer, 0.0) + usd
    return {
        "records_metered": first["records_metered"] + second["records_metered"],
        "cost_usd": first["cost_usd"] + second["cost_usd"],
        "cost_usd_by_offer": by_offer,
        "batches_already_metered": first["batches_already_metered"] + second["batches_already_metered"],
    }


def _load_pending(load: _Load, started: float) -> LoadResult:
    """The stream's normal load: the commits it has not delivered, resuming an interrupted load."""
    stream_id, log = load.stream.id, load.log
    plan = load.state.open_plan()
    resumed = plan is not None
    if plan is None:
        latest = load.lake.latest()
        start, end = load.state.delivered_through(), latest.seq if latest else 0
        if latest is None or end <= start:
            log(f"stream '{stream_id}': nothing pending (delivered through commit {start})")
            return LoadResult(
                stream_id, load.provider.id, None, start, end, False, load.counts, time.monotonic() - started
            )
        plan = LoadPlan(
            load_id_for(lake_id(load.storage), load.provider.id, stream_id, start, end, latest.token), start, end
        )
    else:
        log(f"stream '{stream_id}': resuming load {plan.load_id} ({len(plan.acked)} batches already acknowledged)")

    load.check_mappings(load.lake.schema_between(plan.from_commit, plan.to_commit))
    load.state.save_plan(plan)
    log(
        f"loading stream '{stream_id}' ({load.provider.id}/{load.dataset.id} -> {load.destination.id}): "
        f"commits {plan.from_commit + 1}..{plan.to_commit}, load {plan.load_id}"
    )
    columns = load.read_columns()
    tables = (
        pa.Table.from_batches([b])
        for b in load.lake.scan_between(plan.from_commit, plan.to_commit, columns=columns, use_threads=False)
        if b.num_rows
    )
    load.deliver(tables, plan, persist=True)
    load.state.finish(plan, load.counts.as_dict())
    c = load.counts
    log(
        f"stream '{stream_id}': {c.records_loaded} records delivered in {c.batches_sent} batches, {c.records_errored} errored"
    )
    return LoadResult(
        stream_id,
        load.provider.id,
        plan.load_id,
        plan.from_commit,
        plan.to_commit,
        resumed,
        c,
        time.monotonic() - started,
        load.dead_letters,
    )


def _resend(load: _Load, window: Window | None, nonce: str, started: float) -> LoadResult:
    """Send the window's current records (every current record without a window) again, with new ids."""
    latest, schema = load.lake.latest(), load.lake.schema()
    if latest is None or schema is None:
        load.log(f"stream '{load.stream.id}': nothing to re-send (dataset '{load.dataset.id}' has no records)")
        return _redelivery_result(load, None, 0, started, window)
    column = load.dataset.cursor_column
    if window is not None and not column:
        raise DeliveryError(
            f"stream '{load.stream.id}': a window needs its dataset's created_at_column; re-send without a window"
        )
    load.check_mappings(schema)
    scope = list(window.as_dict().values()) if window is not None else ["all"]
    plan = LoadPlan(
        load_id_for(
            lake_id(load.storage), load.provider.id, load.stream.id, "resend", *scope, latest.seq, latest.token, nonce
        ),
        0,
        latest.seq,
    )
    what = f"the records of {window.describe()}" if window is not None else "every current record"
    load.log(f"re-sending {what} of stream '{load.stream.id}' with new batch ids (load {plan.load_id})")
    metadata: dict[str, Any] = {"resend": True}
    if window is not None:
        metadata["window"] = window.as_dict()
    key = load.dataset.primary_key
    columns = load.read_columns()
    tables = live_records(load.lake, key, column, window, columns=columns)
    load.deliver(tables, plan, persist=False, metadata=metadata)
    c = load.counts
    load.log(f"re-sent {c.records_loaded} records in {c.batches_sent} batches, {c.records_errored} errored")
    return _redelivery_result(load, plan.load_id, latest.seq, started, window)


def _redelivery_result(
    load: _Load, load_id: str | None, through: int, started: float, window: Window | None = None
) -> LoadResult:
    """A re-send's or redelivery's result (``load_id`` None: there was nothing to send): it leaves the
    stream's position where it was."""
    return LoadResult(
        load.stream.id,
        load.provider.id,
        load_id,
        0,
        through,
        False,
        load.counts,
        time.monotonic() - started,
        load.dead_letters,
        redelivery=True,
        window=window,
    )


def _redeliver(load: _Load, record_ids: list[str], dead_letters: bool, started: float) -> LoadResult:
    """Send chosen records (their latest version in the lake) again; dead letters it replaces are removed."""
    sources: list[str] = []
    ids = list(record_ids)
    if dead_letters:
        sources = load.state.dead_letter_files()
        ids += [i for i in load.state.read_dead_letters(sources).column("record_id").to_pylist() if i is not None]
    ids = list(dict.fromkeys(ids))
    latest = load.lake.latest()
    schema = load.lake.schema()
    if not ids or latest is None or schema is None:
        load.state.remove_dead_letters(sources)
        return _redelivery_result(load, None, 0, started)
    key = load.dataset.primary_key
    try:
        keys = pa.array(ids, pa.string()).cast(schema.field(key).type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DeliveryError(f"record ids must be values of {key} ({schema.field(key).type}); got {ids[:5]}") from None
    found = latest_versions(load.lake, keys, key)
    load.counts.records_not_found = len(ids) - (found.num_rows if found is not None else 0)
    if load.counts.records_not_found:
        load.log(f"  {load.counts.records_not_found} record ids are not in dataset '{load.dataset.id}'")
    load.check_mappings(schema)
    plan = LoadPlan(
        load_id_for(
            lake_id(load.storage), load.provider.id, load.stream.id, "redeliver", latest.seq, latest.token, *sorted(ids)
        ),
        0,
        latest.seq,
    )
    load.log(f"redelivering {len(ids)} records of stream '{load.stream.id}' (load {plan.load_id})")
    columns = load.read_columns()
    load.deliver([found.select(columns)] if found is not None and found.num_rows else [], plan, persist=False)
    load.state.remove_dead_letters([p for p in sources if p not in load.dead_letters])
    c = load.counts
    load.log(f"redelivered {c.records_loaded} records, {c.records_errored} errored")
    return _redelivery_result(load, plan.load_id, latest.seq, started)
