"""A load's counters stay exact when batches are sent concurrently and some are rejected."""

import itertools
import threading

from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load

from .test_delivery_ids import local_config

ROWS = 400


def test_concurrent_load_totals_add_up(tmp_path):
    numbers, lock = itertools.count(), threading.Lock()

    def every_third_rejected(request):
        with lock:
            return 400 if next(numbers) % 3 == 2 else None

    with Receiver(fault=every_third_rejected) as receiver:
        config = local_config(tmp_path, "lake", receiver, {i: f"u{i}@x" for i in range(ROWS)}, max_concurrency=4)
        run_extract(config, "users")
        c = run_load(config, "users-app").counts
        stored = len(receiver.store.records())
    assert receiver.max_in_flight > 1  # really concurrent
    assert c.records_processed == c.records_valid == ROWS
    assert c.records_loaded == stored and c.records_loaded + c.records_errored == ROWS
    assert c.batches_sent + c.batches_rejected == ROWS // 2 and c.batches_rejected == (ROWS // 2) // 3
    assert c.requests == ROWS // 2
