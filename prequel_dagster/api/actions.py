"""The guide's actions: test-source, extracts and loads (as Dagster runs), test-transform, samples, record lineage.

Extracts and Loads are launched through Dagster's GraphQL API as runs of the same assets the schedules
materialize, so they show in the UI with their logs; the Extract and Load objects carry the run id and
read their status and counters from the run.
"""

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response

from ..catalog.entries import validate_entry
from ..catalog.secret_fields import merge_patch
from ..catalog.store import Job, now, unseal_entry
from ..config.errors import PrequelError
from ..config.models import Partitions, Source, sanitize_name
from ..config.partition_keys import PARTITION_TAG, current_partition_key
from ..config.secrets import redact
from ..sources.probe import Probe, probe_source
from . import envelope
from .app import _holds_sealed, next_url, page_args, principal, refuse_deep, wrapped
from .body import read_json
from .dagster_link import DagsterLink, Launcher, Reloader, RunInfo
from .service import IMMUTABLE, ApiError, Principal, Service

log = logging.getLogger("prequel_dagster.api")

KEY_PREFIX = ("prequel",)
"""The translator's default asset key prefix: datasets are ``prequel/<provider>/<dataset>``."""
REVISION_TAG = "prequel/catalog_revision"
JOB_TAG = "prequel/api_job"
MAX_TEST_RECORDS = 50
MAX_TEST_STREAM_RECORDS = 100
_EXTRACT_COUNTERS = (
    "records_processed",
    "records_new_inserted",
    "records_existing_updated",
    "records_existing_unchanged",
    "records_existing_deleted",
    "records_errored",
)
_LOAD_COUNTERS = ("records_processed", "records_transformed", "records_valid", "records_loaded", "records_errored")
_STATUS = {
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "CANCELED": "cancelled",
    "CANCELING": "running",
    "STARTED": "running",
}


def dataset_key(provider_id: str, dataset_id: str) -> list[str]:
    return [*KEY_PREFIX, provider_id, dataset_id]


def stream_key(provider_id: str, stream_id: str) -> list[str]:
    return [*KEY_PREFIX, provider_id, "streams", stream_id]


