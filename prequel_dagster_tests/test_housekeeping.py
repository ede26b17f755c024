"""Lake housekeeping (``retention_window_days`` and the leftovers of crashed runs) on lake state made by
real extracts and loads: what goes, what must stay, and that the lake still extracts and delivers
exactly the right records afterwards. Ages come from the ``now`` given (and, on disk, backdated files),
never from sleeping."""

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from prequel_dagster.config import load_config
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.lake.deliveries import StreamState
from prequel_dagster.lake.housekeeping import KINDS, run_housekeeping
from prequel_dagster.stores import CommitConflict, LocalStore, open_datalake

DATASET = "lakehouse/acme/users"
APP, AUDIT = "artifacts/acme/streams/users-app", "artifacts/acme/streams/users-audit"
HOURS_LATER = dt.timedelta(hours=2)


def lake_config(
    tmp_path: Path,
    receiver: Receiver,
    *,
    lake: dict | None = None,
    retention: int | None = None,
    max_email_length: int = 100,
    max_attempts: int = 8,
    streams: tuple[str, ...] = ("users-app", "users-audit"),
):
    """One provider's CSV folder (a glob dataset: each round adds a file), a lake, and two streams."""
    (tmp_path / "drop").mkdir(exist_ok=True)
    datalake = lake or {"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}
    if retention is not None:
        datalake = {**datalake, "retention_window_days": retention}
    return load_config(
        {
            "datalakes": [datalake],
            "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
            "sources": [
                {"id": "files", "name": "files", "vendor": "local", "provider_id": "acme", "local": {"path": "drop"}}
            ],
            "datasets": [
                {
                    "id": "users",
                    "name": "users",
                    "source_id": "files",
                    "method": "glob",
                    "glob": {"pattern": "*.csv", "file_format": "csv"},
                    "type": "dimension",
                    "dimension": {"primary_key_column": "id"},
                }
            ],
            "destinations": [
                {
                    "id": "app",
                    "name": "app",
                    "type": "webhook_batch",
                    "max_records_per_minute": 10**6,
                    "record_schema": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "integer"},
                            "email": {"type": "string", "maxLength": max_email_length},
                        },
                    },
                    "webhook_batch": {
                        "request_template": {"uri": receiver.url + "/b"},
                        "max_records_per_batch": 2,
                        "max_attempts": max_attempts,
                        "max_failed_batches_in_a_row": 1,
                        "retry_initial_backoff_seconds": 0,
                    },
                }
            ],
            "streams": [
                {
                    "id": stream,
                    "name": stream,
                    "dataset_id": "users",
                    "destination_id": "app",
                    "mappings": [
                        {"target_field": f, "field_type": "field", "column": {"name": f}} for f in ("id", "email")
                    ],
                }
                for stream in streams
            ],
        },
        base_dir=str(tmp_path),
    )


def drop(tmp_path: Path, name: str, rows: dict[int, str]) -> None:
    """A new file at the source: new ids are inserts, known ids updates."""
    (tmp_path / "drop" / f"{name}.csv").write_text("id,email\n" + "".join(f"{i},{e}\n" for i, e in rows.items()))


def received(receiver: Receiver, stream_id: str = "users-app") -> list[tuple[int, str]]:
    return sorted((r["record"]["id"], r["record"]["email"]) for r in receiver.store.records(stream_id=stream_id))


def uncommitted_writer(storage, *, ids: list[int]):
    """Data files written by an extract that then died (or lost the race) before its commit."""
    writer = DatasetLog(storage, "acme", "users").begin()
    writer.write(
        pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "email": [f"ghost{i}@x" for i in ids],
                "_prequel_op": ["insert"] * len(ids),
            }
        )
    )
    writer._close_file()  # the Parquet file is whole (an object store shows only whole files), never committed
    return writer


def committed_files(storage) -> set[str]:
    return {p for c in DatasetLog(storage, "acme", "users").commits() for p in c.files}


