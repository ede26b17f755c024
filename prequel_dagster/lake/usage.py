"""The usage ledger of data streams (issue 14): what each delivered record is worth under each offer,
per provider, stream and day. Append-only, in the data stream's datalake:

```
artifacts/_data_streams/usage/<data_stream_id>.<stream_id>.<batch_id>.json
```
(one folder: ids never hold a ``.``).

One entry per acknowledged batch, created only if absent (the batch id is the key): a batch sent
again after a retry, a resumed load or a crash has the same id, so it is metered exactly once. The
entry is written when the destination acknowledges the batch and *before* the load's ack log records
it: a crash between the two re-sends the batch, whose entry is already there. Deleted records
(``deleted_records``) are not metered.

Each entry holds one line per provider whose records the batch carried, with the value under every
offer of the data stream: ``pricing.type`` ``per_record`` meters the price, ``max_price_per_record``
meters the ceiling (the most a record may cost); USD per record = ``micro_cents_usd`` / 10^8.
"""

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..stores import CommitConflict, Store

USAGE_DIR = "artifacts/_data_streams/usage"
MICRO_CENTS_PER_USD = 10**8


def usage_path(data_stream_id: str, stream_id: str, batch_id: str) -> str:
    return f"{USAGE_DIR}/{data_stream_id}.{stream_id}.{batch_id}.json"


@dataclass(frozen=True)
class Metered:
    """What one acknowledged batch added to the ledger (zero when it was metered before)."""

    records: int
    micro_cents: dict[str, int]  # per offer (its id, or its channel when it has none)
    new: bool


def offer_terms(offers: Iterable[Any]) -> list[dict[str, Any]]:
    """The offers as the ledger prices records: id, channel, pricing type and micro-cents per record."""
    out = []
    for i, offer in enumerate(offers):
        out.append(
            {
                "offer_id": offer.id or f"{offer.channel}-{i}",
                "channel": offer.channel,
                "pricing_type": offer.pricing.type,
                "micro_cents_usd": offer.pricing.micro_cents_usd,
            }
        )
    return out


def record_usage(
    store: Store,
    *,
    data_stream_id: str,
    stream_id: str,
    load_id: str,
    batch_id: str,
    providers: Counter[str],
    offers: list[dict[str, Any]],
    now: dt.datetime | None = None,
) -> Metered:
    """Meter one acknowledged batch (``providers``: its delivered records per provider), once."""
    now = now or dt.datetime.now(dt.UTC)
    records = sum(providers.values())
    lines = [
        {
            "provider_id": provider,
            "records": count,
            "offers": [{**o, "micro_cents": o["micro_cents_usd"] * count} for o in offers],
        }
        for provider, count in sorted(providers.items())
    ]
    entry = {
        "format": 1,
        "batch_id": batch_id,
        "load_id": load_id,
        "data_stream_id": data_stream_id,
        "stream_id": stream_id,
        "day": now.date().isoformat(),
        "metered_at": now.isoformat(),
        "lines": lines,
    }
    cost = {o["offer_id"]: o["micro_cents_usd"] * records for o in offers}
    try:
        store.create_exclusive(usage_path(data_stream_id, stream_id, batch_id), json.dumps(entry).encode())
    except CommitConflict:
        return Metered(0, dict.fromkeys(cost, 0), False)
    return Metered(records, cost, True)


@dataclass(frozen=True)
class UsageRow:
    day: str
    provider_id: str
    data_stream_id: str
    stream_id: str
    offer_id: str
    channel: str
    pricing_type: str
    micro_cents_usd: int
    records: int
    micro_cents: int

    @property
    def cost_usd(self) -> float:
        return self.micro_cents / MICRO_CENTS_PER_USD

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "provider_id": self.provider_id,
            "data_stream_id": self.data_stream_id,
            "stream_id": self.stream_id,
            "offer_id": self.offer_id,
            "channel": self.channel,
            "pricing_type": self.pricing_type,
            "micro_cents_usd": self.micro_cents_usd,
            "records": self.records,
            "cost_usd": self.cost_usd,
        }


def read_usage(
    store: Store,
    *,
    data_stream_id: str | None = None,
    since: dt.date | None = None,
    provider_id: str | None = None,
) -> list[UsageRow]:
    """The ledger summed per day, provider, data stream, stream and offer (sorted)."""
    sums: Counter[tuple[Any, ...]] = Counter()
    micro: Counter[tuple[Any, ...]] = Counter()
    for name in store.list_names(USAGE_DIR):
        if not name.endswith(".json") or (data_stream_id is not None and not name.startswith(data_stream_id + ".")):
            continue
        entry = json.loads(store.read_bytes(f"{USAGE_DIR}/{name}"))
        if since is not None and entry["day"] < since.isoformat():
            continue
        ds = entry["data_stream_id"]
        for line in entry["lines"]:
            if provider_id is not None and line["provider_id"] != provider_id:
                continue
            for o in line["offers"]:
                key = (
                    entry["day"],
                    line["provider_id"],
                    ds,
                    entry["stream_id"],
                    o["offer_id"],
                    o["channel"],
                    o["pricing_type"],
                    o["micro_cents_usd"],
                )
                sums[key] += line["records"]
                micro[key] += o["micro_cents"]
            if not line["offers"]:
                key = (entry["day"], line["provider_id"], ds, entry["stream_id"], "", "", "", 0)
                sums[key] += line["records"]
    return [
        UsageRow(day, provider, ds, stream, offer, channel, pricing, price, sums[key], micro[key])
        for key in sorted(sums)
        for day, provider, ds, stream, offer, channel, pricing, price in [key]
    ]
