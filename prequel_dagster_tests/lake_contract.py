"""What every datalake kind must guarantee, checked the same way on each real store."""

import pyarrow as pa
import pytest

from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.stores import CommitConflict, Store


def assert_exclusive_commits(storage: Store, provider: str = "acme", dataset: str = "race") -> None:
    """Two writers racing for the same commit: one wins, the other gets CommitConflict and nothing of
    it is visible; files written but never committed are never read."""
    log = DatasetLog(storage, provider, dataset)
    first, second = log.begin(), log.begin()
    for writer in (first, second):
        writer.write(pa.table({"id": [1], "_prequel_op": ["insert"]}))
    first.commit(cursor=None, counts={}, row_count=1, run_id="a")
    with pytest.raises(CommitConflict):
        second.commit(cursor=None, counts={}, row_count=1, run_id="b")
    assert [c.run_id for c in DatasetLog(storage, provider, dataset).commits()] == ["a"]
    unfinished = log.begin()
    unfinished.write(pa.table({"id": [2], "_prequel_op": ["insert"]}))
    unfinished._close_file()  # the data file is in the store, its manifest never is
    assert [b.column("id").to_pylist() for b in DatasetLog(storage, provider, dataset).scan()] == [[1]]
    assert all(not n.endswith("/") for n in storage.list_names(f"{log.directory}/_commits"))