def names(storage, directory: str) -> list[str]:
    return storage.list_names(directory)


def backdate(storage: LocalStore, path: str, *, days: float) -> None:
    when = (dt.datetime.now(dt.UTC) - dt.timedelta(days=days)).timestamp()
    os.utime(storage.full_path(path), (when, when))


def removed(result, kind: str) -> list[str]:
    return sorted(result.removed[kind].paths)


def nothing_else_removed(result, *kinds: str) -> bool:
    return all(result.removed[k].files == 0 for k in KINDS if k not in kinds)


# ---------------------------------------------------------------------------------------------- orphans


def test_orphans_of_a_crash_and_a_lost_race_go_and_committed_files_and_running_writers_stay(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver)  # no retention_window_days: orphans go all the same
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {1: "a@x", 2: "b@x"})
        run_extract(config, "users")  # commit 1
        assert run_load(config, "users-app").counts.records_loaded == 2

        crashed = uncommitted_writer(storage, ids=[90])  # seq 2, then the process died
        drop(tmp_path, "r2", {2: "b2@x", 3: "c@x"})
        assert run_extract(config, "users").commit.seq == 2  # seq 2 is now taken: the crashed files never commit
        loser = uncommitted_writer(storage, ids=[91])  # seq 3 ...
        drop(tmp_path, "r3", {4: "d@x"})
        assert run_extract(config, "users").commit.seq == 3  # ... won by this extract
        with pytest.raises(CommitConflict):
            loser.commit(cursor=None, counts={}, row_count=0, run_id=None)  # the loser then died before abort()
        running = uncommitted_writer(storage, ids=[92])  # seq 4: not committed yet, may still be
        (tmp_path / "lake" / DATASET / "data" / "README.txt").write_text("not ours")
        (tmp_path / "lake" / DATASET / "data" / f"{2:010d}-spark-00000.parquet").mkdir()  # a folder: never a file

        orphans = sorted(f.path for f in (*crashed.files, *loser.files))
        orphan_bytes = sum(storage.size(p) for p in orphans)
        committed = committed_files(storage)
        manifests = names(storage, f"{DATASET}/_commits")
        assert len(orphans) == 2 and len(committed) == 3 and len(manifests) == 3

        young = run_housekeeping(config, "lake")  # everything was written moments ago
        assert young.files == 0 and young.kept_within_grace == 2 and young.kept_possibly_running == 1
        assert all(storage.exists(p) for p in orphans)

        dry = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + HOURS_LATER, dry_run=True)
        assert dry.dry_run and removed(dry, "orphan_data_files") == orphans
        assert all(storage.exists(p) for p in orphans)

        lines: list[str] = []
        result = run_housekeeping(
            config, "lake", storage=storage, log=lines.append, now=dt.datetime.now(dt.UTC) + HOURS_LATER
        )
        assert removed(result, "orphan_data_files") == orphans and nothing_else_removed(result, "orphan_data_files")
        assert result.removed["orphan_data_files"].bytes == orphan_bytes == result.bytes and result.files == 2
        assert result.kept_possibly_running == 1 and result.kept_within_grace == 0 and result.problems == []
        assert result.retention_window_days is None and not result.dry_run
        metadata = result.as_metadata()
        assert metadata["orphan_data_files_removed"] == 2 and metadata["orphan_data_files_bytes"] == orphan_bytes
        assert metadata["files_removed"] == 2 and result.seconds > 0
        assert any("removed 2 orphan data files" in line for line in lines), lines
        assert not any(storage.exists(p) for p in orphans)
        assert all(storage.exists(p) for p in committed) and names(storage, f"{DATASET}/_commits") == manifests
        assert storage.exists(running.files[0].path) and storage.exists(f"{DATASET}/data/README.txt")
        assert (tmp_path / "lake" / DATASET / "data" / f"{2:010d}-spark-00000.parquet").is_dir()

        # the lake works as before: commits 2..3 are delivered exactly, and nothing of the orphans
        assert run_load(config, "users-app").counts.records_loaded == 3
        assert received(receiver) == [(1, "a@x"), (2, "b2@x"), (2, "b@x"), (3, "c@x"), (4, "d@x")]
        drop(tmp_path, "r4", {5: "e@x"})
        assert run_extract(config, "users").commit.seq == 4  # the "running" writer lost seq 4 ...
        later = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + HOURS_LATER)
        assert removed(later, "orphan_data_files") == [running.files[0].path]  # ... and is an orphan now
        assert run_load(config, "users-app").counts.records_loaded == 1
        assert received(receiver)[-1:] == [(5, "e@x")] and len(received(receiver)) == 6


