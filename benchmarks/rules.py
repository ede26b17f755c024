"""Data rules (issue 14): a Narrative data stream's rules over 2M rows, against the same logic written
directly in pyarrow.compute, in the same run.

The stream: 8 field filters of every kind (not-null, include list, exclude list, boolean include,
numeric ranges on a float and an int, a recency window with an absolute bound on a timestamp, an
expressions filter on a dotted path into a struct) plus the two no-op kinds, deduplication on
(device_id, app) over P30D and a frequency filter on device_id (2 to 5 apps in the period), and the
projection to exported fields. Two loads ten days apart: the first builds the state, the second (the
one measured) runs against it. Each side keeps its state in a local folder between loads (ours: the
hashed subjects in the lake via ``commit_state``; the hand-written one: the subject values as
Parquet), and both must deliver the same rows.

Figures: ``rules_vs_hand_pyarrow`` (our time / hand-written time on the second load, median of the
repeats; target <= 1.5), ``rules_rows_per_second`` (second load) and ``dedup_state_bytes_per_subject``
(the committed state file over its subjects; target <= 32).
"""

import datetime as dt
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prequel_dagster.rules import apply_rules, commit_state, compile_rules, load_state
from prequel_dagster.rules.state import state_file
from prequel_dagster.stores import LocalStore

TARGET_VS_HAND = 1.5
TARGET_BYTES_PER_SUBJECT = 32
DEVICES = 500_000
APPS = 10
COUNTRIES = [f"C{i:02d}" for i in range(20)]
INCLUDED_COUNTRIES = COUNTRIES[:19]
PLANS = ["free", "pro", "team", "enterprise", "trial"]
EXPORTED = ["device_id", "app", "country", "plan", "score", "event_at", "geo.lat"]
TO_BOUND = "2026-03-01T00:00:00Z"

RULES = {
    "column_sets": [
        {
            "dataset_id": 1,
            "fields": [
                {"field": "device_id", "filter": None, "exported": True},
                {"field": "app", "filter": "include_all_values_including_nulls_filter", "exported": True},
                {"field": "email", "filter": "include_only_if_not_null_filter", "exported": False},
                {"field": "country", "filter": {"type": "include", "list": INCLUDED_COUNTRIES}, "exported": True},
                {"field": "plan", "filter": {"type": "exclude", "list": ["trial"]}, "exported": True},
                {
                    "field": "score",
                    "filter": {
                        "min": {"type": "inclusive", "value": "10"},
                        "max": {"type": "exclusive", "value": "990"},
                    },
                    "exported": True,
                },
                {
                    "field": "amount",
                    "filter": {"min": {"type": "exclusive", "value": "-50"}, "max": None},
                    "exported": False,
                },
                {"field": "is_active", "filter": {"type": "include", "list": ["true"]}, "exported": False},
                {
                    "field": "event_at",
                    "filter": {"recency": "P30D", "from": None, "to": {"type": "exclusive", "value": TO_BOUND}},
                    "exported": True,
                },
                {
                    "field": "geo.lat",
                    "filter": {"expressions": ["`geo.lat` > -80", "`geo.lat` < 80"]},
                    "exported": True,
                },
            ],
        }
    ],
    "attributes": None,
    "deduplication": {"period": "P30D", "column_references": ["device_id", "app"], "attribute_references": None},
    "frequency_filter": {"column_references": ["device_id"], "min_inclusive": 2, "max_inclusive": 5},
}


def make_rows(rows: int, now: dt.datetime, seed: int) -> pa.Table:
    """Synthetic events, built with numpy (strings from a small vocabulary by index)."""
    rng = np.random.default_rng(seed)
    device_names = pa.array([f"device-{i:08d}" for i in range(DEVICES)])
    devices = device_names.take(pa.array(rng.integers(0, DEVICES, rows)))
    emails = pa.array(np.where(rng.random(rows) < 0.02, None, "someone@example.com"), pa.string())
    now_us = int(now.timestamp() * 1_000_000)
    event_at = now_us - rng.integers(0, 32 * 86_400_000_000, rows)
    return pa.table(
        {
            "device_id": devices,
            "app": pa.array(rng.integers(0, APPS, rows).astype(np.int32)),
            "email": emails,
            "country": pa.array(COUNTRIES).take(pa.array(rng.integers(0, len(COUNTRIES), rows))),
            "plan": pa.array(PLANS).take(pa.array(rng.integers(0, len(PLANS), rows))),
            "score": pa.array(rng.random(rows) * 1000.0),
            "amount": pa.array(rng.integers(-100, 1000, rows)),
            "is_active": pa.array(rng.random(rows) < 0.95),
            "event_at": pa.array(event_at, pa.timestamp("us", "UTC")),
            "geo": pa.StructArray.from_arrays(
                [pa.array(rng.random(rows) * 180 - 90), pa.array(rng.random(rows) * 360 - 180)], names=["lat", "lon"]
            ),
        }
    )


