"""The lake's key snapshot (new-or-existing lookups for incremental extracts), on a local lake."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prequel_dagster.lake.changes import KeySnapshot
from prequel_dagster.lake.commits import OP_COLUMN, DatasetLog
from prequel_dagster.stores import LocalStore


def _commit(log: DatasetLog, keys: list, ops: list[str] | None = None, key_type: pa.DataType = pa.int64()) -> None:
    writer = log.begin()
    ops = ops or ["insert"] * len(keys)
    writer.write(pa.table({"id": pa.array(keys, key_type), OP_COLUMN: pa.array(ops, pa.string())}))
    writer.commit(cursor=None, counts={}, row_count=len(keys), run_id=None)


@pytest.fixture
def log(tmp_path) -> DatasetLog:
    return DatasetLog(LocalStore(tmp_path), "prov", "ds")


def _lookup(snapshot: KeySnapshot, keys: list, key_type=pa.int64()) -> tuple[list, list]:
    found, deleted = snapshot.lookup(pa.array(keys, key_type))
    return found.to_pylist(), deleted.to_pylist()


def test_serial_keys_are_held_as_flags_over_their_range(log):
    _commit(log, list(range(1000, 3000)))
    _commit(log, [5, 2999, 3500], ["insert", "update", "insert"])
    assert log.column_range("id") == (5, 3500)
    snapshot = KeySnapshot(log, "id")
    assert snapshot._present is not None and snapshot._sorted is None
    assert _lookup(snapshot, [4, 5, 999, 1000, 2999, 3000, 3500, 3501, -7, 10**12])[0] == [
        False,
        True,
        False,
        True,
        True,
        False,
        True,
        False,
        False,
        False,
    ]
    assert snapshot.all_keys().to_pylist() == [5, *range(1000, 3000), 3500]
    assert snapshot.all_keys().type == pa.int64()


def test_sparse_keys_fall_back_to_a_sorted_array(log):
    keys = [i * 1_000_003 for i in range(500)]
    _commit(log, keys[::-1])
    snapshot = KeySnapshot(log, "id")
    assert snapshot._present is None and snapshot._sorted is not None
    assert _lookup(snapshot, [0, 1_000_003, 1_000_004, 499 * 1_000_003 + 1])[0] == [True, True, False, False]
    assert snapshot.all_keys().to_pylist() == keys


@pytest.mark.parametrize("key_type", [pa.int32(), pa.int16(), pa.uint32()])
def test_narrow_integer_keys(log, key_type):
    _commit(log, [1, 2, 3, 10], key_type=key_type)
    snapshot = KeySnapshot(log, "id")
    assert _lookup(snapshot, [0, 1, 10, 11], key_type)[0] == [False, True, True, False]
    assert snapshot.all_keys().to_pylist() == [1, 2, 3, 10]
    assert snapshot.all_keys().type == key_type


def test_latest_delete_is_reported_and_a_reinsert_clears_it(log):
    _commit(log, [1, 2, 3])
    _commit(log, [2, 3], ["delete", "delete"])
    _commit(log, [3], ["insert"])
    snapshot = KeySnapshot(log, "id")
    assert _lookup(snapshot, [1, 2, 3, 4]) == ([True, True, True, False], [False, True, False, False])


def test_string_keys_and_null_lookups(log):
    _commit(log, ["a", "b", None], key_type=pa.string())
    snapshot = KeySnapshot(log, "id")
    assert _lookup(snapshot, ["a", "c"], pa.string())[0] == [True, False]
    assert snapshot.all_keys().to_pylist() == ["a", "b"]
    int_log = DatasetLog(log.storage, "prov", "ints")
    _commit(int_log, [1, 2])
    assert _lookup(KeySnapshot(int_log, "id"), [1, None, 3])[0] == [True, False, False]


def test_files_without_statistics_fall_back_to_a_sorted_array(log, monkeypatch):
    real = pq.ParquetWriter

    def no_statistics(*args, **kwargs):
        return real(*args, **{**kwargs, "write_statistics": False})

    monkeypatch.setattr(pq, "ParquetWriter", no_statistics)
    _commit(log, [1, 2, 3])
    assert log.column_range("id") is None
    snapshot = KeySnapshot(log, "id")
    assert snapshot._present is None and _lookup(snapshot, [2, 4])[0] == [True, False]