def test_a_data_file_whose_seq_has_no_manifest_is_never_removed(tmp_path):
    """Only a file whose seq another writer committed can never be committed; any other is left alone,
    even beyond the latest commit's seq (a manifest moved aside leaves such a gap)."""
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver)
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {1: "a@x"})
        run_extract(config, "users")
        crashed = uncommitted_writer(storage, ids=[90])  # seq 2
        drop(tmp_path, "r2", {2: "b@x"})
        run_extract(config, "users")  # commit 2
        drop(tmp_path, "r3", {3: "c@x"})
        run_extract(config, "users")  # commit 3
        os.rename(storage.full_path(f"{DATASET}/_commits/{2:010d}.json"), tmp_path / "moved-aside.json")
        result = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=365))
        assert result.files == 0 and result.kept_possibly_running == 2  # the crashed file and commit 2's
        assert storage.exists(crashed.files[0].path)


# ---------------------------------------------------------------------------------------------- markers


def test_markers_past_the_window_go_except_each_streams_newest(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver, retention=30)
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {1: "a@x", 2: "b@x"})
        run_extract(config, "users")
        run_load(config, "users-app")
        run_load(config, "users-audit")
        for n in (2, 3, 4):
            drop(tmp_path, f"r{n}", {n: f"v{n}@x"})
            run_extract(config, "users")
            run_load(config, "users-app")
        app = [f"{APP}/_deliveries/{n:010d}.json" for n in (1, 2, 3, 4)]
        audit = f"{AUDIT}/_deliveries/{1:010d}.json"
        assert names(storage, f"{APP}/_deliveries") == [p.rsplit("/", 1)[1] for p in app]
        not_markers = [f"{APP}/_deliveries/README", f"{APP}/_deliveries/{1:010d}.json.bak"]
        for path in not_markers:
            storage.write_bytes(path, storage.read_bytes(app[0]))
        for path, days in (
            (app[0], 40),
            (app[1], 31),
            (app[2], 10),
            (app[3], 40),
            (audit, 40),
            (not_markers[0], 40),
            (not_markers[1], 40),
        ):
            backdate(storage, path, days=days)
        committed, manifests = committed_files(storage), names(storage, f"{DATASET}/_commits")

        result = run_housekeeping(config, "lake", storage=storage)
        assert removed(result, "delivery_markers") == app[:2] and nothing_else_removed(result, "delivery_markers")
        assert result.removed["delivery_markers"].bytes > 0 and result.retention_window_days == 30
        assert [storage.exists(p) for p in app] == [False, False, True, True]  # 10 days old; the newest
        assert storage.exists(audit)  # the audit stream's only (and so newest) marker, however old
        assert all(storage.exists(p) for p in not_markers)  # not files this package writes
        assert all(storage.exists(p) for p in committed) and names(storage, f"{DATASET}/_commits") == manifests

        # each stream continues from its newest marker: exactly the records it had not received
        drop(tmp_path, "r5", {1: "a5@x"})
        run_extract(config, "users")
        assert run_load(config, "users-app").counts.records_loaded == 1
        assert received(receiver) == [(1, "a5@x"), (1, "a@x"), (2, "b@x"), (2, "v2@x"), (3, "v3@x"), (4, "v4@x")]
        assert names(storage, f"{APP}/_deliveries") == [f"{1:010d}.json.bak"] + [
            f"{n:010d}.json" for n in (3, 4, 5)
        ] + ["README"]
        assert run_load(config, "users-audit").counts.records_loaded == 4
        assert received(receiver, "users-audit") == [
            (1, "a5@x"),
            (1, "a@x"),
            (2, "b@x"),
            (2, "v2@x"),
            (3, "v3@x"),
            (4, "v4@x"),
        ]


