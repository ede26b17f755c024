"""The commit log at scale: checkpoints, kept key snapshots, compaction, and loads finding their
commits, each checked for correctness (not speed) on a local lake and on S3 (SeaweedFS).

Extracts and loads run for real: a SQLite source whose rows change between extracts, and the
reference receiver on loopback. Store reads are counted by wrapping the store's methods.
"""

import datetime as dt
import json
import os
import sqlite3
from collections import Counter
from pathlib import Path

import boto3
import httpx
import pyarrow as pa
import pytest

from prequel_dagster.config import load_config
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake import checkpoints, layout
from prequel_dagster.lake.changes import KeySnapshot
from prequel_dagster.lake.commits import OP_COLUMN, DatasetLog
from prequel_dagster.lake.compaction import compact_dataset, removable_files
from prequel_dagster.lake.data_files import SEQ_COLUMN
from prequel_dagster.lake.deliveries import StreamState
from prequel_dagster.stores import CommitConflict, Store, open_datalake

N = checkpoints.CHECKPOINT_EVERY
BASE = dt.datetime(2026, 3, 1)
DATASET = "lakehouse/acme/users"


# ---------------------------------------------------------------------------------------------- fixtures


def s3_lake_block(s3: dict, bucket: str) -> dict:
    return {
        "id": "lake",
        "name": "lake",
        "storage": "s3_compatible",
        "s3_compatible": {
            "host": s3["host"],
            "port": s3["port"],
            "bucket_name": bucket,
            "prefix": "scale",
            "disable_ssl": True,
            "aws_access_keys": {"access_key_id": s3["access_key"], "secret_access_key": "${LAKE_SECRET}"},
        },
    }


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path, monkeypatch) -> dict:
    """The datalake block of the config: a local folder, or a fresh bucket on SeaweedFS."""
    if request.param == "local":
        return {"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}
    s3 = request.getfixturevalue("s3")
    bucket = "scale-" + os.urandom(4).hex()
    boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
    ).create_bucket(Bucket=bucket)
    monkeypatch.setenv("LAKE_SECRET", s3["secret_key"])
    return s3_lake_block(s3, bucket)


@pytest.fixture
def local_lake() -> dict:
    return {"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}


class Source:
    """A SQLite table of users whose rows the test changes between extracts; it remembers every
    version it made, as the lake should have them and the receiver should get them."""

    def __init__(self, path: Path, rows: int):
        self.db = sqlite3.connect(path)
        self.db.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, updated_at DATETIME NOT NULL, "
            "is_deleted BOOLEAN NOT NULL DEFAULT 0)"
        )
        self.tick = 0
        self.versions: list[tuple[int, str, bool]] = []
        for i in range(1, rows + 1):
            self._put(i, f"u{i}@x", False)

    def _put(self, key: int, email: str, deleted: bool) -> None:
        self.tick += 1
        when = (BASE + dt.timedelta(seconds=self.tick)).strftime("%Y-%m-%d %H:%M:%S")
        self.db.execute(
            "INSERT OR REPLACE INTO users (id, email, updated_at, is_deleted) VALUES (?,?,?,?)",
            (key, email, when, int(deleted)),
        )
        self.db.commit()
        self.versions.append((key, email, deleted))

    def update(self, key: int) -> None:
        self._put(key, f"u{key}-t{self.tick}@x", False)

    def delete(self, key: int) -> None:
        email = self.db.execute("SELECT email FROM users WHERE id = ?", (key,)).fetchone()[0]
        self._put(key, email, True)

    def insert(self, key: int) -> None:
        self._put(key, f"new{key}-t{self.tick}@x", False)


def make_config(tmp_path: Path, lake: dict, url: str, *, batch: int = 1000):
    raw = {
        "datalakes": [lake],
        "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
        "sources": [
            {"id": "db", "name": "db", "vendor": "sqlite", "provider_id": "acme", "sqlite": {"path": "users.db"}}
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
                    "required": ["id"],
                    "properties": {"id": {"type": "integer"}, "email": {"type": "string"}},
                },
                "webhook_batch": {"request_template": {"uri": url + "/b"}, "max_records_per_batch": batch},
            }
        ],
        "streams": [
            {
                "id": "users-app",
                "name": "users",
                "dataset_id": "users",
                "destination_id": "app",
                "mappings": [
                    {"target_field": f, "field_type": "field", "column": {"name": f}} for f in ("id", "email")
                ],
            }
        ],
    }
    return load_config(raw, base_dir=tmp_path)


