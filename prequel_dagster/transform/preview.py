"""test-transform: a stream's mappings applied to sample records from the lake, with schema violations."""

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..config.errors import PrequelError
from ..config.models import PrequelConfig
from ..lake.commits import OP_COLUMN, DatasetLog
from ..lake.storage import open_storage
from .mapping import StreamMapper
from .schema import converted_table, validate_records


@dataclass
class PreviewRow:
    record: dict[str, Any]
    violation: str | None


@dataclass
class Preview:
    rows: list[PreviewRow]

    @property
    def invalid(self) -> int:
        return sum(r.violation is not None for r in self.rows)


def preview_stream(config: PrequelConfig, stream_id: str, *, limit: int = 10) -> Preview:
    """The latest ``limit`` records of the stream's dataset, transformed and checked (nothing is sent)."""
    stream = config.stream(stream_id)
    dataset = config.dataset(stream.dataset_id)
    provider = config.provider_of_dataset(dataset)
    lake = DatasetLog(open_storage(config.datalake(provider.datalake_id), config), provider.id, dataset.id)
    if lake.latest() is None:
        raise PrequelError(f"dataset '{dataset.id}' has no data in the lake yet; materialize it first")
    mapper = StreamMapper(stream)
    problems = mapper.check_columns(lake.schema().names)  # type: ignore[union-attr]
    if problems:
        raise PrequelError("; ".join(problems))
    sample: list[pa.Table] = []
    taken = 0
    for commit in reversed(lake.commits()):
        for batch in lake.scan([commit], columns=[*mapper.source_columns, OP_COLUMN]):
            sample.append(pa.Table.from_batches([batch]))
            taken += batch.num_rows
        if taken >= limit:
            break
    table = pa.concat_tables(sample, promote_options="permissive").slice(0, limit) if sample else None
    if table is None or table.num_rows == 0:
        return Preview([])
    mapped = mapper.apply(table.drop_columns([OP_COLUMN]))
    checked = validate_records(mapped, config.destination(stream.destination_id).record_schema)
    shown = converted_table(mapped, config.destination(stream.destination_id).record_schema)
    return Preview(
        [PreviewRow(rec, why) for rec, why in zip(shown.to_pylist(), checked.violations.to_pylist())]
    )