def test_a_stream_no_longer_configured_is_found_in_the_lake(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver, retention=30)
        storage = open_datalake(config.datalake("lake"), config)
        for n in (1, 2):
            drop(tmp_path, f"r{n}", {n: f"v{n}@x"})
            run_extract(config, "users")
            run_load(config, "users-audit")
        old = f"{AUDIT}/_deliveries/{1:010d}.json"
        backdate(storage, old, days=40)
        backdate(storage, f"{AUDIT}/_deliveries/{2:010d}.json", days=40)
        without_audit = lake_config(tmp_path, receiver, retention=30, streams=("users-app",))
        result = run_housekeeping(without_audit, "lake", storage=storage)
        assert removed(result, "delivery_markers") == [old] and storage.exists(f"{AUDIT}/_deliveries/{2:010d}.json")


# ---------------------------------------------------------------------------------------------- dead letters


def test_dead_letters_past_the_window_are_dropped(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver, retention=30, max_email_length=5)
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {1: "a@x", 2: "too-long-1@x"})
        run_extract(config, "users")
        first = run_load(config, "users-app").dead_letters
        drop(tmp_path, "r2", {3: "too-long-3@x"})
        run_extract(config, "users")
        second = run_load(config, "users-app").dead_letters
        assert len(first) == len(second) == 1
        backdate(storage, first[0], days=31)
        size = storage.size(first[0])

        result = run_housekeeping(config, "lake", storage=storage)
        assert removed(result, "dead_letters") == first and nothing_else_removed(result, "dead_letters")
        assert result.removed["dead_letters"].bytes == size
        state = StreamState(storage, "acme", "users-app")
        assert state.dead_letter_files() == second
        assert state.read_dead_letters().column("record_id").to_pylist() == ["3"]


def test_without_a_window_markers_and_dead_letters_stay_forever_but_orphans_go(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver, max_email_length=5)
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {1: "a@x", 2: "too-long-2@x"})
        run_extract(config, "users")
        dead = run_load(config, "users-app").dead_letters
        crashed = uncommitted_writer(storage, ids=[90])
        drop(tmp_path, "r2", {3: "c@x"})
        run_extract(config, "users")
        run_load(config, "users-app")
        artifacts = [*dead, f"{APP}/_deliveries/{1:010d}.json", f"{APP}/_deliveries/{2:010d}.json"]
        for path in artifacts:
            backdate(storage, path, days=4000)

        result = run_housekeeping(
            config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=4000)
        )
        assert removed(result, "orphan_data_files") == [crashed.files[0].path]
        assert nothing_else_removed(result, "orphan_data_files") and result.retention_window_days is None
        assert all(storage.exists(p) for p in artifacts)


# ---------------------------------------------------------------------------------------------- ack logs


class DiesBeforeRemovingAckLogs(LocalStore):
    """The process is killed after a load's marker and plan removal, before its ack log is removed."""

    def delete(self, path: str) -> None:
        if "/_pending/acks-" in path:
            raise KeyboardInterrupt  # as good as a kill for the code under it
        super().delete(path)


