"""Load: deliver a stream's pending records (mapped, validated) to its destination, resumably.

A normal load covers the dataset commits the stream has not delivered; a redelivery covers chosen
record ids (Prequel's ``record_ids``) or the stream's dead letters, re-read from the lake at their
latest version. Every record ends acknowledged, in the dead letter with its reason, or — only when
the destination stays down — pending for the next load, which resumes with the same batch ids.
"""

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..config.errors import DeliveryError
from ..config.models import Destination, PrequelConfig, Stream
from ..transform.encoding import encode_records
from ..config.secrets import Secret
from ..language.templates import HEADER_UNSAFE_PATTERN, Template, UnsafeValue, parse_template
from ..delivery.webhook import WebhookClient
from ..delivery.wire import Batch, Batcher, Part, batch_id_for, envelope_overhead, load_id_for
from ..lake.changes import latest_versions
from ..lake.commits import OP_COLUMN, DatasetLog
from ..lake.deliveries import LoadPlan, StreamState
from ..lake.identity import lake_id
from ..stores import Store, open_datalake
from ..language.expressions import ExpressionError
from ..transform.mapping import StreamMapper, apply_isolating
from ..transform.schema import Check, converted_table, validate_records

Log = Callable[[str], None]
PLAN_SAVE_INTERVAL_SECONDS = 0.5
PREPARE_THREADS = 2