# ---------------------------------------------------------------------------- ours


def ours(table: pa.Table, compiled, store: LocalStore, directory: str, now: dt.datetime) -> pa.Table:
    state = load_state(store, directory, compiled.rules)
    result = apply_rules(table, compiled, state=state, now=now)
    commit_state(store, directory, result.pending_state, now=now)
    return result.table


# ---------------------------------------------------------------------------- by hand


def hand_filters(table: pa.Table, now: dt.datetime) -> pa.Table:
    """The field filters and the projection, written directly with pyarrow.compute."""
    recent_from = pa.scalar(now - dt.timedelta(days=30), pa.timestamp("us", "UTC"))
    to_bound = pa.scalar(dt.datetime.fromisoformat(TO_BOUND), pa.timestamp("us", "UTC"))
    lat = pc.struct_field(table["geo"], "lat")
    mask = pc.is_valid(table["email"])
    for part in (
        pc.is_in(table["country"], value_set=pa.array(INCLUDED_COUNTRIES)),
        pc.invert(pc.is_in(table["plan"], value_set=pa.array(["trial"]))),
        pc.and_kleene(pc.greater_equal(table["score"], 10.0), pc.less(table["score"], 990.0)),
        pc.greater(table["amount"], -50),
        pc.is_in(table["is_active"], value_set=pa.array([True])),
        pc.and_kleene(pc.greater_equal(table["event_at"], recent_from), pc.less(table["event_at"], to_bound)),
        pc.and_kleene(pc.greater(lat, -80.0), pc.less(lat, 80.0)),
    ):
        mask = pc.and_(mask, pc.fill_null(part, False))
    rows = table.filter(mask)
    rows = rows.append_column("geo.lat", pc.struct_field(rows["geo"], "lat"))
    return rows.select(EXPORTED)


def hand(table: pa.Table, state_path: Path, now: dt.datetime) -> pa.Table:
    """The same rules written directly with pyarrow.compute (and its group_by/join)."""
    rows = hand_filters(table, now)
    rows = rows.append_column("_row", pa.array(np.arange(rows.num_rows)))

    # deduplication: the first row of each (device_id, app), unless delivered within the period
    firsts = rows.group_by(["device_id", "app"], use_threads=False).aggregate([("_row", "min")])
    batch = rows.take(firsts["_row_min"])
    cutoff = int((now - dt.timedelta(days=30)).timestamp())
    state = pq.read_table(state_path) if state_path.exists() else _empty_hand_state()
    batch = batch.join(state, keys=["device_id", "app"], join_type="left outer", use_threads=False)
    recent = pc.fill_null(pc.greater(batch["since"], cutoff), False)
    blocked = pc.and_(recent, pc.fill_null(batch["delivered"], False))
    counted = pc.and_(recent, pc.invert(pc.fill_null(batch["delivered"], False)))
    accepted = batch.filter(pc.invert(blocked))
    counted = counted.filter(pc.invert(blocked))

    # frequency: distinct (device_id, app) per device_id within the period (the state's and this load's)
    window = state.filter(pc.greater(state["since"], cutoff)).select(["group_device"])
    new = accepted.filter(pc.invert(counted)).select(["device_id"]).rename_columns(["group_device"])
    per_device = (
        pa.concat_tables([window, new]).group_by("group_device", use_threads=False).aggregate([([], "count_all")])
    )
    accepted = accepted.join(per_device, keys="device_id", right_keys="group_device", use_threads=False)
    times = accepted["count_all"]
    delivered = pc.and_(pc.greater_equal(times, 2), pc.less_equal(times, 5))

    # the state: this load's accepted subjects replace their old rows; expired ones go
    now_s = int(now.timestamp())
    fresh = pa.table(
        {
            "device_id": accepted["device_id"],
            "app": accepted["app"],
            "since": pa.array(np.full(accepted.num_rows, now_s, np.int64)),
            "delivered": delivered,
            "group_device": accepted["device_id"],
        }
    )
    kept_old = state.join(
        fresh.select(["device_id", "app"]), keys=["device_id", "app"], join_type="left anti", use_threads=False
    )
    new_state = pa.concat_tables([kept_old, fresh.cast(kept_old.schema)])
    pq.write_table(new_state.filter(pc.greater(new_state["since"], cutoff)), state_path, compression="zstd")

    out = accepted.filter(delivered)
    out = out.take(pc.sort_indices(out["_row"]))
    return out.select(EXPORTED)