def test_stale_ack_logs_go_and_an_open_loads_plan_and_ack_log_stay(tmp_path):
    answered = {"n": 0}

    def fault(request):  # the audit stream's endpoint accepts 2 batches, then goes down
        if json.loads(request.body)["stream_id"] != "users-audit":
            return None
        answered["n"] += 1
        return None if answered["n"] <= 2 or answered.get("up") else 503

    with Receiver(fault=fault) as receiver:
        config = lake_config(tmp_path, receiver, max_attempts=1)
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {i: f"u{i}@x" for i in range(1, 11)})  # 5 batches of 2
        run_extract(config, "users")
        with pytest.raises(KeyboardInterrupt):
            run_load(config, "users-app", storage=DiesBeforeRemovingAckLogs(tmp_path / "lake"))
        stale = [f"{APP}/_pending/{n}" for n in names(storage, f"{APP}/_pending")]
        assert len(stale) == 1 and stale[0].endswith(".log") and names(storage, f"{APP}/_deliveries")
        with pytest.raises(Exception, match="records were delivered"):
            run_load(config, "users-audit", sleep=lambda s: None)
        plan = StreamState(storage, "acme", "users-audit").open_plan()
        open_log = f"{AUDIT}/_pending/acks-{plan.load_id}.log"
        assert storage.read_bytes(open_log) == b"0\n1\n"
        backdate(storage, open_log, days=3)
        backdate(storage, f"{AUDIT}/_pending/load.json", days=3)

        assert run_housekeeping(config, "lake", storage=storage).kept_within_grace == 1  # just left behind
        assert storage.exists(stale[0])
        result = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + HOURS_LATER)
        assert removed(result, "stale_ack_logs") == stale and nothing_else_removed(result, "stale_ack_logs")
        assert storage.read_bytes(open_log) == b"0\n1\n" and storage.exists(f"{AUDIT}/_pending/load.json")

        answered["up"] = True  # the audit load resumes: batches 0 and 1 are not sent again
        resumed = run_load(config, "users-audit")
        assert resumed.resumed and resumed.counts.batches_skipped_already_acked == 3  # 0, 1 acked; 2 dead-lettered
        assert len(received(receiver, "users-audit")) == 8 and len(received(receiver, "users-app")) == 10
        assert names(storage, f"{AUDIT}/_pending") == []


def test_a_damaged_plan_keeps_its_streams_ack_logs(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver)
        storage = open_datalake(config.datalake("lake"), config)
        later = dt.datetime.now(dt.UTC) + HOURS_LATER
        storage.write_bytes(f"{APP}/_pending/load.json", b"{not json")
        assert run_housekeeping(config, "lake", storage=storage, now=later).problems == []  # no ack log: not read
        storage.write_bytes(f"{APP}/_pending/acks-0123456789abcdef.log", b"0\n")
        lines: list[str] = []
        result = run_housekeeping(config, "lake", storage=storage, now=later, log=lines.append)
        assert result.files == 0 and len(result.problems) == 1 and "pending load plan" in result.problems[0]
        assert any(line.strip() == f"skipped: {result.problems[0]}" for line in lines), lines
        assert storage.exists(f"{APP}/_pending/acks-0123456789abcdef.log")
        storage.write_bytes(f"{APP}/_pending/load.json", json.dumps({"load_id": "fedcba9876543210"}).encode())
        result = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + HOURS_LATER)
        assert removed(result, "stale_ack_logs") == [f"{APP}/_pending/acks-0123456789abcdef.log"]  # another load's


# ---------------------------------------------------------------------------------------------- damage, failures


@pytest.mark.parametrize("damage", [b'{"seq": 1}', b'{"seq": 1, "files": [{"rows": 1}], "committed_at": "x"}'])
def test_a_damaged_manifest_keeps_its_datasets_files_and_the_rest_goes_on(tmp_path, damage):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver, retention=1)
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {1: "a@x"})
        run_extract(config, "users")
        run_load(config, "users-app")
        crashed = uncommitted_writer(storage, ids=[90])
        drop(tmp_path, "r2", {2: "b@x"})
        run_extract(config, "users")
        run_load(config, "users-app")
        storage.write_bytes(f"{DATASET}/_commits/{1:010d}.json", damage)  # which files it named is lost
        data = names(storage, f"{DATASET}/data")

        result = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
        assert result.removed["orphan_data_files"].files == 0 and storage.exists(crashed.files[0].path)
        assert len(result.problems) == 1 and "commit manifest" in result.problems[0]
        assert "users" in result.problems[0] and result.as_metadata()["problems"] == 1
        assert removed(result, "delivery_markers") == [f"{APP}/_deliveries/{1:010d}.json"]  # the rest went on
        assert names(storage, f"{DATASET}/data") == data and len(data) == 3


