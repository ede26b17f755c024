"""Dagster resources: the datalakes, the sources and the webhooks, each a ``ConfigurableResource``.

In the shape of dagster-sling's ``SlingResource``: assets, checks and sensors take them as typed
parameters, and they run the engine and stream Dagster events back. ``build_definitions`` binds
them to a config; override any of them in ``build_definitions(resources={...})`` or in your own
``Definitions`` (subclass to route deliveries through another HTTP transport, say). The UI's
Resources page shows each with its non-secret configuration and the assets that use it.
"""

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import httpx
import pyarrow as pa
from pydantic import Field

from .config.errors import PrequelError
from .config.models import PrequelConfig
from .config.secrets import redact
from .engine import ExtractResult, LoadResult, run_extract, run_load
from .engine.preview import Preview, preview_stream
from .engine.windows import Window
from .lake.commits import OP_COLUMN, DatasetLog
from .lake.compaction import CompactionResult, compact_dataset
from .lake.deliveries import StreamState
from .lake.housekeeping import HousekeepingResult, run_housekeeping
from .stores import Store, open_datalake

DATALAKE_KEY, SOURCE_KEY, WEBHOOK_KEY = "prequel_datalake", "prequel_source", "prequel_webhook"

_CONFIGS: dict[str, PrequelConfig] = {}
_STORAGES: dict[tuple[str, str], Store] = {}
_LOCK = threading.Lock()
_COUNTER = itertools.count(1)


def bind_config(config: PrequelConfig, name: str) -> str:
    """Register a loaded config for this process's resources; returns the reference they carry.

    Resources are rebuilt from their config values at every run, so the config object itself lives
    here; each process (code server, run worker, step) registers it when it builds its definitions.
    """
    ref = f"{name}#{next(_COUNTER)}"
    with _LOCK:
        _CONFIGS[ref] = config
    return ref


class _BoundResource(dg.ConfigurableResource):
    config_ref: str = Field(
        description="The prequel config this resource serves (its file), bound by build_definitions."
    )

    @property
    def prequel_config(self) -> PrequelConfig:
        try:
            return _CONFIGS[self.config_ref]
        except KeyError:
            raise dg.Failure(
                f"no prequel config is bound as '{self.config_ref}' in this process; build the "
                "definitions with prequel_dagster.build_definitions"
            ) from None


class PrequelDatalakeResource(_BoundResource):
    """Each datalake's storage (local disk, S3, GCS, Azure), opened once per process, and what is
    kept in it: commits, delivery state, dead letters."""

    datalakes: dict[str, str] = Field(default_factory=dict, description="datalake id -> kind and location")

    def storage(self, datalake_id: str) -> Store:
        key = (self.config_ref, datalake_id)
        with _LOCK:
            cached = _STORAGES.get(key)
        if cached is None:
            config = self.prequel_config
            with _as_failure():
                opened = open_datalake(config.datalake(datalake_id), config)
            with _LOCK:
                cached = _STORAGES.setdefault(key, opened)
        return cached

    def storage_for_provider(self, provider_id: str) -> Store:
        return self.storage(self.prequel_config.provider(provider_id).datalake_id)

    def storage_for_dataset(self, dataset_id: str) -> Store:
        return self.storage(self.prequel_config.chain(dataset_id).datalake.id)

    def storage_for_stream(self, stream_id: str) -> Store:
        return self.storage_for_dataset(self.prequel_config.stream(stream_id).dataset_id)

    def dataset_log(self, dataset_id: str) -> DatasetLog:
        chain = self.prequel_config.chain(dataset_id)
        return DatasetLog(self.storage(chain.datalake.id), chain.provider.id, dataset_id)

    def dead_letters(self, stream_id: str) -> pa.Table:
        """The stream's dead-letter records (record_id, record, is_deleted, reason, load_id, batch_id)."""
        chain = self.prequel_config.chain(self.prequel_config.stream(stream_id).dataset_id)
        provider = chain.provider
        with _as_failure():
            return StreamState(self.storage_for_stream(stream_id), provider.id, stream_id).read_dead_letters()

    def housekeeping(
        self, datalake_id: str, *, dry_run: bool = False, log: Callable[[str], None] = lambda m: None
    ) -> HousekeepingResult:
        """``retention_window_days`` and the leftovers of crashed runs, in one datalake."""
        with _as_failure():
            return run_housekeeping(
                self.prequel_config, datalake_id, storage=self.storage(datalake_id), dry_run=dry_run, log=log
            )

    def compact(self, datalake_id: str, *, log: Callable[[str], None] = lambda m: None) -> list[CompactionResult]:
        """Merge each dataset's small data files in one datalake (every row version kept, never racing a writer)."""
        config, storage = self.prequel_config, self.storage(datalake_id)
        results = []
        for dataset in config.datasets:
            chain = config.chain(dataset.id)
            if chain.datalake.id == datalake_id:
                with _as_failure():
                    results.append(compact_dataset(storage, chain.provider.id, dataset.id, log=log))
        return results

    def preview(self, stream_id: str, *, limit: int = 10, record_ids: list[str] | None = None) -> Preview:
        """test-transform: the stream's mappings applied to records from the lake, with violations."""
        with _as_failure():
            return preview_stream(
                self.prequel_config,
                stream_id,
                limit=limit,
                record_ids=record_ids,
                storage=self.storage_for_stream(stream_id),
            )


