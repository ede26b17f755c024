"""A push dataset's reader: the batches staged for its table since the last commit, one version per
key, and only versions newer (by ``sequence``) than the one the lake holds.

The extract engine reads it like a glob dataset: its cursor is the name of the last staged file
committed (names sort by arrival), so a commit takes each staged batch exactly once, and a batch
staged while an extract runs waits for the next one. After the commit the files it took are removed.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..config.errors import SourceError
from ..config.models import Dataset, PrequelConfig, Source
from ..lake.changes import KeySnapshot, latest_versions
from ..lake.commits import DatasetLog
from ..lake.layout import PUSH_CURSOR_KEY
from ..stores import open_datalake
from .evolution import split_type_changes
from .staging import activated_versions, is_staged_batch, read_staged, staged_dir
from .synthetic_keys import COMPOSITE_KEY, RECORD_ID
from .wire import SDC_SEQUENCE, SDC_TABLE_VERSION, sequence_winners

CURSOR_KEY = PUSH_CURSOR_KEY
MAX_FILES_PER_EXTRACT = 2_000
"""Staged batches one extract commits at most (bounded memory); the next extract takes the rest."""


class PushReader:
    keys_unique = True  # one version per key, after sequence_winners

    def __init__(self, source: Source, dataset: Dataset, config: PrequelConfig):
        assert dataset.push is not None
        chain = config.chain(dataset.id)
        self.dataset, self.source = dataset, source
        self.storage = open_datalake(chain.datalake, config)
        self.lake = DatasetLog(self.storage, chain.provider.id, dataset.id)
        self.folder = staged_dir(chain.provider.id, source.id, dataset.push.table_name)
        self._cursor: Any = None
        self._taken: list[str] = []
        self._superseded: pa.Array | None = None

    def read(self, lower_bound: Any = None) -> Iterator[pa.RecordBatch]:
        after = lower_bound.get(CURSOR_KEY, "") if isinstance(lower_bound, dict) else ""
        self._cursor = lower_bound
        names = [n for n in self.storage.list_names_after(self.folder, after) if is_staged_batch(n)]
        names = names[:MAX_FILES_PER_EXTRACT]
        if not names:
            return
        staged = [read_staged(self.storage, f"{self.folder}/{name}") for name in names]
        activated = max((v for t in staged for v in activated_versions(t)), default=None)
        key = self.dataset.primary_key
        where = (
            f"dataset '{self.dataset.id}' (table '{self.dataset.push.table_name}' staged in "  # type: ignore[union-attr]
            f"{self.storage.uri(self.folder)})"
        )
        reference = self.lake.schema() if self.lake.latest() is not None else None
        tables = split_type_changes(
            (t.replace_schema_metadata(None) for t in staged), reference, keys={key}, where=where
        )
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
            raise SourceError(
                f"{where}: batches disagree on a field's type ({exc}); nothing was committed and the batches stay "
                "staged. Push the field with one type (or under a new name), and move or delete the staged batch "
                "with the other type"
            ) from None
        if key not in table.column_names:
            raise SourceError(
                f"dataset '{self.dataset.id}': the pushed table '{self.dataset.push.table_name}' has no column "  # type: ignore[union-attr]
                f"'{key}' (its columns: {', '.join(table.column_names)}); set primary_key_column to one of its "
                f"key_names ({COMPOSITE_KEY} for a composite key, {RECORD_ID} for a table without key_names)"
            )
        table = self._newer_than_the_lake(sequence_winners(table, [key]), key)
        if activated is not None:
            table = self._activate(table, key, activated)
        self._cursor = {CURSOR_KEY: names[-1]}
        self._taken = names
        yield from table.to_batches()

    def _activate(self, table: pa.Table, key: str, version: int) -> pa.Table:
        """Singer's ``activate_version``: the table is now version ``version``. Pushed rows of older
        versions are dropped, and the lake's records whose latest version is older (and that this
        commit does not bring again) become deletes (:meth:`superseded_keys`). Rows without a
        ``_sdc_table_version`` are not versioned and stay."""
        if SDC_TABLE_VERSION in table.column_names:
            versions = table.column(SDC_TABLE_VERSION)
            table = table.filter(pc.fill_null(pc.greater_equal(versions, version), True))
        if self.lake.latest() is None or SDC_TABLE_VERSION not in self.lake.schema().names:  # type: ignore[union-attr]
            return table
        snapshot = KeySnapshot(self.lake, key)
        lake_keys = snapshot.all_keys()
        live = lake_keys.filter(pc.invert(pc.is_in(lake_keys, value_set=snapshot.deleted)))
        if len(live):
            held = latest_versions(self.lake, live, key)
            assert held is not None
            old = held.filter(pc.fill_null(pc.less(held.column(SDC_TABLE_VERSION), version), False))
            brought = table.column(key).combine_chunks()
            gone = old.column(key).combine_chunks()
            self._superseded = gone.filter(pc.invert(pc.is_in(gone, value_set=brought)))
        return table

    def superseded_keys(self) -> pa.Array | None:
        """Keys the read's ``activate_version`` retired (delivered as deletes), or None."""
        return self._superseded

    def _newer_than_the_lake(self, table: pa.Table, key: str) -> pa.Table:
        """Drop versions whose sequence is not above the lake's current version of their key (sequence
        wins whatever the arrival order; an equal sequence is the same version sent again)."""
        if not table.num_rows or self.lake.latest() is None or SDC_SEQUENCE not in self.lake.schema().names:  # type: ignore[union-attr]
            return table
        current = latest_versions(self.lake, table.column(key).combine_chunks(), key)
        if current is None or not current.num_rows:
            return table
        held = current.select([key, SDC_SEQUENCE]).rename_columns([key, "_held_sequence"])
        joined = table.join(held, key, join_type="left outer")
        keep = pc.or_kleene(
            pc.is_null(joined.column("_held_sequence")),
            pc.greater(joined.column(SDC_SEQUENCE), joined.column("_held_sequence")),
        )
        return joined.filter(pc.fill_null(keep, True)).drop_columns(["_held_sequence"])

    def cursor_after_read(self) -> Any:
        return self._cursor

    def read_keys(self) -> Iterator[pa.Array]:
        return iter(())

    def after_commit(self) -> None:
        """The staged files this extract committed: removed (the cursor is past them, so a crash before
        this leaves files no extract reads again; housekeeping-free)."""
        for name in self._taken:
            self.storage.delete(f"{self.folder}/{name}")
        self._taken = []

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class StagedFile:
    """A staged batch as the new-files sensor sees it (path and fingerprint, as a glob file)."""

    path: str

    @property
    def fingerprint(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def staged_after(config: PrequelConfig, dataset: Dataset, cursor: Any) -> list[StagedFile]:
    """The batches staged for a push dataset after ``cursor`` (its last commit's)."""
    assert dataset.push is not None
    chain = config.chain(dataset.id)
    storage = open_datalake(chain.datalake, config)
    folder = staged_dir(chain.provider.id, chain.source.id, dataset.push.table_name)
    after = cursor.get(CURSOR_KEY, "") if isinstance(cursor, dict) else ""
    return [StagedFile(f"{folder}/{name}") for name in storage.list_names_after(folder, after) if is_staged_batch(name)]