@dataclass
class LoadCounts:
    """Prequel's Load counters plus what the wire saw."""

    records_processed: int = 0
    records_transformed: int = 0
    records_valid: int = 0
    records_loaded: int = 0
    records_errored: int = 0
    records_deleted_sent: int = 0
    records_not_found: int = 0
    batches_sent: int = 0
    batches_rejected: int = 0
    batches_split: int = 0
    batches_skipped_already_acked: int = 0
    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        """Add to counters from any thread: every update of a load's counts goes through here."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}


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


@dataclass
class _Templates:
    uri: Template
    headers: dict[str, Template]
    body: Template | None

    @classmethod
    def of(cls, destination: Destination, *, reveal: bool) -> "_Templates":
        """Parsed from the configured text: a secret's value is never read as a template (only
        the literal pieces around actions are resolved, when ``reveal``)."""
        per_record = destination.type == "webhook_record"
        t = destination.webhook.request_template
        headers = {}
        for name, secret in t.headers.items():
            tpl = parse_template(secret.template, allow_record=per_record, allow_records=not per_record)
            headers[name] = tpl.with_literals(lambda text: Secret(text).reveal()) if reveal else tpl
        return cls(
            parse_template(t.uri, allow_record=per_record, allow_records=not per_record, place="uri"),
            headers,
            parse_template(t.body, allow_record=True, allow_records=False, place="body") if t.body else None,
        )

    @property
    def need_records(self) -> bool:
        parts = [self.uri, *self.headers.values(), *([self.body] if self.body else [])]
        return any(p.uses_record or p.uses_records for p in parts)

    def header_checks(self, mapped: pa.Table) -> list[Check]:
        """Records whose values a header template would carry but cannot (CR/LF, non-ASCII): refused alone."""
        checks: list[Check] = []
        for header, tpl in self.headers.items():
            for name in sorted(tpl.fields & set(mapped.column_names)):
                col = mapped.column(name).combine_chunks()
                if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                    bad = pc.match_substring_regex(col, HEADER_UNSAFE_PATTERN)
                    checks.append((bad, f"'{name}' holds a character header '{header}' cannot carry "
                                        "(only printable ASCII is sent in headers)"))
        return checks


class _Load:
    """Shared state of one load: config objects, lake, state, mapper, client, counters."""

    def __init__(self, config: PrequelConfig, stream: Stream, storage: Store | None,
                 transport: httpx.BaseTransport | None, sleep: Callable[[float], None], log: Log):
        self.stream = stream
        self.dataset = config.dataset(stream.dataset_id)
        self.provider = config.provider_of_dataset(self.dataset)
        self.destination = config.destination(stream.destination_id)
        self.storage = storage or open_datalake(config.datalake(self.provider.datalake_id), config)
        self.lake = DatasetLog(self.storage, self.provider.id, self.dataset.id)
        self.state = StreamState(self.storage, self.provider.id, stream.id)
        self.mapper = StreamMapper(stream)
        self.templates = _Templates.of(self.destination, reveal=False)
        self.schema = self.destination.record_schema
        self.required = set(self.schema.get("required", []))
        props = self.schema.get("properties", {})
        self.raw_json = {name for name, p in props.items() if p.get("type") in ("object", "array")}
        self.transport, self.sleep, self.log = transport, sleep, log
        self.counts = LoadCounts()
        self.dead_letters: list[str] = []

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
            invalid += self._dead_rows(table.filter(pc.invert(mapped_rows)), load_id,
                                       [f"mapping: {failed[i]}" for i in sorted(failed)])
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

    def _dead_rows(self, rows: pa.Table, load_id: str, reasons: list[str], *,
                   shown: pa.Table | None = None) -> list[dict[str, Any]]:
        """Dead-letter rows for records refused before sending; ``shown`` is what each record would have
        been (by default, the source values the mappings read)."""
        if shown is None:
            shown = rows.select([c for c in self.mapper.source_columns if c in rows.column_names])
        texts = encode_records(shown, required=set()).to_pylist()
        keys = rows.column(self.dataset.primary_key).cast(pa.string()).to_pylist()
        deleted = pc.fill_null(pc.equal(rows.column(OP_COLUMN), "delete"), False).to_pylist()
        return [{"record_id": rid, "record": text[:-1], "is_deleted": is_del, "reason": why, "load_id": load_id,
                 "batch_id": None} for rid, text, is_del, why in zip(keys, texts, deleted, reasons)]

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
        self.counts.add(**{name: getattr(counts, name) for name in
                           ("records_processed", "records_transformed", "records_valid", "records_errored")})
        return part, invalid

    def deliver(self, tables: Iterable[pa.Table], plan: LoadPlan, *, persist: bool) -> None:
        """Send every record of ``tables``; invalid ones go to the dead letter."""
        settings = self.destination.webhook
        per_record = self.destination.type == "webhook_record"
        batcher = Batcher(1 if per_record else settings.max_records_per_batch,
                          10**12 if per_record else settings.max_bytes_per_batch,
                          envelope_overhead(self.provider.id, self.stream.id))
        client = WebhookClient(self.destination, self.provider.id, transport=self.transport, sleep=self.sleep)
        sender = _Sender(self, client, plan, persist=persist)
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
            sender.close()
            client.close()
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


class _Sender:
    """Sends batches with up to ``max_concurrency`` requests in flight; records every outcome in the plan."""

    def __init__(self, load: _Load, client: WebhookClient, plan: LoadPlan, *, persist: bool):
        self.load, self.client, self.plan, self.persist = load, client, plan, persist
        self.settings = load.destination.webhook
        self.templates = _Templates.of(load.destination, reveal=True)
        self.concurrency = load.destination.concurrency
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="prequel-send")
        self.slots = threading.BoundedSemaphore(self.concurrency * 2)  # bounds batches held in memory
        self.lock = threading.Lock()
        self.failed_in_a_row = 0
        self.stopped: str | None = None
        self.error: BaseException | None = None
        self.saved_at = 0.0
        self.ack_log = load.state.open_ack_log(plan) if persist else None
        self.batches_seen = 0

    def submit(self, batch: Batch) -> None:
        if self.stopped or self.error:
            return
        self.batches_seen += 1
        if self.plan.done(batch.key):
            acked = self.plan.fully_acked(batch.key)
            self.load.counts.add(batches_skipped_already_acked=1, records_loaded=batch.count if acked else 0)
            return
        self.slots.acquire()
        future = self.pool.submit(self._run, batch)
        future.add_done_callback(lambda _: self.slots.release())

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.ack_log is not None:
            self.ack_log.close()
        self._save(force=True)
        if self.error is not None:
            raise self.error

    def _run(self, batch: Batch) -> None:
        try:
            self._deliver(batch)
        except BaseException as exc:  # surfaced by close() in the loading thread
            with self.lock:
                self.error = self.error or exc

    def _request(self, batch: Batch, batch_id: str) -> tuple[str, dict[str, str], bytes]:
        load, t = self.load, self.templates
        provider_id = load.provider.id
        if load.destination.type == "webhook_record":
            _, record, is_deleted = batch.records()[0]
            vars_ = {"provider_id": provider_id, "record": record, "is_deleted": is_deleted}
            body = t.body.render(**vars_).encode() if t.body else batch._joined(is_deleted)
        else:
            records = [r for _, r, _ in batch.records()] if t.need_records else []
            vars_ = {"provider_id": provider_id, "records": records}
            body = batch.body(provider_id=provider_id, stream_id=load.stream.id, load_id=self.plan.load_id,
                              batch_id=batch_id)
        uri = t.uri.render(**vars_)
        headers = {name: tpl.render(**vars_) for name, tpl in t.headers.items()}
        return uri, headers, body

    def _deliver(self, batch: Batch) -> None:
        if self.stopped:
            return
        counts = self.load.counts
        batch_id = batch_id_for(self.plan.load_id, batch.key)
        try:
            uri, headers, body = self._request(batch, batch_id)
        except (UnsafeValue, orjson.JSONDecodeError) as exc:  # a record's value cannot go where the template puts it
            self._reject(batch, batch_id, f"not sent: {exc}")
            return
        outcome = self.client.send(body, uri=uri, headers=headers, idempotency_key=batch_id, records=batch.count)
        counts.add(requests=outcome.attempts, retries=outcome.retries, bytes_sent=len(body) * outcome.attempts)
        if outcome.accepted:
            with self.lock:
                self.plan.acked.add(batch.key)
                if self.ack_log is not None:
                    self.ack_log.write(f"{batch.key}\n".encode())
                self.failed_in_a_row = 0
                counts.add(batches_sent=1, records_loaded=batch.count, records_deleted_sent=batch.deleted_count)
                if self.ack_log is None:
                    self._save()
            return
        if outcome.status == 413 and batch.count > 1:
            counts.add(batches_split=1)
            for half in batch.split():
                self._deliver(half)
            return
        if outcome.status is None:
            with self.lock:
                self.failed_in_a_row += 1
                if self.failed_in_a_row >= self.settings.max_failed_batches_in_a_row:
                    self.stopped = f"failed {self.failed_in_a_row} batches in a row ({outcome.detail})"
        self._reject(batch, batch_id, outcome.detail)

    def _reject(self, batch: Batch, batch_id: str, reason: str) -> None:
        """Keep a batch's records in the dead letter, then mark it done: in that order, so a failure
        to write the dead letter fails the load and leaves the batch pending, never lost."""
        rows = [
            {"record_id": rid, "record": text, "is_deleted": is_del, "reason": reason,
             "load_id": self.plan.load_id, "batch_id": batch_id}
            for rid, text, is_del in batch.record_texts()
        ]
        name = f"{self.plan.load_id}-{batch.key.replace('.', '_')}"
        path = self.load.state.write_dead_letter(name, rows)
        with self.lock:
            self.load.dead_letters.append(path)
            self.plan.rejected.add(batch.key)
            self.load.counts.add(batches_rejected=1, records_errored=batch.count)
            self._save(force=True)
        self.load.log(f"  batch {batch_id} not accepted ({reason}); {batch.count} records kept in the dead letter")

    def _save(self, *, force: bool = False) -> None:
        """Save the plan; without an ack log (object stores) at most every PLAN_SAVE_INTERVAL_SECONDS.

        With an ack log every acknowledgement is on record at once, so a crash re-sends only the
        batches the endpoint did not acknowledge; without one, also those acknowledged since the
        last save (with the same ids, so an idempotent endpoint drops them).
        """
        now = time.monotonic()
        if self.persist and (force or now - self.saved_at >= PLAN_SAVE_INTERVAL_SECONDS):
            self.load.state.save_plan(self.plan)
            self.saved_at = now


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
) -> LoadResult:
    """One Load of a stream; with ``record_ids`` or ``redeliver_dead_letters``, a redelivery instead."""
    started = time.monotonic()
    load = _Load(config, config.stream(stream_id), storage, transport, sleep, log)
    if record_ids is not None or redeliver_dead_letters:
        return _redeliver(load, record_ids or [], redeliver_dead_letters, started)

    plan = load.state.open_plan()
    resumed = plan is not None
    if plan is None:
        latest = load.lake.latest()
        start, end = load.state.delivered_through(), latest.seq if latest else 0
        if end <= start:
            log(f"stream '{stream_id}': nothing pending (delivered through commit {start})")
            return LoadResult(stream_id, load.provider.id, None, start, end, False, load.counts,
                              time.monotonic() - started)
        plan = LoadPlan(load_id_for(lake_id(load.storage), load.provider.id, stream_id, start, end,
                                    latest.token), start, end)
    else:
        log(f"stream '{stream_id}': resuming load {plan.load_id} ({len(plan.acked)} batches already acknowledged)")

    commits = [c for c in load.lake.commits() if plan.from_commit < c.seq <= plan.to_commit]
    load.check_mappings(load.lake.schema(commits))
    load.state.save_plan(plan)
    log(
        f"loading stream '{stream_id}' ({load.provider.id}/{load.dataset.id} -> {load.destination.id}): "
        f"commits {plan.from_commit + 1}..{plan.to_commit}, load {plan.load_id}"
    )
    columns = list(dict.fromkeys([*load.mapper.source_columns, load.dataset.primary_key, OP_COLUMN]))
    tables = (pa.Table.from_batches([b]) for b in load.lake.scan(commits, columns=columns, use_threads=False)
              if b.num_rows)
    load.deliver(tables, plan, persist=True)
    load.state.finish(plan, load.counts.as_dict())
    c = load.counts
    log(f"stream '{stream_id}': {c.records_loaded} records delivered in {c.batches_sent} batches, {c.records_errored} errored")
    return LoadResult(stream_id, load.provider.id, plan.load_id, plan.from_commit, plan.to_commit, resumed, c,
                      time.monotonic() - started, load.dead_letters)


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
        return LoadResult(load.stream.id, load.provider.id, None, 0, 0, False, load.counts,
                          time.monotonic() - started, redelivery=True)
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
    plan = LoadPlan(load_id_for(lake_id(load.storage), load.provider.id, load.stream.id, "redeliver", latest.seq,
                                latest.token, *sorted(ids)), 0, latest.seq)
    load.log(f"redelivering {len(ids)} records of stream '{load.stream.id}' (load {plan.load_id})")
    columns = list(dict.fromkeys([*load.mapper.source_columns, key, OP_COLUMN]))
    load.deliver([found.select(columns)] if found is not None and found.num_rows else [], plan, persist=False)
    load.state.remove_dead_letters([p for p in sources if p not in load.dead_letters])
    c = load.counts
    load.log(f"redelivered {c.records_loaded} records, {c.records_errored} errored")
    return LoadResult(load.stream.id, load.provider.id, plan.load_id, 0, latest.seq, False, c,
                      time.monotonic() - started, load.dead_letters, redelivery=True)