class RefusesOneDelete(LocalStore):
    refused: str = ""

    def delete(self, path: str) -> None:
        if path == self.refused:  # as an SDK answers: quoting the signed URL it was refused
            raise PermissionError(
                13, f"AuthorizationFailure on https://acct.example/{path}?sv=2024-01-01&sig=S3CRETsig"
            )
        super().delete(path)


def test_a_removal_that_fails_is_reported_and_not_counted(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver)
        storage = RefusesOneDelete(tmp_path / "lake")
        drop(tmp_path, "r1", {1: "a@x"})
        run_extract(config, "users", storage=storage)
        first, second = uncommitted_writer(storage, ids=[90]), uncommitted_writer(storage, ids=[91])
        drop(tmp_path, "r2", {2: "b@x"})
        run_extract(config, "users", storage=storage)
        storage.refused = first.files[0].path
        result = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + HOURS_LATER)
        assert removed(result, "orphan_data_files") == [second.files[0].path]
        assert result.removed["orphan_data_files"].bytes == result.bytes > 0
        assert len(result.problems) == 1 and first.files[0].path in result.problems[0]
        assert "PermissionError" in result.problems[0] and storage.exists(first.files[0].path)
        assert "S3CRETsig" not in result.problems[0] and "sig=***" in result.problems[0]


class RacingStore(LocalStore):
    """What a concurrent run does between housekeeping's listing and its next call."""

    finished_plan: str = ""  # the load finishes after its plan was seen
    aborted: str = ""  # the writer's abort() removes the file first

    def exists(self, path: str) -> bool:
        return path == self.finished_plan or super().exists(path)

    def delete(self, path: str) -> None:
        if path == self.aborted:
            super().delete(path)
            raise FileNotFoundError(2, "No such file or directory", path)
        super().delete(path)


def test_files_that_vanish_meanwhile_are_neither_problems_nor_counted(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver)
        storage = RacingStore(tmp_path / "lake")
        drop(tmp_path, "r1", {1: "a@x"})
        run_extract(config, "users", storage=storage)
        aborted, crashed = uncommitted_writer(storage, ids=[90]), uncommitted_writer(storage, ids=[91])
        drop(tmp_path, "r2", {2: "b@x"})
        run_extract(config, "users", storage=storage)
        storage.write_bytes(f"{APP}/_pending/acks-0123456789abcdef.log", b"0\n")
        storage.aborted, storage.finished_plan = aborted.files[0].path, f"{APP}/_pending/load.json"
        result = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + HOURS_LATER)
        assert result.problems == [] and removed(result, "orphan_data_files") == [crashed.files[0].path]
        assert removed(result, "stale_ack_logs") == [f"{APP}/_pending/acks-0123456789abcdef.log"]