class Counts:
    """Calls to a store's read and list methods, by the folder they touch."""

    def __init__(self, storage: Store):
        self.calls: Counter = Counter()
        for method in ("read_bytes", "list_names", "list_names_after"):
            real = getattr(storage, method)

            def counted(path, *args, _real=real, _method=method):
                folder = path.rsplit("/", 1)[0] if _method == "read_bytes" else path
                self.calls[(_method, folder.rsplit("/", 1)[-1])] += 1
                return _real(path, *args)

            setattr(storage, method, counted)

    def reset(self) -> None:
        self.calls.clear()

    def __getitem__(self, key: tuple[str, str]) -> int:
        return self.calls[key]


def received(receiver: Receiver) -> list[tuple[int, str, bool]]:
    return [(r["record"]["id"], r["record"]["email"], r["is_deleted"]) for r in receiver.store.records()]


def everything(log: DatasetLog, **kwargs) -> list[tuple]:
    """Every row version the scan returns, in order, with its op."""
    rows = []
    for batch in log.scan(columns=["id", "email", OP_COLUMN], **kwargs):
        rows += zip(*(batch.column(i).to_pylist() for i in range(3)))
    return rows


def history(source: Source, config, storage: Store | None, commits: int, keys: int, *, first: int = 1) -> None:
    """Commits ``first..commits``: the first extract takes the table as it is, each later one a change."""
    for i in range(first, commits + 1):
        if i > 1:
            step(source, i, keys)
        assert run_extract(config, "users", storage=storage).commit.seq == i


def step(source: Source, i: int, keys: int) -> None:
    """One commit's worth of changes: mostly updates, now and then a delete or a new key."""
    key = (i * 37) % keys + 1
    if i % 9 == 4:
        source.delete(key)
    elif i % 11 == 5:
        source.insert(keys + i)
    else:
        source.update(key)


