"""The growth benchmark (``python benchmarks/run.py growth``): does an extract or a load cost more as
the dataset's history grows?

One dataset of a 10,000-row SQLite table on a local lake, then ``--commits`` incremental extracts
that each bring one changed row, each followed by a load to the reference receiver on loopback, with
a compaction every ``--compact-every`` commits (what a maintenance job does; retired files removed at
once). A copy of the lake and its source is kept when the dataset has 10 commits; at the end,
``--window`` more one-row extracts and loads run on each of the two lakes in turn (so both see the
same machine load), and the figures are the medians of the grown lake's over the young copy's.
The medians of the first and last ``--window`` runs of the growth itself are printed too.

Printed last, as ``key=value``: ``extract_growth_ratio``, ``load_growth_ratio`` (targets <= 1.5),
``data_files_after_<commits>`` (data files in the lake after the last compaction, target <= 50) and
the delivered record count, checked against what was extracted.
"""

import datetime as dt
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prequel_dagster.config import load_config
from prequel_dagster.delivery.receiver import Receiver, ReceiverStore
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake import layout
from prequel_dagster.lake.compaction import compact_dataset
from prequel_dagster.stores import LocalStore

ROWS = 10_000
BASE = dt.datetime(2026, 1, 1)


def _ts(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def make_source(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT, amount REAL, "
        "updated_at DATETIME NOT NULL, is_deleted BOOLEAN NOT NULL DEFAULT 0)"
    )
    db.executemany(
        "INSERT INTO users VALUES (?,?,?,?,?,0)",
        [
            (i, f"user{i}@example.com", f"User {i}", i % 997 / 7, _ts(BASE + dt.timedelta(seconds=i)))
            for i in range(1, ROWS + 1)
        ],
    )
    db.commit()
    db.close()


def config(root: Path, url: str):
    return load_config(
        {
            "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(root / "lake")}}],
            "providers": [{"id": "bench", "name": "bench", "datalake_id": "lake", "products": ["all"]}],
            "sources": [
                {"id": "db", "name": "db", "vendor": "sqlite", "provider_id": "bench", "sqlite": {"path": "users.db"}}
            ],
            "datasets": [
                {
                    "id": "users",
                    "name": "users",
                    "source_id": "db",
                    "table": {"source_table_name": "users"},
                    "type": "dimension",
                    "dimension": {
                        "primary_key_column": "id",
                        "last_modified_column": "updated_at",
                        "is_deleted_column": "is_deleted",
                    },
                }
            ],
            "destinations": [
                {
                    "id": "app",
                    "name": "app",
                    "type": "webhook_batch",
                    "max_records_per_minute": 10**9,
                    "record_schema": {
                        "type": "object",
                        "required": ["id", "email"],
                        "properties": {
                            "id": {"type": "string"},
                            "email": {"type": "string"},
                            "name": {"type": "string"},
                        },
                    },
                    "webhook_batch": {"request_template": {"uri": url + "/batches"}, "max_records_per_batch": 1000},
                }
            ],
            "streams": [
                {
                    "id": "users-app",
                    "name": "users",
                    "dataset_id": "users",
                    "destination_id": "app",
                    "mappings": [
                        {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(id)"}},
                        {"target_field": "email", "field_type": "field", "column": {"name": "email"}},
                        {"target_field": "name", "field_type": "field", "column": {"name": "name"}},
                    ],
                }
            ],
        },
        base_dir=root,
    )


def data_files(lake: Path) -> int:
    directory = lake / layout.dataset_dir("bench", "users")
    return sum(1 for folder in ("data", "compacted") for _ in (directory / folder).glob("*.parquet"))


class Lake:
    """A source and its lake, changed one row at a time: each step is one extract and one load, timed."""

    def __init__(self, root: Path, url: str):
        self.root = root
        self.cfg = config(root, url)
        self.storage = LocalStore(root / "lake")
        self.source = sqlite3.connect(root / "users.db")
        self.extract_s: dict[int, float] = {}
        self.load_s: dict[int, float] = {}

    def step(self, i: int) -> int:
        key = (i * 7919) % ROWS + 1
        later = _ts(BASE + dt.timedelta(days=1, seconds=i))
        self.source.execute(
            "UPDATE users SET email = ?, updated_at = ? WHERE id = ?", (f"v{i}-{key}@example.com", later, key)
        )
        self.source.commit()
        t = time.perf_counter()
        result = run_extract(self.cfg, "users", storage=self.storage)
        elapsed = time.perf_counter() - t
        assert result.commit is not None and result.rows_written == 1, result.counts
        t = time.perf_counter()
        loaded = run_load(self.cfg, "users-app", storage=self.storage)
        self.load_s[result.commit.seq] = time.perf_counter() - t
        self.extract_s[result.commit.seq] = elapsed
        assert loaded.counts.records_loaded == 1, loaded.counts
        return result.commit.seq

    def close(self) -> None:
        self.source.close()


def run(commits: int, compact_every: int, window: int) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix="prequel-growth-"))
    try:
        (root / "grown").mkdir()
        make_source(root / "grown" / "users.db")
        with Receiver(ReceiverStore(), keep_requests=False) as receiver:
            grown = Lake(root / "grown", receiver.url)
            assert run_extract(grown.cfg, "users", storage=grown.storage).counts.records_new_inserted == ROWS
            assert run_load(grown.cfg, "users-app", storage=grown.storage).counts.records_loaded == ROWS
            young: Lake | None = None
            compaction_s: list[float] = []
            started = time.perf_counter()
            for i in range(1, commits + 1):
                seq = grown.step(i)
                if seq == 10:  # the young lake: this one as it is at 10 commits
                    shutil.copytree(root / "grown", root / "young")
                    young = Lake(root / "young", receiver.url)
                if seq % compact_every == 0:
                    t = time.perf_counter()
                    compact_dataset(grown.storage, "bench", "users", min_files=2, remove_retired_after=dt.timedelta(0))
                    compaction_s.append(time.perf_counter() - t)
                if i % 250 == 0:
                    print(
                        f"  {i:5d} extracts ({time.perf_counter() - started:5.0f} s): extract "
                        f"{1000 * grown.extract_s[seq]:5.1f} ms, load {1000 * grown.load_s[seq]:5.1f} ms, "
                        f"{data_files(root / 'grown' / 'lake')} data files",
                        flush=True,
                    )
            before_last = data_files(root / "grown" / "lake")
            compact_dataset(grown.storage, "bench", "users", min_files=2, remove_retired_after=dt.timedelta(0))
            after = data_files(root / "grown" / "lake")
            assert young is not None
            sequential = {name: dict(getattr(grown, name)) for name in ("extract_s", "load_s")}
            end = {}
            for j in range(window):  # in turn, so both lakes see the same machine load
                for lake in (grown, young) if j % 2 else (young, grown):
                    seq = lake.step(commits + 1 + j)
                    if lake is grown:
                        end[seq] = True
            grown.close()
            young.close()
            received = receiver.store.summary()

        def median(times: dict[int, float], seqs) -> float:
            return statistics.median(times[s] for s in seqs)

        ratios = {}
        young_seqs = sorted(young.extract_s)
        for name, label in (("extract_s", "extract"), ("load_s", "load")):
            at_young, at_end = median(getattr(young, name), young_seqs), median(getattr(grown, name), end)
            ratios[label] = at_end / at_young
            series = sequential[name]
            seqs = sorted(series)
            first, last = [s for s in seqs if 10 <= s < 10 + window], seqs[-window:]
            print(
                f"  {label}: {1000 * at_young:.1f} ms at {young_seqs[0]}-{young_seqs[-1]} commits, "
                f"{1000 * at_end:.1f} ms at {min(end)}-{max(end)} (in turn); during the growth "
                f"{1000 * median(series, first):.1f} ms at 10-{first[-1]}, {1000 * median(series, last):.1f} ms at "
                f"{last[0]}-{last[-1]}"
            )
        print(
            f"  compaction every {compact_every} commits: median {1000 * statistics.median(compaction_s):.0f} ms; "
            f"{before_last} data files before the last one"
        )
        delivered = sum(r[3] + r[4] for r in received)
        assert delivered == ROWS + commits + 2 * window, (delivered, received)  # every version, once
        return {
            "extract_growth_ratio": ratios["extract"],
            "load_growth_ratio": ratios["load"],
            f"data_files_after_{commits}": after,
            "records_delivered": delivered,
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