def test_temp_files_of_crashed_atomic_writes_go_and_nothing_else_of_their_folders(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver)
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {1: "a@x"})
        run_extract(config, "users")
        run_load(config, "users-app")
        hexes = [os.urandom(16).hex() for _ in range(4)]
        temps = [
            f"._prequel_lake.json.{hexes[0]}.tmp",
            f"{DATASET}/_commits/.{2:010d}.json.{hexes[1]}.tmp",
            f"{APP}/_deliveries/.{2:010d}.json.{hexes[2]}.tmp",
            f"{APP}/_pending/.load.json.{hexes[3]}.tmp",
        ]
        others = [f"{DATASET}/_commits/.notes", f"{APP}/_pending/.load.json.tmp"]
        for path in (*temps, *others):
            Path(storage.full_path(path)).write_bytes(b"{")
        kept = [*others, "_prequel_lake.json", f"{DATASET}/_commits/{1:010d}.json", f"{APP}/_deliveries/{1:010d}.json"]

        assert run_housekeeping(config, "lake", storage=storage).kept_within_grace == 4
        result = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + HOURS_LATER)
        assert removed(result, "temp_files") == sorted(temps) and nothing_else_removed(result, "temp_files")
        assert result.problems == []  # a file in _commits that is not a manifest is not read as one
        assert result.removed["temp_files"].bytes == 4
        assert all(storage.exists(p) for p in kept) and not any(storage.exists(p) for p in temps)


def test_now_must_be_timezone_aware(tmp_path):
    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver)
        with pytest.raises(ValueError, match="timezone-aware"):
            run_housekeeping(config, "lake", now=dt.datetime.now())
        with pytest.raises(ValueError, match="orphan_grace"):
            run_housekeeping(config, "lake", orphan_grace=dt.timedelta(hours=-1))


# ---------------------------------------------------------------------------------------------- object stores


PREFIX = "imports/prod/"


def s3_store(request, monkeypatch):
    import boto3

    s3 = request.getfixturevalue("s3")
    monkeypatch.setenv("LAKE_SECRET", s3["secret_key"])
    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
    )
    bucket = "lake-" + os.urandom(4).hex()
    client.create_bucket(Bucket=bucket)

    def sizes() -> dict[str, int]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX)
        return {o["Key"].removeprefix(PREFIX): o["Size"] for page in pages for o in page.get("Contents", [])}

    return {
        "id": "lake",
        "name": "lake",
        "storage": "s3_compatible",
        "s3_compatible": {
            "host": s3["host"],
            "port": s3["port"],
            "bucket_name": bucket,
            "prefix": PREFIX,
            "disable_ssl": True,
            "aws_access_keys": {"access_key_id": s3["access_key"], "secret_access_key": "${LAKE_SECRET}"},
        },
    }, sizes


def gcs_store(request, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = request.getfixturevalue("gcs")
    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs["endpoint"]}
    )
    bucket = "lake-" + os.urandom(4).hex()
    client.create_bucket(bucket)

    def sizes() -> dict[str, int]:
        return {b.name.removeprefix(PREFIX): b.size for b in client.list_blobs(bucket, prefix=PREFIX)}

    return {
        "id": "lake",
        "name": "lake",
        "storage": "gcs",
        "gcs": {"bucket_name": bucket, "prefix": PREFIX, "endpoint": gcs["endpoint"]},
    }, sizes


def abs_store(request, monkeypatch):
    from azure.storage.blob import BlobServiceClient

    azurite = request.getfixturevalue("azurite")
    monkeypatch.setenv("AZURE_KEY", azurite["key"])
    service = BlobServiceClient.from_connection_string(azurite["connection_string"])
    container = "lake-" + os.urandom(4).hex()
    service.create_container(container)

    def sizes() -> dict[str, int]:
        blobs = service.get_container_client(container).list_blobs(name_starts_with=PREFIX)
        return {b.name.removeprefix(PREFIX): b.size for b in blobs}

    return {
        "id": "lake",
        "name": "lake",
        "storage": "abs",
        "abs": {
            "bucket_name": container,
            "storage_account_name": azurite["account"],
            "prefix": PREFIX,
            "endpoint": azurite["endpoint"],
            "auth_method": "azure_storage_account_key",
            "azure_storage_account_key": {"account_key": "${AZURE_KEY}"},
        },
    }, sizes