class Actions:
    """The action endpoints, with the link to Dagster that runs Extracts and Loads."""

    def __init__(self, service: Service, link: DagsterLink, *, reloader: Reloader, launcher: Launcher):
        self.service = service
        self.link = link
        self.reloader = reloader
        self.launcher = launcher
        self._probes = ThreadPoolExecutor(2, thread_name_prefix="prequel-test-source")
        self._lock = threading.Lock()
        self._launched: dict[str, str] = {}  # job id -> run id, until the catalog has it

    # ------------------------------------------------------------------ catalog changes

    def changed(self, kind: str, id: str, revision: int) -> None:
        """After a change: definitions follow (a code-location reload), and a source is tested."""
        self.reloader.request()
        if kind == "sources":
            self._probes.submit(self._probe_stored, id)

    def _probe_stored(self, source_id: str) -> None:
        try:
            config = self.service.config()
            found = probe_source(config, config.source(source_id))
            with self.service.lock:
                self.service.state.set_status("sources", source_id, {"is_reachable": found.ok, "checked_at": now()})
        except Exception:  # the source was deleted meanwhile, or the catalog is unreachable: next test reports it
            pass

    # ------------------------------------------------------------------ test-source

    def test_source(self, who: Principal, source_id: str | None, body: Mapping[str, Any] | None) -> Probe:
        """Connect with a stored source, a change to it (not saved), or a new one (not saved)."""
        service = self.service
        if body is not None and _holds_sealed(body):
            raise ApiError(400, "source: '$sealed' values are the catalog's own; send secrets in clear")
        if source_id is not None:
            config, current = service.find(who, "sources", source_id)
            model = current
            if body:  # a credential change, tried without saving it
                for field in ("id", *IMMUTABLE["sources"]):
                    if field in body and body[field] != getattr(current, field):
                        raise ApiError(400, f"source.{field}: cannot be changed")
                with service.lock:
                    stored = service.stored("sources", source_id)
                    base = stored.body if stored is not None else current.model_dump(mode="json", by_alias=True)
                    merged = service._prepare_source(who, merge_patch(base, dict(body)))
                    model = validate_entry("sources", unseal_entry("sources", merged, service.catalog))
                service.check_tenant_source(who, model)
        else:
            body = service._prepare_source(who, {"id": "test-source", **dict(body or {})})
            if body["id"] != "test-source":
                raise ApiError(400, "source.id: ids of sources are assigned by the server; remove it")
            model = validate_entry("sources", body)
            config = service.candidate(who, "sources", model, body)
        assert isinstance(model, Source)
        found = probe_source(config, model)
        if source_id is not None and not body:
            with service.lock:
                service.state.set_status("sources", source_id, {"is_reachable": found.ok, "checked_at": now()})
        return found

    # ------------------------------------------------------------------ extracts and loads

    def extract(self, who: Principal, dataset_id: str) -> dict[str, Any]:
        config, dataset = self.service.find(who, "datasets", dataset_id)
        provider = config.chain(dataset.id).provider.id
        job = Job(str(uuid.uuid4()), "extract", dataset.id, provider, None, now(), who.key_id, None, None)
        self._launch(job, dataset_key(provider, dataset.id), None, config.dataset(dataset.id).partitions)
        return self.extract_view(job)

    def load(self, who: Principal, stream_id: str, record_ids: list[str] | None) -> dict[str, Any]:
        config, stream = self.service.find(who, "streams", stream_id)
        dataset = config.dataset(stream.dataset_id)  # type: ignore[attr-defined]
        provider = config.chain(dataset.id).provider.id
        run_config = None
        if record_ids:
            if dataset.partitions is not None:
                raise ApiError(
                    400,
                    f"record_ids: stream '{stream.id}' delivers a partitioned dataset; re-send its records with a "
                    "backfill of their partitions and the resend option (Dagster UI or `dagster asset backfill`)",
                )
            op = sanitize_name(f"load__{provider}__{stream.destination_id}")  # type: ignore[attr-defined]
            run_config = {"ops": {op: {"config": {"record_ids": record_ids}}}}
        job = Job(str(uuid.uuid4()), "load", stream.id, provider, None, now(), who.key_id, record_ids, None)
        self._launch(job, stream_key(provider, stream.id), run_config, dataset.partitions)
        return self.load_view(job)

    def _launch(
        self, job: Job, key: list[str], run_config: dict[str, Any] | None, partitions: Partitions | None
    ) -> None:
        """Launch the run; a partitioned asset's run names the partition in progress (an extract then
        reads that window, a load delivers everything pending, as any load)."""
        self.service.catalog.add_job(job)
        tags = {
            JOB_TAG: job.id,
            "prequel/provider": job.provider_id,
            REVISION_TAG: str(self.service.state.revision),
        }
        if partitions is not None:
            tags[PARTITION_TAG] = current_partition_key(partitions)
        self.launcher.submit(
            job.id, [key], run_config=run_config, tags=tags, on_launched=self._launched_run, on_failed=self._failed
        )

    def _launched_run(self, job_id: str, run_id: str) -> None:
        self.service.catalog.set_job_run(job_id, run_id)

    def _failed(self, job_id: str, message: str) -> None:
        # Dagster's reason may quote the code location's load error, which can name any provider's
        # entries: it goes to the API's log; the job says where to look.
        log.error("job %s: the run could not be launched: %s", job_id, redact(message))
        self.service.catalog.set_job_error(
            job_id,
            _error(
                "LAUNCH_FAILED",
                "The run could not be launched",
                f"Dagster could not launch the run; the API's log has the reason (job {job_id})",
            ),
        )

    def job(self, who: Principal, kind: str, id: str) -> Job:
        job = self.service.catalog.get_job(kind, id)
        if job is None or (who.provider_id is not None and job.provider_id != who.provider_id):
            raise ApiError(404, f"no {kind} with id '{id}'")
        return job

    def _run(self, job: Job) -> RunInfo | None:
        if job.run_id is None:
            return None
        try:
            return self.link.run(job.run_id)
        except PrequelError:
            return None

    def extract_view(self, job: Job) -> dict[str, Any]:
        run = self._run(job)
        view = {"id": job.id, "dataset_id": job.target_id, **_job_fields(job, run)}
        metadata = _metadata(run, dataset_key(job.provider_id, job.target_id))
        view.update({name: int(metadata.get(name, 0)) for name in _EXTRACT_COUNTERS})
        return view

    def load_view(self, job: Job) -> dict[str, Any]:
        run = self._run(job)
        view = {
            "id": job.id,
            "stream_id": job.target_id,
            **_job_fields(job, run),
            "actor_id": job.actor_id,
            "actor_type": "api_key",
            "record_ids": job.record_ids or [],
        }
        metadata = _metadata(run, stream_key(job.provider_id, job.target_id))
        view.update({name: int(metadata.get(name, 0)) for name in _LOAD_COUNTERS})
        return view

    # ------------------------------------------------------------------ transform tests, samples, lineage

    def test_transform(
        self, who: Principal, stream_id: str | None, stream_body: Mapping[str, Any] | None, record_ids: Any, limit: int
    ) -> dict[str, Any]:
        from ..engine.preview import preview_stream

        if not isinstance(record_ids, list) or not all(isinstance(r, (str, int)) for r in record_ids):
            raise ApiError(400, "record_ids: expected a list of record ids (strings)")
        if not 1 <= len(record_ids) <= limit:
            raise ApiError(400, f"record_ids: between 1 and {limit} ids")
        service = self.service
        if stream_body is not None and not isinstance(stream_body, Mapping):
            raise ApiError(400, "stream: expected an object")
        if stream_id is not None:
            config, current = service.find(who, "streams", stream_id)
            if stream_body:
                for field in ("id", *IMMUTABLE["streams"]):
                    if field in stream_body and stream_body[field] != getattr(current, field):
                        raise ApiError(400, f"stream.{field}: cannot be changed in a test; test a new stream instead")
                merged = merge_patch(
                    current.model_dump(mode="json", by_alias=True, exclude_unset=True), dict(stream_body)
                )
                patched = validate_entry("streams", merged)
                config = service.candidate(who, "streams", patched, merged)
            target = stream_id
        else:
            body = {"id": "test-stream", **dict(stream_body or {})}
            model = validate_entry("streams", body)
            config = service.candidate(who, "streams", model, body)
            target = model.id
        preview = preview_stream(config, target, record_ids=[str(r) for r in record_ids])
        schema = config.destination(config.stream(target).destination_id).record_schema
        return {
            "schema": _schema_columns(schema),
            "records": [row.record for row in preview.rows],
            "violations": [row.violation for row in preview.rows],
        }

    def random_sample(self, who: Principal, dataset_id: str, size: Any) -> dict[str, Any]:
        from ..engine.sample import random_sample

        if not isinstance(size, int) or isinstance(size, bool):
            raise ApiError(400, "sample_size: required, an integer from 1 to 1000")
        config, dataset = self.service.find(who, "datasets", dataset_id)
        try:
            sample = random_sample(config, dataset.id, size)
        except ValueError as exc:
            raise ApiError(400, f"sample_size: {exc}") from None
        return {"schema": sample.schema, "records": sample.records}

    def record(self, who: Principal, dataset_id: str, record_id: str, as_of: str | None) -> dict[str, Any]:
        from ..engine.lineage import record_lineage

        config, dataset = self.service.find(who, "datasets", dataset_id)
        when = None
        if as_of:
            try:
                when = dt.datetime.fromisoformat(as_of.replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(400, "as_of: expected an RFC 3339 timestamp (2024-01-31T12:00:00Z)") from None
        try:
            found = record_lineage(config, dataset.id, record_id, as_of=when)
        except ValueError as exc:
            raise ApiError(400, f"record_id: {exc}") from None
        if found is None:
            raise ApiError(404, f"no record with id '{record_id}' in dataset '{dataset_id}'")
        return found

    def public_keys(self) -> list[str]:
        from cryptography.hazmat.primitives import serialization

        from ..delivery.signing import load_private_key

        keys = []
        for destination in self.service.config().destinations:
            if destination.signing is not None:
                key = load_private_key(destination.signing.private_key.reveal()).public_key()
                pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                keys.append(pem.decode())
        return sorted(set(keys))

    # ------------------------------------------------------------------ routes

    def register(self, app: FastAPI) -> None:
        actions = self

        async def test_source_route(request: Request, id: str) -> Response:
            body = await _optional(request, "source")
            return _probe_answer(await _thread(actions.test_source, principal(request), id, body))

        async def test_new_source_route(request: Request) -> Response:
            body = await wrapped(request, "source")
            return _probe_answer(await _thread(actions.test_source, principal(request), None, body))

        def extract_route(request: Request, id: str) -> Response:
            return envelope.success(
                {"extract": actions.extract(principal(request), id)}, "extract submitted", status=201
            )

        def extracts_route(request: Request) -> Response:
            who = principal(request)
            return _jobs(request, who, "extract", actions.extract_view, request.query_params.get("dataset_id"))

        def extract_get_route(request: Request, id: str) -> Response:
            return envelope.success({"extract": actions.extract_view(actions.job(principal(request), "extract", id))})

        async def load_route(request: Request, id: str) -> Response:
            body = await _object(request)
            record_ids = body.get("record_ids")
            if record_ids is not None and (
                not isinstance(record_ids, list) or not all(isinstance(r, (str, int)) for r in record_ids)
            ):
                raise ApiError(400, "record_ids: expected a list of record ids")
            ids = [str(r) for r in record_ids] if record_ids else None
            made = await _thread(actions.load, principal(request), id, ids)
            return envelope.success({"load": made}, "load submitted")

        def loads_route(request: Request) -> Response:
            who = principal(request)
            return _jobs(request, who, "load", actions.load_view, request.query_params.get("stream_id"))

        def load_get_route(request: Request, id: str) -> Response:
            return envelope.success({"load": actions.load_view(actions.job(principal(request), "load", id))})

        async def test_transform_route(request: Request, id: str) -> Response:
            body = await _object(request)
            result = await _thread(
                actions.test_transform,
                principal(request),
                id,
                body.get("stream"),
                body.get("record_ids"),
                MAX_TEST_RECORDS,
            )
            return envelope.success(result, f"{len(result['records'])} records transformed")

        async def test_stream_route(request: Request) -> Response:
            body = await _object(request)
            if not isinstance(body.get("stream"), dict):
                raise ApiError(400, "stream: required, the stream to test")
            result = await _thread(
                actions.test_transform,
                principal(request),
                None,
                body["stream"],
                body.get("record_ids"),
                MAX_TEST_STREAM_RECORDS,
            )
            return envelope.success(result, f"{len(result['records'])} records transformed")

        async def sample_route(request: Request, id: str) -> Response:
            body = await _object(request)
            result = await _thread(actions.random_sample, principal(request), id, body.get("sample_size"))
            return envelope.success(result, f"{len(result['records'])} records")

        def record_route(request: Request, id: str, record_id: str) -> Response:
            found = actions.record(principal(request), id, record_id, request.query_params.get("as_of"))
            return envelope.success({"record": found})

        def public_key_route(request: Request) -> Response:
            keys = actions.public_keys()
            if not keys:
                raise ApiError(404, "no destination signs its requests (add a signing block to a destination)")
            return envelope.success({"public_key": keys[0], "public_keys": keys})

        add = app.add_api_route
        add("/import/sources/{id}/test-source", test_source_route, methods=["POST"], tags=["Import Sources"])
        add("/import/test-source", test_new_source_route, methods=["POST"], tags=["Import Sources"])
        add("/import/datasets/{id}/extract", extract_route, methods=["POST"], tags=["Import Extracts"], status_code=201)
        add("/import/extracts", extracts_route, methods=["GET"], tags=["Import Extracts"])
        add("/import/extracts/{id}", extract_get_route, methods=["GET"], tags=["Import Extracts"])
        add("/import/streams/{id}/load", load_route, methods=["POST"], tags=["Import Loads"])
        add("/import/loads", loads_route, methods=["GET"], tags=["Import Loads"])
        add("/import/loads/{id}", load_get_route, methods=["GET"], tags=["Import Loads"])
        add("/import/streams/{id}/test-transform", test_transform_route, methods=["POST"], tags=["Import Streams"])
        add("/import/test-stream", test_stream_route, methods=["POST"], tags=["Import Streams"])
        add("/import/datasets/{id}/random-sample", sample_route, methods=["POST"], tags=["Import Datasets"])
        add("/import/datasets/{id}/records/{record_id}", record_route, methods=["GET"], tags=["Import Datasets"])
        add("/public/signatures/webhook-public-key", public_key_route, methods=["GET"], tags=["Signatures"])


def _jobs(request: Request, who: Principal, kind: str, view: Any, target: str | None) -> Response:
    size, descending, cursor = page_args(request)
    service: Service = request.app.state.service
    if target is not None:
        service.find(who, "datasets" if kind == "extract" else "streams", target)  # 404 if not the caller's
    from ..catalog.store import CatalogError

    try:
        jobs, more = service.catalog.page_jobs(
            kind, target_id=target, provider_id=who.provider_id, page_size=size, descending=descending, cursor=cursor
        )
    except CatalogError as exc:
        raise ApiError(400, f"cursor: {exc}") from None
    return envelope.success({f"{kind}s": [view(j) for j in jobs], **next_url(request, more)}, f"{len(jobs)} {kind}s")


def _probe_answer(found: Probe) -> Response:
    return envelope.success({"code": found.code, "message": found.message}, found.message)


async def _object(request: Request) -> dict[str, Any]:
    data = await read_json(request)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    refuse_deep(data, "body")
    return data


async def _optional(request: Request, name: str) -> dict[str, Any] | None:
    data = await _object(request)
    if not data:
        return None
    body = data.get(name)
    if not isinstance(body, dict):
        raise ApiError(400, f'the request body must be {{"{name}": {{...}}}} or empty')
    return body


async def _thread(fn: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _error(code: str, title: str, message: str) -> dict[str, Any]:
    return {
        "error_code": code,
        "title": title,
        "message": redact(message),
        "blame": "",
        "documentation_url": "",
        "trace": "",
    }


def _stamp(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _job_fields(job: Job, run: RunInfo | None) -> dict[str, Any]:
    status = "failed" if job.error else "pending"
    error = job.error
    if run is not None:
        status = _STATUS.get(run.status, "pending")
        if status == "failed" and error is None:
            error = _error("RUN_FAILED", "The Dagster run failed", run.error or "see the run's logs in Dagster")
    return {
        "status": status,
        "run_id": job.run_id,
        "submitted_at": job.submitted_at,
        "started_at": _stamp(run.start_time) if run else None,
        "ended_at": _stamp(run.end_time) if run else None,
        "error": error,
    }


def _metadata(run: RunInfo | None, key: list[str]) -> dict[str, Any]:
    if run is None:
        return {}
    for m in run.materializations:
        if list(m.asset_key) == key:
            return dict(m.metadata)
    return {}


def _schema_columns(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    required = set(schema.get("required", []))
    columns = []
    for name, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type", "any") if isinstance(spec, dict) else "any"
        kinds = kind if isinstance(kind, list) else [kind]
        columns.append(
            {
                "name": name,
                "database_type_name": "/".join(str(k) for k in kinds if k != "null").upper() or "NULL",
                "length": 0,
                "precision": 0,
                "scale": 0,
                "nullable": name not in required or "null" in kinds,
            }
        )
    return columns
