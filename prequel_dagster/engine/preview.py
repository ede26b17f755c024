"""test-transform: a stream's mappings applied to sample records from the lake, with schema violations."""

from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from ..config.errors import PrequelError
from ..config.models import PrequelConfig
from ..lake.commits import OP_COLUMN, DatasetLog
from ..stores import Store, open_datalake
from ..transform.encoding import encode_records
from ..transform.mapping import StreamMapper
from ..transform.schema import converted_table, validate_records


@dataclass
class PreviewRow:
    json: str  # the record exactly as it would go on the wire
    violation: str | None

    @property
    def record(self) -> dict[str, Any]:
        return orjson.loads(self.json)


@dataclass
class Preview:
    rows: list[PreviewRow]

    @property
    def invalid(self) -> int:
        return sum(r.violation is not None for r in self.rows)


def preview_stream(
    config: PrequelConfig,
    stream_id: str,
    *,
    limit: int = 10,
    record_ids: list[str] | None = None,
    storage: Store | None = None,
) -> Preview:
    """Records of the stream's dataset (the latest ``limit``, or the given ids), transformed and checked.

    Nothing is sent. This is Prequel's test-transform.
    """
    stream = config.stream(stream_id)
    dataset = config.dataset(stream.dataset_id)
    chain = config.chain(dataset.id)
    provider = chain.provider
    storage = storage or open_datalake(chain.datalake, config)
    lake = DatasetLog(storage, provider.id, dataset.id)
    if lake.latest() is None:
        return Preview([])
    mapper = StreamMapper(stream)
    problems = mapper.check_columns(lake.schema().names)  # type: ignore[union-attr]
    if problems:
        raise PrequelError("; ".join(problems))
    if record_ids:
        from ..lake.changes import latest_versions

        key = dataset.primary_key
        try:
            keys = pa.array(record_ids, pa.string()).cast(lake.schema().field(key).type)  # type: ignore[union-attr]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise PrequelError(f"record ids must be values of {key}; got {record_ids[:5]}") from None
        found = latest_versions(lake, keys, key)
        table = found.select([*mapper.source_columns, OP_COLUMN]) if found is not None else None
        return _check(config, stream.destination_id, mapper, table)
    sample: list[pa.Table] = []
    taken = 0
    latest = lake.latest()
    for seq in range(latest.seq if latest else 0, 0, -1):  # newest commits first, until the sample is full
        for batch in lake.scan_between(seq - 1, seq, columns=[*mapper.source_columns, OP_COLUMN]):
            sample.append(pa.Table.from_batches([batch]))
            taken += batch.num_rows
        if taken >= limit:
            break
    table = pa.concat_tables(sample, promote_options="permissive").slice(0, limit) if sample else None
    return _check(config, stream.destination_id, mapper, table)


def _check(config: PrequelConfig, destination_id: str, mapper: StreamMapper, table: pa.Table | None) -> Preview:
    if table is None or table.num_rows == 0:
        return Preview([])
    schema = config.destination(destination_id).record_schema
    mapped = mapper.apply(table.drop_columns([OP_COLUMN]))
    checked = validate_records(mapped, schema)
    shown = encode_records(converted_table(mapped, schema), required=set())
    return Preview([PreviewRow(text[:-1], why) for text, why in zip(shown.to_pylist(), checked.violations.to_pylist())])