def _empty_hand_state() -> pa.Table:
    return pa.table(
        {
            "device_id": pa.array([], pa.string()),
            "app": pa.array([], pa.int32()),
            "since": pa.array([], pa.int64()),
            "delivered": pa.array([], pa.bool_()),
            "group_device": pa.array([], pa.string()),
        }
    )


# ---------------------------------------------------------------------------- the run


def rules(rows: int = 2_000_000, repeats: int = 3) -> dict[str, float]:
    compiled = compile_rules(RULES)
    second_now = dt.datetime(2026, 2, 20, 12, tzinfo=dt.UTC)
    first_now = second_now - dt.timedelta(days=10)
    print(f"building 2 loads of {rows:,} rows ...", flush=True)
    first, second = make_rows(rows, first_now, 1), make_rows(rows, second_now, 2)
    timings: dict[str, list[float]] = {"ours": [], "hand": [], "ours_first": [], "hand_first": []}
    bytes_per_subject = 0.0
    for rep in range(repeats):
        root = Path(tempfile.mkdtemp(prefix="prequel-bench-rules-"))
        try:
            store, directory = LocalStore(root / "lake"), "artifacts/bench/streams/s/_rules_state"
            hand_state = root / "hand-state.parquet"
            for label, table, now in (("_first", first, first_now), ("", second, second_now)):
                started = time.perf_counter()
                got = ours(table, compiled, store, directory, now)
                timings["ours" + label].append(time.perf_counter() - started)
                started = time.perf_counter()
                expected = hand(table, hand_state, now)
                timings["hand" + label].append(time.perf_counter() - started)
                assert got.num_rows == expected.num_rows, (got.num_rows, expected.num_rows)
                assert got.equals(expected.cast(got.schema)), "the two sides delivered different rows"
            path = state_file(store, directory)
            assert path is not None
            subjects = load_state(store, directory, compiled.rules).subjects
            bytes_per_subject = store.size(path) / subjects
            print(
                f"  rep {rep + 1}: first load ours {timings['ours_first'][-1]:.2f}s / hand {timings['hand_first'][-1]:.2f}s, "
                f"second load ours {timings['ours'][-1]:.2f}s / hand {timings['hand'][-1]:.2f}s, "
                f"{got.num_rows:,} rows out, state {subjects:,} subjects in {store.size(path):,} bytes",
                flush=True,
            )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    filters_only = compile_rules({**RULES, "deduplication": None, "frequency_filter": None})
    ours_filters, hand_filters_s = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        got = apply_rules(second, filters_only, now=second_now).table
        ours_filters.append(time.perf_counter() - started)
        started = time.perf_counter()
        expected = hand_filters(second, second_now)
        hand_filters_s.append(time.perf_counter() - started)
        assert got.equals(expected.cast(got.schema))
    print(
        f"  the filters and projection alone: ours {statistics.median(ours_filters):.3f}s, "
        f"hand {statistics.median(hand_filters_s):.3f}s ({got.num_rows:,} of {rows:,} rows kept)"
    )
    ours_s, hand_s = statistics.median(timings["ours"]), statistics.median(timings["hand"])
    figures = {
        "rules_vs_hand_pyarrow": ours_s / hand_s,
        "rules_rows_per_second": rows / ours_s,
        "dedup_state_bytes_per_subject": bytes_per_subject,
    }
    print(f"rules_vs_hand_pyarrow={figures['rules_vs_hand_pyarrow']:.2f}")
    print(f"rules_rows_per_second={figures['rules_rows_per_second']:.0f}")
    print(f"dedup_state_bytes_per_subject={figures['dedup_state_bytes_per_subject']:.1f}")
    return figures


if __name__ == "__main__":
    rules(int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000)
