"""``prequel-dagster usage`` and ``test-transform`` for a data stream (issue 14)."""

import argparse
import datetime as dt
from typing import Any


def cmd_usage(args: argparse.Namespace) -> int:
    """The usage ledger per day, provider, data stream, stream and offer."""
    from .cli_config import UsageError, _load
    from .config.data_streams import data_stream_datalake_id
    from .lake.usage import read_usage
    from .stores import open_datalake

    config = _load(args)
    try:
        since = dt.date.fromisoformat(args.since) if args.since else None
    except ValueError:
        raise UsageError(f"--since {args.since!r} is not a date; write YYYY-MM-DD") from None
    streams = [config.data_stream(args.data_stream)] if args.data_stream else list(config.data_streams)
    lakes = {data_stream_datalake_id(config, s) for s in streams}
    rows = []
    for lake in sorted(lakes):
        store = open_datalake(config.datalake(lake), config)
        for s in streams:
            if data_stream_datalake_id(config, s) == lake:
                rows += read_usage(store, data_stream_id=s.id, since=since, provider_id=args.provider)
    if args.json:
        import json

        print(json.dumps([r.as_dict() for r in rows], indent=1))
        return 0
    print(
        f"{'day':<10}  {'provider':<16} {'data stream':<16} {'stream':<16} {'channel':<19} {'pricing':<20} "
        f"{'records':>9} {'cost_usd':>12}"
    )
    for r in rows:
        print(
            f"{r.day:<10}  {r.provider_id:<16} {r.data_stream_id:<16} {r.stream_id:<16} {r.channel:<19} "
            f"{r.pricing_type:<20} {r.records:>9} {r.cost_usd:>12.6f}"
        )
    total: dict[str, Any] = {}
    for r in rows:
        total[r.channel] = total.get(r.channel, 0.0) + r.cost_usd
    print(
        f"\n{len(rows)} lines; " + (", ".join(f"{c}: ${v:.6f}" for c, v in sorted(total.items())) or "nothing metered")
    )
    return 0


def test_transform_data_stream(config: Any, data_stream_id: str, limit: int) -> int:
    """Which rule drops each sample row (the latest rows of each dataset the data stream reads)."""
    from .engine.data_stream import explain_data_stream

    rows = explain_data_stream(config, data_stream_id, limit=limit)
    dropped = 0
    for row in rows:
        if row.rule is None:
            print(f"kept     {row.record_id}")
        else:
            dropped += 1
            print(f"DROPPED  {row.record_id}  by data_rules.{row.rule}: {row.description}")
    print(f"\n{len(rows)} sample rows of data stream '{data_stream_id}': {len(rows) - dropped} kept, {dropped} dropped")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("usage", help="the data streams' usage ledger: records and cost per day, provider and offer")
    p.add_argument("--since", help="from this day on (YYYY-MM-DD)")
    p.add_argument("--provider", help="only this provider's records")
    p.add_argument("--data-stream", help="only this data stream")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--config", help="config file (default: $PREQUEL_CONFIG or ./prequel.yaml)")
    p.set_defaults(func=cmd_usage)