# ---------------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_every_n_commits_and_an_extract_reads_o1_log_objects(tmp_path, lake, receiver):
    source = Source(tmp_path / "users.db", 30)
    config = make_config(tmp_path, lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    counts = Counts(storage)
    commits = (6 if lake["storage"] == "local" else 3) * N + 5  # 125 on disk
    history(source, config, storage, commits, 30)

    names = storage.list_names(f"{DATASET}/_checkpoints")
    assert [n for n in names if n.endswith(".json") and not n.startswith("_")] == [
        layout.seq_name(s) for s in range(N, commits + 1, N)
    ]
    assert f"{layout.seq_name((commits - 1) // N * N, '')}.keys-" in " ".join(names)  # the key snapshot beside it

    counts.reset()
    step(source, commits + 1, 30)
    logged: list[str] = []
    result = run_extract(config, "users", storage=storage, log=logged.append)
    assert not [line for line in logged if "checkpoint" in line or "snapshot" in line], logged
    assert result.commit.seq == commits + 1 and result.rows_written == 1
    manifests = counts[("read_bytes", "_commits")]
    assert manifests == 5  # only those after the last checkpoint, not 125
    assert counts[("read_bytes", "_checkpoints")] <= 4  # hint, checkpoint, key snapshot (or the one before)
    assert counts[("list_names", "_commits")] == 0 and counts[("list_names", "_checkpoints")] == 0
    assert counts[("list_names_after", "_commits")] == 1

    # the lake's content is what the source made, and a load of the whole history delivers it all
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == len(source.versions)
    assert sorted(received(receiver)) == sorted(source.versions)


def test_a_checkpoint_holds_the_state_the_manifests_give(tmp_path, local_lake, receiver):
    source = Source(tmp_path / "users.db", 10)
    config = make_config(tmp_path, local_lake, receiver.url)
    history(source, config, None, 2 * N + 2, 10)
    storage = open_datalake(config.datalake("lake"), config)
    from_checkpoint = DatasetLog(storage, "acme", "users").state()
    assert from_checkpoint.checkpoint == 2 * N
    from prequel_dagster.lake.commits import LogState

    from_manifests = DatasetLog(storage, "acme", "users")._extend(LogState())
    assert from_checkpoint.files == from_manifests.files and from_checkpoint.latest == from_manifests.latest
    assert from_checkpoint.schema.equals(from_manifests.schema)
    assert from_checkpoint.with_rows == from_manifests.with_rows
    assert [f.ranges for f in from_checkpoint.files] == [f.ranges for f in from_manifests.files]


@pytest.mark.parametrize(
    "damage",
    ["truncated", "edited", "removed", "hint damaged", "hint removed", "key snapshot damaged"],
)
def test_a_damaged_or_missing_checkpoint_falls_back_to_the_manifests(tmp_path, local_lake, receiver, damage):
    source = Source(tmp_path / "users.db", 12)
    config = make_config(tmp_path, local_lake, receiver.url)
    history(source, config, None, 2 * N + 3, 12)
    lake = tmp_path / "lake" / DATASET / "_checkpoints"
    latest = lake / layout.seq_name(2 * N)
    if damage == "truncated":
        latest.write_text(latest.read_text()[:100])
    elif damage == "edited":  # still JSON, wrong content: the checksum tells
        data = json.loads(latest.read_text())
        data["files"] = data["files"][:1]
        latest.write_text(json.dumps(data))
    elif damage == "removed":
        latest.unlink()
    elif damage == "hint damaged":
        (lake / layout.LAST_CHECKPOINT).write_text("{not json")
    elif damage == "hint removed":
        (lake / layout.LAST_CHECKPOINT).unlink()
    else:
        (snapshot,) = lake.glob(f"{layout.seq_name(2 * N, '')}.keys-*.parquet")
        snapshot.write_bytes(b"PAR1 torn")
    warnings: list[str] = []
    storage = open_datalake(config.datalake("lake"), config)
    state = DatasetLog(storage, "acme", "users", log=warnings.append).state()
    assert state.seq == 2 * N + 3 and state.rows == len(source.versions)
    if damage in ("truncated", "edited"):
        assert state.checkpoint == N  # the one before it
        assert any("is damaged" in w and "reading the commit manifests instead" in w for w in warnings), warnings
    elif damage == "removed":
        assert state.checkpoint == N and not warnings
    elif damage.startswith("hint"):
        assert state.checkpoint == 2 * N and not warnings  # found by listing them all
    # extracts, key snapshots and loads go on, with exactly the right records
    logged: list[str] = []
    for i in range(2 * N + 4, 2 * N + 8):
        step(source, i, 12)
        assert run_extract(config, "users", log=logged.append).commit.seq == i
    if damage == "key snapshot damaged":
        assert any("key snapshot" in w and "is damaged" in w for w in logged), logged
    assert run_load(config, "users-app").counts.records_loaded == len(source.versions)
    assert sorted(received(receiver)) == sorted(source.versions)


def test_without_any_checkpoint_every_manifest_is_read(tmp_path, local_lake, receiver):
    source = Source(tmp_path / "users.db", 5)
    config = make_config(tmp_path, local_lake, receiver.url)
    history(source, config, None, N + 2, 5)
    for path in (tmp_path / "lake" / DATASET / "_checkpoints").iterdir():
        path.unlink()
    storage = open_datalake(config.datalake("lake"), config)
    state = DatasetLog(storage, "acme", "users").state()
    assert state.checkpoint == 0 and state.seq == N + 2 and state.rows == len(source.versions)


# ---------------------------------------------------------------------------------------------- key snapshots


def _write(log: DatasetLog, keys: list, ops: list[str]) -> None:
    writer = log.begin()
    writer.write(pa.table({"id": pa.array(keys, pa.int64()), OP_COLUMN: pa.array(ops, pa.string())}))
    writer.commit(cursor=None, counts={}, row_count=0, run_id=None)


def _snapshot_view(snapshot: KeySnapshot, probe: list[int]) -> tuple:
    found, deleted = snapshot.lookup(pa.array(probe, pa.int64()))
    return snapshot.all_keys().to_pylist(), sorted(snapshot.deleted.to_pylist()), found.to_pylist(), deleted.to_pylist()


@pytest.mark.parametrize("spread", [1, 1_000_003])  # serial keys (dense flags) and sparse ones (sorted array)
def test_the_key_snapshot_kept_with_a_checkpoint_equals_one_built_from_every_file(tmp_path, spread):
    from prequel_dagster.stores import LocalStore

    storage = LocalStore(tmp_path / "lake")
    log = DatasetLog(storage, "acme", "users")
    _write(log, [k * spread for k in range(1, 50)], ["insert"] * 49)
    for i in range(2, 3 * N + 7):
        key = (i * 13) % 60 + 1
        op = "delete" if i % 5 == 0 else "insert" if key >= 50 or i % 7 == 0 else "update"
        _write(log, [key * spread, (key + 1) * spread], [op, "update"])
        if i in (N + 1, 2 * N + 3):  # an extract's view: it keeps the snapshot of the checkpoint before it
            KeySnapshot(DatasetLog(storage, "acme", "users"), "id")
    kept = sorted(p.name for p in (tmp_path / "lake" / DATASET / "_checkpoints").glob("*.keys-*"))
    assert [n.split(".")[0] for n in kept] == [layout.seq_name(N, ""), layout.seq_name(2 * N, "")]

    probe = [k * spread for k in range(0, 70)]
    incremental = KeySnapshot(DatasetLog(storage, "acme", "users"), "id")  # snapshot 2N + the commits after
    for path in (tmp_path / "lake" / DATASET / "_checkpoints").iterdir():
        path.unlink()
    rebuilt = KeySnapshot(DatasetLog(storage, "acme", "users"), "id")  # from every data file
    assert rebuilt.type == incremental.type
    assert _snapshot_view(incremental, probe) == _snapshot_view(rebuilt, probe)
    assert (incremental._present is None) == (spread > 1)


# ---------------------------------------------------------------------------------------------- compaction


def test_compaction_keeps_every_version_op_and_commit_range(tmp_path, lake, receiver):
    source = Source(tmp_path / "users.db", 20)
    config = make_config(tmp_path, lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    history(source, config, storage, 12, 20)
    assert run_load(config, "users-app", storage=storage).to_commit == 12
    history(source, config, storage, 30, 20, first=13)
    before = DatasetLog(storage, "acme", "users")
    rows_before = everything(before)
    ranges = [(a, b) for a in (0, 3, 12, 17) for b in (5, 12, 18, 30) if a < b]
    by_range = {r: list(everything_of(before, *r)) for r in ranges}

    result = compact_dataset(storage, "acme", "users", min_files=5)
    assert result.number == 1 and result.files_replaced == 30 and result.files_written == 1
    assert result.rows == len(source.versions) and result.live_files_after == 1
    assert not result.removed  # retired files stay until the grace period has passed

    after = DatasetLog(storage, "acme", "users")
    assert [f.compacted for f in after.state().files] == [True]
    assert everything(after) == rows_before  # every version, with its op, in commit order
    assert {r: list(everything_of(after, *r)) for r in ranges} == by_range
    assert {op for *_, op in rows_before} == {"insert", "update", "delete"} and len(rows_before) == len(source.versions)
    compacted = after.state().files[0]
    seqs = pa.concat_arrays(
        [b.column(SEQ_COLUMN) for b in after.scan(columns=[SEQ_COLUMN])]  # the commit of each version
    ).to_pylist()
    assert (
        seqs == sorted(seqs)
        and seqs[0] == 1
        and seqs[-1] == 30
        and (compacted.first_seq, compacted.last_seq) == (1, 30)
    )

    # a following extract and load deliver exactly the records not delivered yet
    history(source, config, storage, 35, 20, first=31)
    loaded = run_load(config, "users-app", storage=storage)
    assert (loaded.from_commit, loaded.to_commit) == (12, 35)
    assert sorted(received(receiver)) == sorted(source.versions)
    assert len(received(receiver)) == len(source.versions)  # nothing twice


def everything_of(log: DatasetLog, after: int, through: int):
    for batch in log.scan_between(after, through, columns=["id", "email", OP_COLUMN]):
        yield from zip(*(batch.column(i).to_pylist() for i in range(3)))


def test_compacted_files_are_removed_only_after_the_grace_period(tmp_path, local_lake, receiver):
    source = Source(tmp_path / "users.db", 5)
    config = make_config(tmp_path, local_lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    history(source, config, storage, 12, 5)
    data = tmp_path / "lake" / DATASET / "data"
    originals = sorted(data.iterdir())
    now = dt.datetime.now(dt.UTC)
    first = compact_dataset(storage, "acme", "users", min_files=3, clock=lambda: now)
    assert first.number == 1 and not first.removed and sorted(data.iterdir()) == originals
    history(source, config, storage, 19, 5, first=13)
    later = now + dt.timedelta(hours=2)
    second = compact_dataset(storage, "acme", "users", min_files=3, clock=lambda: later)
    assert second.number == 2 and second.files_replaced == 1 + 7
    # the first compaction's inputs have been retired for 2 hours; the second's only just now
    removed_data = {p for p in second.removed if "/data/" in p}
    assert removed_data == {f"{DATASET}/data/{p.name}" for p in originals}
    assert len([p for p in second.removed if "/compacted/" in p]) == 0  # compaction 1's file: retired just now
    third = compact_dataset(storage, "acme", "users", min_files=3, clock=lambda: later + dt.timedelta(hours=2))
    assert third.number is None and len(third.removed) == 8  # nothing to merge; the rest of the retired files
    assert [p.name for p in (tmp_path / "lake" / DATASET / "compacted").iterdir()] == [
        DatasetLog(storage, "acme", "users").state().files[0].path.rsplit("/", 1)[1]
    ]
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == len(source.versions)
    assert sorted(received(receiver)) == sorted(source.versions)


class _Crash(BaseException):
    """The process dying in the middle of a load (not an error the sender handles)."""


def test_compaction_while_a_load_is_pending_loses_and_repeats_nothing(tmp_path, lake, receiver):
    source = Source(tmp_path / "users.db", 40)
    config = make_config(tmp_path, lake, receiver.url, batch=4)
    storage = open_datalake(config.datalake("lake"), config)
    history(source, config, storage, 15, 40)
    forward = httpx.HTTPTransport()
    sent = []

    def crash_after_five(request: httpx.Request) -> httpx.Response:
        if len(sent) == 5:
            raise _Crash()
        sent.append(request)
        response = forward.handle_request(request)
        response.read()
        return response

    with pytest.raises(_Crash):
        run_load(config, "users-app", storage=storage, transport=httpx.MockTransport(crash_after_five))
    plan = StreamState(storage, "acme", "users-app").open_plan()
    assert plan is not None and (plan.from_commit, plan.to_commit) == (0, 15)
    delivered_before = len(received(receiver))
    assert 0 < delivered_before < len(source.versions)

    history(source, config, storage, 19, 40, first=16)  # more commits; a compaction; old files removed at once
    result = compact_dataset(storage, "acme", "users", min_files=2, remove_retired_after=dt.timedelta(0))
    assert result.files_replaced == 19 and len(result.removed) == (
        19 if lake["storage"] == "local" else len(result.removed)
    )
    assert all(not storage.exists(p) for p in result.removed)

    resumed = run_load(config, "users-app", storage=storage)
    assert resumed.resumed and resumed.load_id == plan.load_id and (resumed.from_commit, resumed.to_commit) == (0, 15)
    batches = -(-(40 + 14) // 4)
    if lake["storage"] == "local":  # acks are appended at once: only what was not acknowledged is sent
        assert resumed.counts.batches_skipped_already_acked == 5 and resumed.counts.requests == batches - 5
    else:  # acks saved every half second: a few may be sent again, with the same batch ids
        assert resumed.counts.requests + resumed.counts.batches_skipped_already_acked == batches
    rest = run_load(config, "users-app", storage=storage)
    assert (rest.from_commit, rest.to_commit) == (15, 19)
    assert len(received(receiver)) == len(source.versions)  # each version exactly once
    assert sorted(received(receiver)) == sorted(source.versions)
    assert {r["batch_id"] for r in receiver.store.records()} >= {r.headers["idempotency-key"] for r in sent}


def test_a_crash_mid_compaction_leaves_a_consistent_lake(tmp_path, lake, receiver, monkeypatch):
    source = Source(tmp_path / "users.db", 10)
    config = make_config(tmp_path, lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    history(source, config, storage, 8, 10)
    rows = everything(DatasetLog(storage, "acme", "users"))
    real = type(storage).create_exclusive

    def die_at_the_commit(self, path, data):
        if "/_compactions/" in path:
            raise _Crash()  # the compacted file is written, its manifest never is
        return real(self, path, data)

    with monkeypatch.context() as patch, pytest.raises(_Crash):
        patch.setattr(type(storage), "create_exclusive", die_at_the_commit)
        compact_dataset(storage, "acme", "users", min_files=2)
    assert not storage.list_names(layout.compacted_dir(DATASET))  # its files removed on the way out
    # the crash's cleanup ran (BaseException removes the files); a hard kill would leave one: make it
    log = DatasetLog(storage, "acme", "users")
    leftover = f"{layout.compacted_dir(log.directory)}/{layout.seq_name(1, '')}-deadbeef0000-00000.parquet"
    storage.write_bytes(leftover, storage.read_bytes(log.state().files[0].path))

    after = DatasetLog(storage, "acme", "users")
    assert after.state().compaction == 0 and all(not f.compacted for f in after.state().files)
    assert everything(after) == rows
    history(source, config, storage, 9, 10, first=9)
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == len(source.versions)
    rows = everything(DatasetLog(storage, "acme", "users"))
    assert len(rows) == len(source.versions)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    done = compact_dataset(storage, "acme", "users", min_files=2, clock=lambda: later)
    assert done.number == 1 and done.files_replaced == 9
    assert done.removed == [leftover] and not storage.exists(leftover)  # the crash's file; the inputs stay a while
    again = compact_dataset(storage, "acme", "users", min_files=2, clock=lambda: later + dt.timedelta(hours=2))
    assert again.number is None and len(again.removed) == 9
    assert everything(DatasetLog(storage, "acme", "users")) == rows
    assert sorted(received(receiver)) == sorted(source.versions)


def test_racing_compactions_cannot_both_commit(tmp_path, local_lake, receiver, monkeypatch):
    source = Source(tmp_path / "users.db", 5)
    config = make_config(tmp_path, local_lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    history(source, config, storage, 6, 5)
    from prequel_dagster.lake import compaction

    real = compaction._write_and_commit
    first_result: dict = {}

    def race(storage_, dataset_log, state, groups, clock, log, result):
        if not first_result:  # another run commits compaction 1 while this one is writing
            first_result["started"] = True
            first_result["other"] = compact_dataset(storage, "acme", "users", min_files=2)
        return real(storage_, dataset_log, state, groups, clock, log, result)

    monkeypatch.setattr(compaction, "_write_and_commit", race)
    loser = compact_dataset(storage, "acme", "users", min_files=2)
    assert first_result["other"].number == 1 and loser.conflict and loser.number is None
    assert len(list((tmp_path / "lake" / DATASET / "compacted").iterdir())) == 1  # the loser's file is gone
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == len(source.versions)
    assert sorted(received(receiver)) == sorted(source.versions)


def test_an_extract_racing_a_compaction_keeps_its_commit(tmp_path, local_lake, receiver):
    """A compaction takes no commit seq: an extract that began before it commits, and a checkpoint the
    extract writes from its older view still reads correctly with the compaction applied after it."""
    source = Source(tmp_path / "users.db", 5)
    config = make_config(tmp_path, local_lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    history(source, config, storage, N - 1, 5)
    log = DatasetLog(storage, "acme", "users")
    writer = log.begin()  # seq N: its commit writes a checkpoint from this (pre-compaction) view
    writer.write(pa.table({"id": pa.array([99], pa.int64()), "email": ["late@x"], OP_COLUMN: ["insert"]}))
    assert compact_dataset(storage, "acme", "users", min_files=2).number == 1
    assert writer.commit(cursor=None, counts={}, row_count=0, run_id=None).seq == N
    state = DatasetLog(storage, "acme", "users").state()
    assert state.checkpoint == N and state.compaction == 1
    assert [(f.first_seq, f.last_seq, f.compacted) for f in state.files] == [(1, N - 1, True), (N, N, False)]
    assert everything(DatasetLog(storage, "acme", "users"))[-1] == (99, "late@x", "insert")


def test_removable_files_never_names_a_live_file(tmp_path, local_lake, receiver):
    source = Source(tmp_path / "users.db", 5)
    config = make_config(tmp_path, local_lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    for i in range(1, 2 * N + 5):
        history(source, config, storage, i, 5, first=i)
        if i % 7 == 0:
            compact_dataset(storage, "acme", "users", min_files=2, remove_retired_after=None)
    state = DatasetLog(storage, "acme", "users").state()
    far = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    removable = removable_files(storage, "acme", "users", now=far, grace=dt.timedelta(0))
    live = {f.path for f in state.files}
    assert removable and not (set(removable) & live)
    for path in removable:
        storage.delete(path)
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == len(source.versions)
    assert sorted(received(receiver)) == sorted(source.versions)


def test_a_schema_change_keeps_compacted_runs_apart(tmp_path, local_lake, receiver):
    source = Source(tmp_path / "users.db", 5)
    config = make_config(tmp_path, local_lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    history(source, config, storage, 4, 5)
    source.db.execute("ALTER TABLE users ADD COLUMN plan TEXT")
    source.db.commit()
    history(source, config, storage, 8, 5, first=5)
    result = compact_dataset(storage, "acme", "users", min_files=2)
    state = DatasetLog(storage, "acme", "users").state()
    assert result.files_written == 2 and [(f.first_seq, f.last_seq) for f in state.files] == [(1, 4), (5, 8)]
    log = DatasetLog(storage, "acme", "users")
    assert "plan" not in log.schema_between(0, 4).names and "plan" in log.schema_between(4, 8).names
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == len(source.versions)


# ---------------------------------------------------------------------------------------------- loads


def test_a_load_finds_its_position_in_o1_reads(tmp_path, lake, receiver):
    source = Source(tmp_path / "users.db", 5)
    config = make_config(tmp_path, lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    loads = 40 if lake["storage"] == "local" else 12
    for i in range(1, loads + 1):
        history(source, config, storage, i, 5, first=i)
        assert run_load(config, "users-app", storage=storage).to_commit == i
    counts = Counts(storage)
    history(source, config, storage, loads + 1, 5, first=loads + 1)
    counts.reset()
    result = run_load(config, "users-app", storage=storage)
    assert (result.from_commit, result.to_commit) == (loads, loads + 1) and result.counts.records_loaded == 1
    assert counts[("read_bytes", "_deliveries")] == 1  # the newest marker only
    assert counts[("list_names", "_deliveries")] == 0
    assert counts[("read_bytes", "_commits")] <= N

    # the hint is a cache: damaged, behind or gone, the newest marker is still found
    state = StreamState(storage, "acme", "users-app")
    storage.write_bytes(state.position_path, b"{torn")
    assert state.delivered_through() == loads + 1
    storage.write_bytes(state.position_path, json.dumps({"marker": 2}).encode())
    assert state.delivered_through() == loads + 1
    storage.delete(state.position_path)
    assert state.delivered_through() == loads + 1
    history(source, config, storage, loads + 2, 5, first=loads + 2)
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == 1
    assert sorted(received(receiver)) == sorted(source.versions)


def test_list_names_after_lists_only_later_names(tmp_path, lake):
    config = load_config(
        {"datalakes": [lake], "providers": [{"id": "a", "name": "a", "datalake_id": "lake", "products": ["all"]}]},
        base_dir=tmp_path,
    )
    storage = open_datalake(config.datalake("lake"), config)
    for seq in (1, 2, 3, 10, 11):
        storage.create_exclusive(f"x/_commits/{layout.seq_name(seq)}", b"{}")
    storage.write_bytes("x/_commits/sub/0000000099.json", b"{}")
    assert storage.list_names_after("x/_commits", layout.seq_name(2)) == [layout.seq_name(s) for s in (3, 10, 11)]
    assert storage.list_names_after("x/_commits", layout.seq_name(11)) == []
    assert storage.list_names_after("x/nothing", layout.seq_name(0)) == []
    with pytest.raises(CommitConflict):
        storage.create_exclusive(f"x/_commits/{layout.seq_name(3)}", b"{}")


# ---------------------------------------------------------------------------------------------- pruning


def test_files_skipped_by_their_ranges_never_change_a_filter_result(tmp_path):
    """Scans skip files whose recorded column ranges cannot match the filter (without opening them);
    what they return is exactly what filtering every row would: nulls, units and time zones included."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from prequel_dagster.stores import LocalStore

    storage = LocalStore(tmp_path / "lake")
    log = DatasetLog(storage, "acme", "users")
    utc = pa.timestamp("us", "UTC")
    tables = []
    for i in range(8):
        table = pa.table(
            {
                "id": pa.array([10 * i + k for k in range(5)], pa.int64()),
                "at": pa.array([BASE.replace(tzinfo=dt.UTC) + dt.timedelta(hours=i, minutes=k) for k in range(5)], utc),
                "ns": pa.array(
                    [None if (i + k) % 3 == 0 else 10**9 * (i * 5 + k) for k in range(5)], pa.timestamp("ns")
                ),
                "secs": pa.array([i * 100 + k for k in range(5)], pa.timestamp("s")),
                "day": pa.array([dt.date(2026, 1, 1 + i)] * 5, pa.date32()),
                "small": pa.array([None] * 5 if i % 2 else list(range(5)), pa.int16()),
                OP_COLUMN: pa.array(["insert"] * 5),
            }
        )
        writer = log.begin()
        writer.write(table)
        writer.commit(cursor=None, counts={}, row_count=0, run_id=None)
        tables.append(table)
    everything_ = pa.concat_tables(tables)
    state = DatasetLog(storage, "acme", "users").state()
    assert state.files[0].ranges["ns"][2] is True and "secs" not in state.files[0].ranges  # ms in Parquet: unknown
    assert state.files[1].ranges["small"] is None  # nulls only

    at = pads.field("at")
    filters = [
        at >= pa.scalar(BASE.replace(tzinfo=dt.UTC) + dt.timedelta(hours=5, minutes=2), utc),
        pads.field("id").isin(pa.array([3, 41, 77], pa.int64())),
        pads.field("ns").is_null(),
        pads.field("ns") >= pa.scalar(10**9 * 21 + 1, pa.timestamp("ns")),
        pads.field("small").is_null() & (pads.field("id") < 30),
        pads.field("day") == pa.scalar(dt.date(2026, 1, 4)),
        pads.field("secs") > pa.scalar(650, pa.timestamp("s")),
    ]
    for condition in filters:
        expected = everything_.filter(condition).column("id").to_pylist()
        got = [
            v for b in DatasetLog(storage, "acme", "users").scan(filter=condition) for v in b.column("id").to_pylist()
        ]
        assert got == expected, condition
    # the files the first filter rules out are not opened at all
    for f in state.files[:5]:
        storage.delete(f.path)
    got = pa.concat_arrays([b.column("id") for b in DatasetLog(storage, "acme", "users").scan(filter=filters[0])])
    assert got.to_pylist() == everything_.filter(filters[0]).column("id").to_pylist()
    assert pc.min(got).as_py() == 52


def test_housekeeping_keeps_what_a_compacted_log_reads(tmp_path, local_lake, receiver):
    """Lake housekeeping (orphans of crashed runs, expired markers) never removes a live compacted
    file, a checkpoint or a key snapshot: the whole history still loads afterwards."""
    from prequel_dagster.lake.housekeeping import run_housekeeping

    source = Source(tmp_path / "users.db", 8)
    config = make_config(tmp_path, local_lake, receiver.url)
    storage = open_datalake(config.datalake("lake"), config)
    history(source, config, storage, N + 3, 8)
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == len(source.versions)
    compact_dataset(storage, "acme", "users", min_files=2)
    history(source, config, storage, N + 5, 8, first=N + 4)
    live = {f.path for f in DatasetLog(storage, "acme", "users").state().files}
    run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=400))
    assert all(storage.exists(p) for p in live)
    assert storage.list_names(layout.checkpoints_dir(DATASET))
    fresh = DatasetLog(storage, "acme", "users")
    assert len(everything(fresh)) == len(source.versions) and fresh.state().compaction == 1
    assert run_load(config, "users-app", storage=storage).counts.records_loaded == 2
    assert sorted(received(receiver)) == sorted(source.versions)
