"""Load: deliver a stream's pending records (mapped, validated) to its destination, resumably."""

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..config.errors import DeliveryError
from ..config.models import PrequelConfig
from ..delivery.webhook import WebhookClient
from ..delivery.wire import Batch, Batcher, batch_id_for, encode_records, load_id_for
from ..lake.commits import OP_COLUMN, DatasetLog
from ..lake.deliveries import LoadPlan, StreamState
from ..lake.storage import LakeStorage, open_storage
from ..transform.mapping import StreamMapper
from ..transform.schema import converted_table, validate_records

Log = Callable[[str], None]


@dataclass
class LoadCounts:
    """Prequel's Load counters plus what the wire saw."""

    records_processed: int = 0
    records_transformed: int = 0
    records_valid: int = 0
    records_loaded: int = 0
    records_errored: int = 0
    records_deleted_sent: int = 0
    batches_sent: int = 0
    batches_skipped_already_acked: int = 0
    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


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


class _Rejected(Exception):
    pass


def run_load(
    config: PrequelConfig,
    stream_id: str,
    *,
    storage: LakeStorage | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    log: Log = lambda message: None,
) -> LoadResult:
    """One Load of a stream: the records of dataset commits not yet delivered, in batches."""
    started = time.monotonic()
    stream = config.stream(stream_id)
    dataset = config.dataset(stream.dataset_id)
    provider = config.provider_of_dataset(dataset)
    destination = config.destination(stream.destination_id)
    storage = storage or open_storage(config.datalake(provider.datalake_id), config)
    lake = DatasetLog(storage, provider.id, dataset.id)
    state = StreamState(storage, provider.id, stream.id)
    counts = LoadCounts()

    plan = state.open_plan()
    resumed = plan is not None
    if plan is None:
        latest = lake.latest()
        start, end = state.delivered_through(), latest.seq if latest else 0
        if end <= start:
            log(f"stream '{stream.id}': nothing pending (delivered through commit {start})")
            return LoadResult(stream.id, provider.id, None, start, end, False, counts, time.monotonic() - started)
        plan = LoadPlan(load_id_for(stream.id, start, end), start, end)
        state.save_plan(plan)
    else:
        log(f"stream '{stream.id}': resuming load {plan.load_id} ({len(plan.acked)} batches already acknowledged)")

    commits = [c for c in lake.commits() if plan.from_commit < c.seq <= plan.to_commit]
    mapper = StreamMapper(stream)
    schema = lake.schema(commits)
    available = schema.names if schema is not None else []
    problems = mapper.check_columns(available)
    if problems:
        raise DeliveryError("; ".join(problems) + " — fix the stream's mappings; nothing was sent")

    record_schema = destination.record_schema
    required = set(record_schema.get("required", []))
    settings = destination.webhook_batch
    if settings is None:
        raise DeliveryError(f"destination '{destination.id}': webhook_record delivery is not supported yet")
    batcher = Batcher(settings.max_records_per_batch, settings.max_bytes_per_batch)
    client = WebhookClient(destination, provider.id, transport=transport, sleep=sleep)
    invalid_rows: list[dict] = []
    dead_letters: list[str] = []
    log(
        f"loading stream '{stream.id}' ({provider.id}/{dataset.id} -> {destination.id}): "
        f"commits {plan.from_commit + 1}..{plan.to_commit}, load {plan.load_id}"
    )

    def send(batch: Batch) -> None:
        batch_id = batch_id_for(plan.load_id, batch.batch_no)
        if plan.done(batch.batch_no):
            counts.batches_skipped_already_acked += 1
            if batch.batch_no in plan.acked:
                counts.records_loaded += batch.count
            else:
                counts.records_errored += batch.count
            return
        body = batch.body(provider_id=provider.id, stream_id=stream.id, load_id=plan.load_id, batch_id=batch_id)
        outcome = client.send(body, idempotency_key=batch_id, records=batch.count)
        counts.requests += outcome.attempts
        counts.retries += outcome.retries
        counts.bytes_sent += len(body) * outcome.attempts
        if outcome.accepted:
            plan.acked.add(batch.batch_no)
            counts.batches_sent += 1
            counts.records_loaded += batch.count
            counts.records_deleted_sent += len(batch.deleted)
        elif outcome.status is None:
            state.save_plan(plan)
            raise DeliveryError(
                f"stream '{stream.id}': destination '{destination.id}' did not accept batch {batch_id} "
                f"({outcome.detail}); {counts.records_loaded} records were delivered, the rest stay pending "
                "and the next load resumes with the same batch ids"
            )
        else:
            plan.rejected.add(batch.batch_no)
            counts.records_errored += batch.count
            rows = [
                {"record": r.decode(), "is_deleted": d, "reason": outcome.detail, "load_id": plan.load_id, "batch_id": batch_id}
                for rows_, d in ((batch.records, False), (batch.deleted, True))
                for r in rows_
            ]
            dead_letters.append(state.write_dead_letter(f"{plan.load_id}-{batch.batch_no:06d}", rows))
            log(f"  batch {batch_id} rejected ({outcome.detail}); {batch.count} records kept in the dead letter")
        state.save_plan(plan)

    try:
        for part in _pending_records(lake, commits, mapper.source_columns):
            counts.records_processed += part.num_rows
            mapped = mapper.apply(part.drop_columns([OP_COLUMN]))
            counts.records_transformed += mapped.num_rows
            checked = validate_records(mapped, record_schema)
            deleted = pc.equal(part.column(OP_COLUMN), "delete")
            n_valid = checked.valid.num_rows
            counts.records_valid += n_valid
            if n_valid < mapped.num_rows:
                bad = pc.invert(checked.valid_mask)
                bad_records = converted_table(mapped.filter(bad), record_schema)
                for rec, is_del, why in zip(
                    encode_records(bad_records, set()),
                    deleted.filter(bad).to_pylist(),
                    checked.violations.filter(bad).to_pylist(),
                ):
                    invalid_rows.append(
                        {"record": rec.decode(), "is_deleted": is_del, "reason": f"record_schema: {why}",
                         "load_id": plan.load_id, "batch_id": None}
                    )
                counts.records_errored += mapped.num_rows - n_valid
            valid_deleted = deleted.filter(checked.valid_mask).to_pylist()
            for record, is_deleted in zip(encode_records(checked.valid, required), valid_deleted):
                for batch in batcher.add(record, deleted=is_deleted):
                    send(batch)
        for batch in batcher.flush():
            send(batch)
    finally:
        client.close()

    if invalid_rows:
        dead_letters.append(state.write_dead_letter(f"{plan.load_id}-invalid", invalid_rows))
        log(f"  {len(invalid_rows)} records failed record_schema and were kept in the dead letter")
    state.finish(plan, counts.as_dict())
    log(
        f"stream '{stream.id}': {counts.records_loaded} records delivered in {counts.batches_sent} batches, "
        f"{counts.records_errored} errored"
    )
    return LoadResult(
        stream.id, provider.id, plan.load_id, plan.from_commit, plan.to_commit, resumed, counts,
        time.monotonic() - started, dead_letters,
    )


def _pending_records(lake: DatasetLog, commits: list, columns: list[str]) -> Iterator[pa.Table]:
    wanted = list(dict.fromkeys([*columns, OP_COLUMN]))
    for batch in lake.scan(commits, columns=wanted):
        if batch.num_rows:
            yield pa.Table.from_batches([batch])