class PrequelSourceResource(_BoundResource):
    """Providers' databases and buckets (connections, SSH tunnels); runs Extracts into the lake."""

    sources: dict[str, str] = Field(default_factory=dict, description="source id -> vendor and where")

    def extract(
        self,
        context: dg.AssetExecutionContext,
        dataset_id: str,
        datalake: PrequelDatalakeResource,
        asset_key: dg.AssetKey | None = None,
        *,
        window: Window | None = None,
        resync: bool = False,
    ) -> Iterator[dg.MaterializeResult]:
        """Run one Extract and yield its materialization with Prequel's Extract counters; ``window``: a
        partition's (or a range's) time window, read alone; ``resync``: read in full and compare."""
        with _as_failure():
            result = run_extract(
                self.prequel_config,
                dataset_id,
                storage=datalake.storage_for_dataset(dataset_id),
                run_id=context.run.run_id,
                log=context.log.info,
                window=window,
                resync=resync,
            )
        for change in result.schema_changes:
            context.log.warning(f"schema drift in dataset '{dataset_id}': {change}")
        # the data version is the last commit that brought rows: unchanged when nothing new came, so no load follows
        with_rows = datalake.dataset_log(dataset_id).latest_with_rows()  # from the checkpointed log: O(1)
        version = dg.DataVersion(f"commit-{with_rows.seq}-{with_rows.token}" if with_rows else "empty")
        yield dg.MaterializeResult(
            asset_key=asset_key or context.asset_key, metadata=extract_metadata(result), data_version=version
        )

    def pending_files(self, dataset_id: str, datalake: PrequelDatalakeResource) -> list[Any]:
        """A glob dataset's files that are new or changed since its last commit, or a push dataset's
        batches staged since (the sensor's question)."""
        from .sources.files import GlobReader

        config = self.prequel_config
        dataset = config.dataset(dataset_id)
        latest = datalake.dataset_log(dataset_id).latest()
        previous = latest.cursor if latest is not None and isinstance(latest.cursor, dict) else None
        if dataset.push is not None:  # batches staged since the last commit
            from .push.reader import staged_after

            return staged_after(config, dataset, previous)
        reader = GlobReader(config.source(dataset.source_id), dataset, config)
        try:
            return reader.pending(previous)
        finally:
            reader.close()


class PrequelWebhookResource(_BoundResource):
    """Destinations: the HTTP transport, signing and pacing; runs Loads from the lake to them."""

    destinations: dict[str, str] = Field(default_factory=dict, description="destination id -> type, method and uri")

    def http_transport(self) -> httpx.BaseTransport | None:
        """The transport deliveries use (None: httpx's own); override to route them elsewhere."""
        return None

    def sleep(self) -> Callable[[float], None]:
        """How retries wait (override in tests to record instead of sleeping)."""
        return time.sleep

    def load(
        self,
        context: dg.AssetExecutionContext,
        stream_id: str,
        datalake: PrequelDatalakeResource,
        asset_key: dg.AssetKey | None = None,
        *,
        record_ids: list[str] | None = None,
        redeliver_dead_letters: bool = False,
        window: Window | None = None,
        resend: bool = False,
    ) -> Iterator[dg.MaterializeResult]:
        """Run one Load (or a redelivery) and yield its materialization with Prequel's Load counters;
        ``resend`` then re-sends the current records of ``window`` (all without one) under new batch ids."""
        with _as_failure():
            result = run_load(
                self.prequel_config,
                stream_id,
                storage=datalake.storage_for_stream(stream_id),
                transport=self.http_transport(),
                sleep=self.sleep(),
                log=context.log.info,
                record_ids=record_ids,
                redeliver_dead_letters=redeliver_dead_letters,
                window=window,
                resend=resend,
                resend_id=context.run.run_id,
            )
        yield dg.MaterializeResult(asset_key=asset_key or context.asset_key, metadata=load_metadata(result))


