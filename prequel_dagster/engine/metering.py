"""Metering the records a Prequel stream delivers from a data stream (issue 14): each acknowledged
batch goes into the usage ledger (``lake.usage``) once, keyed by its batch id, before the load's ack
log records it."""

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow.compute as pc

from ..config.models import PrequelConfig, Stream
from ..delivery.wire import Batch
from ..lake.usage import MICRO_CENTS_PER_USD, offer_terms, record_usage
from ..stores import Store


class Meter:
    """The usage of one load of a stream that delivers a data stream."""

    def __init__(self, store: Store, data_stream_id: str, stream_id: str, offers: list[dict[str, Any]]):
        self.store, self.data_stream_id, self.stream_id, self.offers = store, data_stream_id, stream_id, offers
        self.lock = threading.Lock()
        self.records = 0
        self.micro_cents: Counter[str] = Counter()
        self.batches_already_metered = 0

    @classmethod
    def of(cls, config: PrequelConfig, stream: Stream, store: Store) -> "Meter | None":
        """A meter when the stream delivers a data stream (None otherwise)."""
        if not config.is_data_stream(stream.dataset_id):
            return None
        data_stream = config.data_stream(stream.dataset_id)
        return cls(store, data_stream.id, stream.id, offer_terms(data_stream.offers or []))

    def callback(self, load_id: str) -> Callable[[Batch, str], None]:
        def on_accepted(batch: Batch, batch_id: str) -> None:
            providers = providers_of(batch)
            metered = record_usage(
                self.store,
                data_stream_id=self.data_stream_id,
                stream_id=self.stream_id,
                load_id=load_id,
                batch_id=batch_id,
                providers=providers,
                offers=self.offers,
            )
            with self.lock:
                if metered.new:
                    self.records += metered.records
                    self.micro_cents.update(metered.micro_cents)
                else:
                    self.batches_already_metered += 1

        return on_accepted

    def summary(self) -> dict[str, Any]:
        """``records_metered`` and ``cost_usd`` (at the first offer, the data stream's main one) and per offer."""
        by_offer = {offer: cents / MICRO_CENTS_PER_USD for offer, cents in self.micro_cents.items()}
        first = self.offers[0]["offer_id"] if self.offers else None
        return {
            "records_metered": self.records,
            "cost_usd": by_offer.get(first, 0.0) if first else 0.0,
            "cost_usd_by_offer": by_offer,
            "batches_already_metered": self.batches_already_metered,
        }


def providers_of(batch: Batch) -> Counter[str]:
    """Delivered (not deleted) records per provider: the provider is the first part of each ``_record_id``."""
    out: Counter[str] = Counter()
    for part in batch.parts:
        ids = part.record_ids
        if part.deleted_count:
            ids = ids.filter(pc.invert(part.deleted))
        if not len(ids):
            continue
        providers = pc.extract_regex(ids, r"^(?P<p>[^/]*)/").field("p")
        counted = pc.value_counts(providers)
        for value, count in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist()):
            out[value if value is not None else ""] += count
    return out


__all__ = ["Meter", "providers_of"]