@pytest.mark.parametrize("kind", ["s3", "gcs", "abs"])
def test_housekeeping_on_object_stores(kind, request, monkeypatch, tmp_path):
    lake, sizes = {"s3": s3_store, "gcs": gcs_store, "abs": abs_store}[kind](request, monkeypatch)

    def keys() -> set[str]:
        return set(sizes())

    with Receiver() as receiver:
        config = lake_config(tmp_path, receiver, lake=lake, retention=1, max_email_length=5)
        storage = open_datalake(config.datalake("lake"), config)
        drop(tmp_path, "r1", {1: "a@x", 2: "too-long@x"})
        run_extract(config, "users")
        dead = run_load(config, "users-app").dead_letters
        crashed = uncommitted_writer(storage, ids=[90])
        drop(tmp_path, "r2", {3: "c@x"})
        run_extract(config, "users")
        run_load(config, "users-app")
        drop(tmp_path, "r3", {4: "d@x"})
        run_extract(config, "users")
        run_load(config, "users-app")
        running = uncommitted_writer(storage, ids=[91])
        before = sizes()
        markers = [f"{APP}/_deliveries/{n:010d}.json" for n in (1, 2, 3)]
        assert set(markers) | set(dead) | {crashed.files[0].path, running.files[0].path} <= set(before)

        young = run_housekeeping(config, "lake", storage=storage)
        assert young.files == 0 and young.kept_within_grace == 1 and young.kept_possibly_running == 1
        assert keys() == set(before)

        result = run_housekeeping(config, "lake", storage=storage, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
        assert removed(result, "orphan_data_files") == [crashed.files[0].path]
        assert removed(result, "delivery_markers") == markers[:2] and removed(result, "dead_letters") == dead
        gone = {crashed.files[0].path, *markers[:2], *dead}
        assert result.files == 4 and result.bytes == sum(size for key, size in before.items() if key in gone)
        assert keys() == set(before) - gone  # and no directory markers left behind
        assert committed_files(storage) <= keys() and len(storage.list_names(f"{DATASET}/_commits")) == 3

        drop(tmp_path, "r4", {1: "a2@x"})
        assert run_extract(config, "users").commit.seq == 4
        assert run_load(config, "users-app").counts.records_loaded == 1
        assert received(receiver) == [(1, "a2@x"), (1, "a@x"), (3, "c@x"), (4, "d@x")]
        assert f"{APP}/_deliveries/{4:010d}.json" in keys()


def test_housekeeping_runs_as_a_dagster_job_with_a_daily_schedule_and_from_the_cli(tmp_path):
    import json
    import subprocess
    import sys

    import dagster as dg

    from prequel_dagster import build_definitions
    from prequel_dagster.delivery.receiver import Receiver

    from .test_delivery_ids import local_config

    with Receiver() as receiver, dg.instance_for_test() as instance:
        raw = local_config(tmp_path, "lake", receiver, {1: "a@x"}, as_dict=True)
        defs = build_definitions(local_config(tmp_path, "lake", receiver, {1: "a@x"}))
        assert defs.resolve_job_def("prequel_housekeeping_lake") is not None
        assert any(s.name == "prequel_housekeeping_lake_daily" for s in defs.schedules)
        result = defs.resolve_job_def("prequel_housekeeping_lake").execute_in_process(
            instance=instance, run_config={"ops": {"prequel_housekeeping_lake_op": {"config": {"dry_run": True}}}}
        )
        assert result.success
        real = defs.resolve_job_def("prequel_housekeeping_lake").execute_in_process(instance=instance)
        (output,) = [e for e in real.all_events if e.event_type_value == "STEP_OUTPUT"]
        assert {"datasets_compacted", "data_files_replaced"} <= set(output.step_output_data.metadata)
        (tmp_path / "prequel.yaml").write_text(json.dumps(raw))
        cli = [sys.executable, "-m", "prequel_dagster.cli", "housekeeping", "--dry-run", "--config", "prequel.yaml"]
        done = subprocess.run(cli, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        wrong = subprocess.run([*cli, "--datalake", "nope"], capture_output=True, text=True, cwd=tmp_path)
        assert wrong.returncode != 0 and "no datalake with id 'nope'" in wrong.stderr