def default_resources(config: PrequelConfig, name: str) -> dict[str, _BoundResource]:
    """The three resources bound to ``config``, each showing its part of the config (no secrets)."""
    ref = bind_config(config, name)
    return {
        DATALAKE_KEY: PrequelDatalakeResource(
            config_ref=ref, datalakes={d.id: _where_lake(d) for d in config.datalakes}
        ),
        SOURCE_KEY: PrequelSourceResource(config_ref=ref, sources={s.id: _where_source(s) for s in config.sources}),
        WEBHOOK_KEY: PrequelWebhookResource(
            config_ref=ref,
            destinations={
                d.id: f"{d.type} {d.webhook.request_template.method} {d.webhook.request_template.uri}"
                for d in config.destinations
            },
        ),
    }


def rebind(resource: Any, default: Any) -> Any:
    """A user's resource bound to the same config as the default it replaces (and showing the same
    description when it gives none)."""
    if not isinstance(resource, _BoundResource) or not isinstance(default, _BoundResource):
        return resource
    values = {name: getattr(resource, name) for name in type(resource).model_fields}
    for name in type(default).model_fields:
        if not values.get(name):
            values[name] = getattr(default, name)
    values["config_ref"] = default.config_ref
    return type(resource)(**values)


def _where_lake(datalake: Any) -> str:
    block = getattr(datalake, datalake.storage, None)
    where = getattr(block, "path", None) or getattr(block, "bucket_name", "")
    prefix = getattr(block, "prefix", "")
    return f"{datalake.storage} {where}{'/' + prefix if prefix else ''}"


def _where_source(source: Any) -> str:
    block = getattr(source, source.vendor, None)
    parts = [getattr(block, k, None) for k in ("host", "database", "bucket_name", "path", "project_id")]
    return f"{source.vendor} {' '.join(str(p) for p in parts if p)}".strip()


def table_schema(schema: pa.Schema | None) -> dg.TableSchema:
    fields = [f for f in (schema or []) if f.name != OP_COLUMN]
    return dg.TableSchema(columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in fields])


@contextlib.contextmanager
def _as_failure() -> Iterator[None]:
    """Turn product errors into a Dagster Failure with a readable message and no traceback noise."""
    try:
        yield
    except PrequelError as exc:
        raise dg.Failure(description=redact(str(exc)), allow_retries=True) from None


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
    if result.window is not None:  # (a ranged run records this on every partition of the range)
        meta["prequel/window"] = dg.MetadataValue.text(result.window.describe())
    if result.resync:
        meta["prequel/resync"] = dg.MetadataValue.bool(True)
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
    if result.metering is not None:  # a stream of a data stream: its usage
        meta["records_metered"] = dg.MetadataValue.int(result.metering["records_metered"])
        meta["cost_usd"] = dg.MetadataValue.float(result.metering["cost_usd"])
        meta["prequel/cost_usd_by_offer"] = dg.MetadataValue.json(result.metering["cost_usd_by_offer"])
    if result.window is not None:
        meta["prequel/window"] = dg.MetadataValue.text(result.window.describe())
    if result.resent is not None:
        resent = result.resent
        meta["prequel/resend_load_id"] = dg.MetadataValue.text(resent.load_id or "(nothing to re-send)")
        meta["prequel/records_resent"] = dg.MetadataValue.int(resent.counts.records_loaded)
        meta["prequel/resend_errored"] = dg.MetadataValue.int(resent.counts.records_errored)
        if resent.dead_letters:
            meta["prequel/resend_dead_letters"] = dg.MetadataValue.md(
                "\n".join(f"- `{p}`" for p in resent.dead_letters)
            )
    return meta
