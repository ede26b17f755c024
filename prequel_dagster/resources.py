"""The resource that runs Extracts and Loads and streams Dagster events back (dagster-sling style)."""

import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import httpx
import pyarrow as pa

from .config.errors import PrequelError
from .config.models import PrequelConfig
from .config.secrets import redact
from .engine import ExtractResult, LoadResult, run_extract, run_load
from .lake.commits import OP_COLUMN
from .lake.deliveries import StreamState
from .lake.storage import LakeStorage, open_storage
from .engine.preview import Preview, preview_stream


def table_schema(schema: pa.Schema | None) -> dg.TableSchema:
    fields = [f for f in (schema or []) if f.name != OP_COLUMN]
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in fields])


class PrequelResource:
    """Holds the config and the connections (lake storage per datalake, HTTP transport) for one code location.

    Bound under the resource key ``prequel``. Subclass and override :meth:`http_transport` to route
    deliveries elsewhere in tests, or :meth:`storage` to supply your own lake storage.
    """

    def __init__(self, config: PrequelConfig):
        self.config = config
        self._storages: dict[str, LakeStorage] = {}

    def storage(self, datalake_id: str) -> LakeStorage:
        if datalake_id not in self._storages:
            self._storages[datalake_id] = open_storage(self.config.datalake(datalake_id), self.config)
        return self._storages[datalake_id]

    def http_transport(self) -> httpx.BaseTransport | None:
        return None

    def sleep(self) -> Callable[[float], None]:
        """How retries wait (override in tests to record instead of sleeping)."""
        return time.sleep

    def _storage_for_provider(self, provider_id: str) -> LakeStorage:
        return self.storage(self.config.provider(provider_id).datalake_id)

    def extract(self, context: dg.AssetExecutionContext, dataset_id: str) -> Iterator[dg.MaterializeResult]:
        """Run one Extract and yield its materialization with Prequel's Extract counters."""
        dataset = self.config.dataset(dataset_id)
        provider = self.config.provider_of_dataset(dataset)
        with _as_failure():
            result = run_extract(
                self.config,
                dataset_id,
                storage=self._storage_for_provider(provider.id),
                run_id=context.run.run_id,
                log=context.log.info,
            )
        for change in result.schema_changes:
            context.log.warning(f"schema drift in dataset '{dataset_id}': {change}")
        yield dg.MaterializeResult(asset_key=context.asset_key, metadata=extract_metadata(result))

    def load(
        self,
        context: dg.AssetExecutionContext,
        stream_id: str,
        *,
        record_ids: list[str] | None = None,
        redeliver_dead_letters: bool = False,
    ) -> Iterator[dg.MaterializeResult]:
        """Run one Load (or a redelivery) and yield its materialization with Prequel's Load counters."""
        with _as_failure():
            result = run_load(
                self.config,
                stream_id,
                storage=self._storage_for_stream(stream_id),
                transport=self.http_transport(),
                sleep=self.sleep(),
                log=context.log.info,
                record_ids=record_ids,
                redeliver_dead_letters=redeliver_dead_letters,
            )
        yield dg.MaterializeResult(asset_key=context.asset_key, metadata=load_metadata(result))

    def _storage_for_stream(self, stream_id: str) -> LakeStorage:
        stream = self.config.stream(stream_id)
        return self._storage_for_provider(self.config.provider_of_dataset(self.config.dataset(stream.dataset_id)).id)

    def dead_letters(self, stream_id: str) -> pa.Table:
        """The stream's dead-letter records (record_id, record, is_deleted, reason, load_id, batch_id)."""
        stream = self.config.stream(stream_id)
        provider = self.config.provider_of_dataset(self.config.dataset(stream.dataset_id))
        return StreamState(self.storage(provider.datalake_id), provider.id, stream_id).read_dead_letters()

    def preview(self, stream_id: str, *, limit: int = 10, record_ids: list[str] | None = None) -> "Preview":
        """test-transform: the stream's mappings applied to records from the lake, with violations."""
        with _as_failure():
            return preview_stream(self.config, stream_id, limit=limit, record_ids=record_ids,
                                  storage=self._storage_for_stream(stream_id))


class _as_failure:
    """Turn product errors into a Dagster Failure with a readable message and no traceback noise."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, PrequelError):
            raise dg.Failure(description=redact(str(exc)), allow_retries=True) from None
        return False


def extract_metadata(result: ExtractResult) -> dict[str, Any]:
    meta: dict[str, Any] = {name: dg.MetadataValue.int(v) for name, v in result.counts.as_dict().items()}
    meta.update(
        {
            "dagster/row_count": dg.MetadataValue.int(result.row_count),
            "dagster/column_schema": table_schema(result.schema),
            "dagster/uri": dg.MetadataValue.text(result.data_uri),
            "prequel/rows_written": dg.MetadataValue.int(result.rows_written),
            "prequel/commit": dg.MetadataValue.int(result.commit.seq if result.commit else 0),
            "prequel/cursor": dg.MetadataValue.text(str(result.cursor) if result.cursor is not None else "(none)"),
            "prequel/seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        }
    )
    if result.schema_changes:
        meta["prequel/schema_changes"] = dg.MetadataValue.md("\n".join(f"- {c}" for c in result.schema_changes))
    return meta


def load_metadata(result: LoadResult) -> dict[str, Any]:
    meta: dict[str, Any] = {name: dg.MetadataValue.int(v) for name, v in result.counts.as_dict().items()}
    meta.update(
        {
            "prequel/load_id": dg.MetadataValue.text(result.load_id or "(nothing pending)"),
            "prequel/from_commit": dg.MetadataValue.int(result.from_commit),
            "prequel/to_commit": dg.MetadataValue.int(result.to_commit),
            "prequel/resumed": dg.MetadataValue.bool(result.resumed),
            "prequel/redelivery": dg.MetadataValue.bool(result.redelivery),
            "prequel/seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        }
    )
    if result.dead_letters:
        meta["prequel/dead_letters"] = dg.MetadataValue.md("\n".join(f"- `{p}`" for p in result.dead_letters))
    return meta
