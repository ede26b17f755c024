"""Sending one load's batches: up to ``max_concurrency`` requests in flight, every outcome on record.

An acknowledged batch is appended to the load's ack log at once (or, on stores that cannot append,
the plan is saved every ``PLAN_SAVE_INTERVAL_SECONDS``); a rejected batch is dead-lettered before it
is marked done; a 413 halves the batch. After ``max_failed_batches_in_a_row`` batches that spent
their retries, sending stops and the rest stays pending for the next load.
"""

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from ..config.models import Destination
from ..lake.deliveries import LoadPlan, StreamState
from ..language.templates import UnsafeValue
from .counts import LoadCounts
from .requests import RequestTemplates
from .webhook import WebhookClient
from .wire import Batch, batch_id_for

PLAN_SAVE_INTERVAL_SECONDS = 0.5


class BatchSender:
    """Sends the batches of one load to one destination for one provider and stream."""

    def __init__(
        self,
        destination: Destination,
        client: WebhookClient,
        plan: LoadPlan,
        state: StreamState,
        *,
        provider_id: str,
        stream_id: str,
        counts: LoadCounts,
        log: Callable[[str], None],
        persist: bool,
        metadata: Mapping[str, Any] | None = None,
        on_accepted: Callable[[Batch, str], None] | None = None,
    ):
        self.on_accepted = on_accepted  # told of each acknowledged batch before the ack log records it (metering)
        self.destination, self.client, self.plan, self.state = destination, client, plan, state
        self.provider_id, self.stream_id, self.counts, self.log, self.persist = (
            provider_id,
            stream_id,
            counts,
            log,
            persist,
        )
        self.metadata = metadata  # in every envelope ({"resend": true, ...} on a re-send)
        self.settings = destination.webhook
        self.templates = RequestTemplates.of(destination, reveal=True)
        concurrency = destination.concurrency
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="prequel-send")
        self.slots = threading.BoundedSemaphore(concurrency * 2)  # bounds batches held in memory
        self.lock = threading.Lock()
        self.failed_in_a_row = 0
        self.stopped: str | None = None
        self.error: BaseException | None = None
        self.saved_at = 0.0
        self.ack_log = state.open_ack_log(plan) if persist else None
        self.batches_seen = 0
        self.dead_letters: list[str] = []

    def submit(self, batch: Batch) -> None:
        if self.stopped or self.error:
            return
        self.batches_seen += 1
        if self.plan.done(batch.key):
            acked = self.plan.fully_acked(batch.key)
            self.counts.add(batches_skipped_already_acked=1, records_loaded=batch.count if acked else 0)
            return
        if self.plan.leaves(batch.key) != [batch.key]:
            # split after a 413 in an earlier attempt: only its pending halves go again, under their own
            # ids (the whole under its id would repeat the halves the receiver already has)
            for half in batch.split():
                self.batches_seen -= 1
                self.submit(half)
            return
        self.slots.acquire()
        future = self.pool.submit(self._run, batch)
        future.add_done_callback(lambda _: self.slots.release())

    def close(self) -> None:
        """Wait for the batches in flight, put the plan on record, and raise the first sending error."""
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

    def _deliver(self, batch: Batch) -> None:
        if self.stopped:
            return
        batch_id = batch_id_for(self.plan.load_id, batch.key)
        try:
            uri, headers, body = self.templates.render(
                batch,
                per_record=self.destination.type == "webhook_record",
                provider_id=self.provider_id,
                stream_id=self.stream_id,
                load_id=self.plan.load_id,
                batch_id=batch_id,
                metadata=self.metadata,
            )
        except (UnsafeValue, orjson.JSONDecodeError) as exc:  # a record's value cannot go where the template puts it
            self._reject(batch, batch_id, f"not sent: {exc}")
            return
        outcome = self.client.send(body, uri=uri, headers=headers, idempotency_key=batch_id, records=batch.count)
        self.counts.add(requests=outcome.attempts, retries=outcome.retries, bytes_sent=len(body) * outcome.attempts)
        if outcome.accepted:
            if self.on_accepted is not None:  # (raises: the batch stays pending and goes again with its id)
                self.on_accepted(batch, batch_id)
            with self.lock:
                self.plan.acked.add(batch.key)
                if self.ack_log is not None:
                    self.ack_log.write(f"{batch.key}\n".encode())
                self.failed_in_a_row = 0
                self.counts.add(batches_sent=1, records_loaded=batch.count, records_deleted_sent=batch.deleted_count)
                if self.ack_log is None:
                    self._save()
            return
        if outcome.status == 413 and batch.count > 1:
            self.counts.add(batches_split=1)
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
            {
                "record_id": rid,
                "record": text,
                "is_deleted": is_del,
                "reason": reason,
                "load_id": self.plan.load_id,
                "batch_id": batch_id,
            }
            for rid, text, is_del in batch.record_texts()
        ]
        path = self.state.write_dead_letter(f"{self.plan.load_id}-{batch.key.replace('.', '_')}", rows)
        with self.lock:
            self.dead_letters.append(path)
            self.plan.rejected.add(batch.key)
            self.counts.add(batches_rejected=1, records_errored=batch.count)
            self._save(force=True)
        self.log(f"  batch {batch_id} not accepted ({reason}); {batch.count} records kept in the dead letter")

    def _save(self, *, force: bool = False) -> None:
        """Save the plan; without an ack log (object stores) at most every PLAN_SAVE_INTERVAL_SECONDS.

        With an ack log every acknowledgement is on record at once, so a crash re-sends only the
        batches the endpoint did not acknowledge; without one, also those acknowledged since the
        last save (with the same ids, so an idempotent endpoint drops them).
        """
        now = time.monotonic()
        if self.persist and (force or now - self.saved_at >= PLAN_SAVE_INTERVAL_SECONDS):
            self.state.save_plan(self.plan)
            self.saved_at = now
