"""How the API drives Dagster: GraphQL calls to its webserver, so the Extracts and Loads it triggers are ordinary runs in the UI."""

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ..config.errors import PrequelError

log = logging.getLogger("prequel_dagster.api")

DEFAULT_URL = "http://127.0.0.1:3000"
DEFAULT_LOCATION = "prequel_dagster"
URL_ENV_VAR = "PREQUEL_DAGSTER_URL"
LOCATION_ENV_VAR = "PREQUEL_DAGSTER_LOCATION"
ASSET_JOB = "__ASSET_JOB"
"""The implicit job of every asset of a repository: a launch selects the assets it materializes."""
REPOSITORY = "__repository__"
"""The repository a ``Definitions`` object becomes in its code location."""
FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
"""Run statuses after which nothing changes."""
FIX = f"start it with `dagster dev -w workspace.yaml`, or set {URL_ENV_VAR} to the address of the one running"
MAX_ERROR_CHARS = 1000

Key = list[str]
OnLaunched = Callable[[str, str], None]
OnFailed = Callable[[str, str], None]


class DagsterUnavailable(PrequelError):
    """The webserver cannot be reached, answered an error, or its code location is not usable."""

    def __init__(self, url: str, problem: str, fix: str | None = FIX):
        self.url = url
        self.problem = problem
        super().__init__(f"Dagster webserver {url}: {problem}" + (f"; {fix}" if fix else ""))


class LocationLoadError(DagsterUnavailable):
    """The code location failed to load (a config error, typically): ``detail`` is its error message."""

    def __init__(self, url: str, location: str, detail: str):
        self.location = location
        self.detail = detail
        super().__init__(url, f"code location '{location}' failed to load: {detail}", fix=None)


class LaunchFailed(PrequelError):
    """Dagster refused to launch a run: ``kind`` is the GraphQL result type (``InvalidSubsetError``, ...)."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(f"Dagster did not launch the run: {kind}: {message}")


@dataclass(frozen=True)
class Materialization:
    """One asset materialized by a run, with its metadata as plain values."""

    asset_key: list[str]
    metadata: dict[str, Any]


@dataclass(frozen=True)
class RunInfo:
    """A Dagster run as the API reports it; ``status`` is Dagster's (``QUEUED``, ``STARTED``, ``SUCCESS``, ...)."""

    run_id: str
    status: str
    start_time: float | None
    end_time: float | None
    tags: dict[str, str]
    materializations: list[Materialization]
    error: str | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


# -- GraphQL -------------------------------------------------------------------------------------

_ERROR_FIELDS = """
fragment PrequelPythonError on PythonError {
  message
  className
  errorChain { error { message className } }
}
"""

_METADATA_FIELDS = """
fragment PrequelMetadata on MetadataEntry {
  __typename
  label
  ... on IntMetadataEntry { intRepr }
  ... on FloatMetadataEntry { floatValue floatRepr }
  ... on TextMetadataEntry { text }
  ... on JsonMetadataEntry { jsonString }
  ... on BoolMetadataEntry { boolValue }
  ... on MarkdownMetadataEntry { mdStr }
  ... on PathMetadataEntry { path }
  ... on NotebookMetadataEntry { path }
  ... on UrlMetadataEntry { url }
  ... on TimestampMetadataEntry { timestamp }
  ... on PipelineRunMetadataEntry { runId }
  ... on AssetMetadataEntry { assetKey { path } }
  ... on JobMetadataEntry { jobName }
  ... on PoolMetadataEntry { pool }
  ... on PythonArtifactMetadataEntry { module name }
  ... on TableSchemaMetadataEntry { schema { columns { name type description } } }
}
"""

_RELOAD = (
    """
mutation PrequelReload($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) {
    __typename
    ... on WorkspaceLocationEntry {
      loadStatus
      locationOrLoadError { __typename ...PrequelPythonError }
    }
    ... on PythonError { ...PrequelPythonError }
    ... on Error { message }
  }
}
"""
    + _ERROR_FIELDS
)

_LOCATION = (
    """
query PrequelLocation($location: String!) {
  workspaceLocationEntryOrError(name: $location) {
    __typename
    ... on WorkspaceLocationEntry {
      loadStatus
      locationOrLoadError { __typename ...PrequelPythonError }
    }
    ... on PythonError { ...PrequelPythonError }
  }
}
"""
    + _ERROR_FIELDS
)

_LOCATION_ASSETS = (
    """
query PrequelLocationAssets($location: String!) {
  workspaceLocationEntryOrError(name: $location) {
    __typename
    ... on WorkspaceLocationEntry {
      loadStatus
      locationOrLoadError {
        __typename
        ...PrequelPythonError
        ... on RepositoryLocation { repositories { name assetNodes { assetKey { path } } } }
      }
    }
    ... on PythonError { ...PrequelPythonError }
  }
}
"""
    + _ERROR_FIELDS
)

_ASSET_NODES = """
query PrequelAssetNodes($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) {
    assetKey { path }
    repository { name location { name } }
  }
}
"""

_LAUNCH = (
    """
mutation PrequelLaunch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message path } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on PythonError { ...PrequelPythonError }
    ... on Error { message }
  }
}
"""
    + _ERROR_FIELDS
)

_RUN = (
    """
query PrequelRun($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      runId
      status
      startTime
      endTime
      tags { key value }
      assetMaterializations { assetKey { path } metadataEntries { ...PrequelMetadata } }
    }
    ... on PythonError { ...PrequelPythonError }
  }
}
"""
    + _ERROR_FIELDS
    + _METADATA_FIELDS
)

_RUN_FAILURES = (
    """
query PrequelRunFailures($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor, limit: 1000) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey message error { ...PrequelPythonError } }
        ... on RunFailureEvent { message error { ...PrequelPythonError } }
      }
    }
    ... on PythonError { ...PrequelPythonError }
  }
}
"""
    + _ERROR_FIELDS
)


_QUALIFIED_CLASS = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_]\w*: )")


def short_error(message: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An error message without the module path of its class and at most ``limit`` characters."""
    text = _QUALIFIED_CLASS.sub("", message.strip())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _python_error_message(error: Mapping[str, Any]) -> str:
    """The most telling message of a Dagster ``PythonError``: its root cause's (a code location that
    failed to load wraps the ``ConfigError`` that says which line of the config is wrong)."""
    chain = [link.get("error") or {} for link in error.get("errorChain") or []]
    messages = [e.get("message") or "" for e in [error, *chain] if (e.get("message") or "").strip()]
    text = _QUALIFIED_CLASS.sub("", messages[-1].strip()) if messages else "unknown error"
    # A ``dagster.Failure``'s description is the message meant for users: no need to name the class.
    return short_error(text.removeprefix("Failure: "))


def _metadata_value(entry: Mapping[str, Any]) -> Any:
    kind = entry["__typename"]
    if kind == "IntMetadataEntry":
        return int(entry["intRepr"])  # intValue is a 32-bit GraphQL Int: null beyond it
    if kind == "FloatMetadataEntry":
        return entry["floatValue"] if entry.get("floatValue") is not None else float(entry["floatRepr"])
    if kind == "TextMetadataEntry":
        return entry["text"]
    if kind == "JsonMetadataEntry":
        return json.loads(entry["jsonString"])
    if kind == "BoolMetadataEntry":
        return entry["boolValue"]
    if kind == "MarkdownMetadataEntry":
        return entry["mdStr"]
    if kind in ("PathMetadataEntry", "NotebookMetadataEntry"):
        return entry["path"]
    if kind == "UrlMetadataEntry":
        return entry["url"]
    if kind == "TimestampMetadataEntry":
        return entry["timestamp"]
    if kind == "PipelineRunMetadataEntry":
        return entry["runId"]
    if kind == "AssetMetadataEntry":
        return "/".join(entry["assetKey"]["path"])
    if kind == "JobMetadataEntry":
        return entry["jobName"]
    if kind == "PoolMetadataEntry":
        return entry["pool"]
    if kind == "PythonArtifactMetadataEntry":
        return f"{entry['module']}.{entry['name']}"
    if kind == "TableSchemaMetadataEntry":
        return {"columns": [dict(c) for c in entry["schema"]["columns"]]}
    return None  # NullMetadataEntry, and kinds with no plain value (tables, lineage, code references)


class DagsterLink:
    """Calls to one code location of a Dagster webserver (``url`` as the browser opens the UI)."""

    repository = REPOSITORY

    def __init__(
        self,
        url: str = DEFAULT_URL,
        location: str = DEFAULT_LOCATION,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ):
        self.url = url.rstrip("/")
        self.location = location
        self.timeout = timeout
        self._client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> "DagsterLink":
        """The link ``$PREQUEL_DAGSTER_URL`` and ``$PREQUEL_DAGSTER_LOCATION`` name (defaults: ``dagster dev``'s)."""
        env = os.environ if environ is None else environ
        return cls(env.get(URL_ENV_VAR) or DEFAULT_URL, env.get(LOCATION_ENV_VAR) or DEFAULT_LOCATION, **kwargs)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "DagsterLink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DagsterLink({self.url!r}, {self.location!r})"

    # -- transport -------------------------------------------------------------------------
    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The ``data`` of one GraphQL request; any failure to get it is :class:`DagsterUnavailable`."""
        try:
            response = self._client.post("/graphql", json={"query": query, "variables": dict(variables or {})})
        except httpx.TimeoutException as exc:
            raise DagsterUnavailable(
                self.url,
                f"did not answer within {self.timeout:g} s ({type(exc).__name__})",
                fix=f"check that it is running (`dagster dev -w workspace.yaml`, {URL_ENV_VAR}); if it is busy "
                "loading a large code location, give the link a longer timeout",
            ) from exc
        except httpx.HTTPError as exc:
            raise DagsterUnavailable(self.url, f"cannot be reached ({type(exc).__name__}: {exc})") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("errors"):
            messages = "; ".join(str(e.get("message", e)) for e in body["errors"])
            raise DagsterUnavailable(self.url, f"GraphQL error: {short_error(messages)}", fix=None)
        if response.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise DagsterUnavailable(
                self.url,
                f"answered HTTP {response.status_code} without GraphQL data ({short_error(response.text, 200)!r}): "
                "is it a Dagster webserver?",
            )
        return body["data"]

    # -- code location ---------------------------------------------------------------------
    def _entry(self, query: str) -> dict[str, Any]:
        result = self.query(query, {"location": self.location})["workspaceLocationEntryOrError"]
        if result is None:
            raise DagsterUnavailable(
                self.url,
                f"its workspace has no code location '{self.location}'",
                fix=f"add it to workspace.yaml, or set {LOCATION_ENV_VAR} to the location's name",
            )
        if result["__typename"] == "PythonError":
            raise DagsterUnavailable(self.url, f"reading the workspace failed: {_python_error_message(result)}")
        return result

    def _loaded(self, entry: Mapping[str, Any]) -> Mapping[str, Any]:
        """The loaded location of a workspace entry, or the error it failed to load with."""
        location = entry.get("locationOrLoadError")
        if location is None:
            raise LocationLoadError(self.url, self.location, "no location after loading")
        if location["__typename"] == "PythonError":
            raise LocationLoadError(self.url, self.location, _python_error_message(location))
        return location

    def _wait_loaded(self, query: str, deadline: float) -> dict[str, Any]:
        """The location's entry once it is no longer LOADING (polled until ``deadline``)."""
        delay = 0.05
        while True:
            entry = self._entry(query)
            if entry["loadStatus"] != "LOADING":
                return entry
            if time.monotonic() >= deadline:
                raise DagsterUnavailable(
                    self.url, f"code location '{self.location}' still loading after {self.timeout:g} s", fix=None
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def reload(self) -> None:
        """Reload the code location (it rebuilds its definitions from the config) and wait until it has
        loaded; :class:`LocationLoadError` says why it did not (a config error, typically)."""
        deadline = time.monotonic() + self.timeout
        result = self.query(_RELOAD, {"location": self.location})["reloadRepositoryLocation"]
        kind = result["__typename"]
        if kind == "PythonError":
            raise DagsterUnavailable(self.url, f"reloading failed: {_python_error_message(result)}", fix=None)
        if kind == "RepositoryLocationNotFound":
            raise DagsterUnavailable(
                self.url,
                f"its workspace has no code location '{self.location}'",
                fix=f"add it to workspace.yaml, or set {LOCATION_ENV_VAR} to the location's name",
            )
        if kind != "WorkspaceLocationEntry":  # ReloadNotSupported, UnauthorizedError (a --read-only webserver)
            raise DagsterUnavailable(
                self.url,
                f"cannot reload code location '{self.location}': {kind}: {result.get('message', '')}",
                fix="run the webserver without --read-only, with the location loaded from workspace.yaml",
            )
        entry = result if result["loadStatus"] != "LOADING" else self._wait_loaded(_LOCATION, deadline)
        self._loaded(entry)

    def location_error(self) -> str | None:
        """Why the code location failed to load, or None when it is loaded (or loading)."""
        entry = self._entry(_LOCATION)
        if entry["loadStatus"] == "LOADING":
            return None
        try:
            self._loaded(entry)
        except LocationLoadError as exc:
            return exc.detail
        return None

    def asset_keys(self) -> set[tuple[str, ...]]:
        """Every asset key of the code location, as it is loaded now."""
        entry = self._wait_loaded(_LOCATION_ASSETS, time.monotonic() + self.timeout)
        location = self._loaded(entry)
        return {
            tuple(node["assetKey"]["path"])
            for repository in location["repositories"]
            for node in repository["assetNodes"]
        }

    def missing_asset_keys(self, asset_keys: Iterable[Sequence[str]]) -> list[list[str]]:
        """Those of ``asset_keys`` the code location does not have (cheaper than :meth:`asset_keys` on a large one)."""
        wanted = [list(key) for key in asset_keys]
        if not wanted:
            return []
        nodes = self.query(_ASSET_NODES, {"keys": [{"path": key} for key in wanted]})["assetNodes"]
        present = {
            tuple(node["assetKey"]["path"]) for node in nodes if node["repository"]["location"]["name"] == self.location
        }
        return [key for key in wanted if tuple(key) not in present]

    # -- runs ------------------------------------------------------------------------------
    def launch(
        self,
        asset_keys: Sequence[Sequence[str]],
        *,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Launch a run of the location's asset job materializing ``asset_keys`` (and their checks); its run id.

        A webserver with the queued run coordinator (``dagster dev``'s) queues the run for the daemon;
        with the default coordinator it starts at once. Anything but a launched run is :class:`LaunchFailed`.
        """
        if not asset_keys:
            raise ValueError("launch needs at least one asset key (an empty selection would be every asset)")
        params: dict[str, Any] = {
            "selector": {
                "repositoryLocationName": self.location,
                "repositoryName": self.repository,
                "jobName": ASSET_JOB,
                "assetSelection": [{"path": list(key)} for key in asset_keys],
            },
            "runConfigData": dict(run_config or {}),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
        }
        result = self.query(_LAUNCH, {"params": params})["launchRun"]
        kind = result["__typename"]
        if kind == "LaunchRunSuccess":
            return result["run"]["runId"]
        if kind == "PythonError":
            message = _python_error_message(result)
        elif kind == "RunConfigValidationInvalid":
            message = "; ".join(
                ("/".join(e["path"]) + ": " if e.get("path") else "") + e["message"] for e in result["errors"]
            )
        elif kind == "InvalidStepError":
            message = f"invalid step {result['invalidStepKey']}"
        elif kind == "InvalidOutputError":
            message = f"invalid output {result['invalidOutputName']} of step {result['stepKey']}"
        else:
            message = result.get("message") or "(no message)"
        raise LaunchFailed(kind, short_error(message))

    def run(self, run_id: str) -> RunInfo | None:
        """The run's status, times, tags, materializations and, if it failed, its first error; None if unknown."""
        result = self.query(_RUN, {"runId": run_id})["runOrError"]
        kind = result["__typename"]
        if kind == "RunNotFoundError":
            return None
        if kind == "PythonError":
            raise DagsterUnavailable(
                self.url, f"reading run {run_id} failed: {_python_error_message(result)}", fix=None
            )
        materializations = [
            Materialization(
                asset_key=list(m["assetKey"]["path"]) if m.get("assetKey") else [],
                metadata={e["label"]: _metadata_value(e) for e in m["metadataEntries"]},
            )
            for m in result["assetMaterializations"]
        ]
        status = result["status"]
        return RunInfo(
            run_id=result["runId"],
            status=status,
            start_time=result.get("startTime"),
            end_time=result.get("endTime"),
            tags={t["key"]: t["value"] for t in result["tags"]},
            materializations=materializations,
            error=self._first_failure(run_id) if status == "FAILURE" else None,
        )

    def _first_failure(self, run_id: str) -> str | None:
        """The first step failure of a run (else its run failure), as a short message."""
        run_failure: str | None = None
        cursor: str | None = None
        while True:
            result = self.query(_RUN_FAILURES, {"runId": run_id, "cursor": cursor})["logsForRun"]
            if result["__typename"] != "EventConnection":
                return run_failure
            for event in result["events"]:
                kind = event["__typename"]
                if kind not in ("ExecutionStepFailureEvent", "RunFailureEvent"):
                    continue
                error = event.get("error")
                text = _python_error_message(error) if error else short_error(event.get("message") or "")
                if kind == "ExecutionStepFailureEvent":
                    return f"{event['stepKey']}: {text}" if event.get("stepKey") else text
                run_failure = run_failure or text
            if not result["hasMore"] or result["cursor"] == cursor:
                return run_failure
            cursor = result["cursor"]


class _WarnOnce:
    """Warnings logged once per distinct message until things work again."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, message: str) -> None:
        if message not in self._seen:
            self._seen.add(message)
            log.warning(message)

    def clear(self) -> None:
        self._seen.clear()


class Reloader:
    """A thread reloading the code location when asked, coalescing requests: at most one reload in
    flight, and one more after it if requests came meanwhile. Every ``poll_seconds`` it also reads
    ``revision()`` (the catalog's, which another API process may have changed) and reloads when it
    grew past the last one reloaded. Failures are logged and retried at the next request or poll."""

    def __init__(
        self,
        link: DagsterLink,
        revision: Callable[[], int] | None = None,
        *,
        poll_seconds: float = 5.0,
    ):
        self.link = link
        self.revision = revision
        self.poll_seconds = poll_seconds
        self.last_reloaded_revision: int | None = None
        """The revision the location reflects (read just before the last successful reload)."""
        self.last_error: str | None = None
        """Why the last reload failed, None after one succeeded."""
        self._cond = threading.Condition()
        self._dirty = False
        self._busy = False
        self._started = 0
        self._finished = 0
        self._stopped = False
        self._warn = _WarnOnce()
        self._thread = threading.Thread(target=self._loop, name="prequel-dagster-reloader", daemon=True)
        self._thread.start()

    def request(self) -> int:
        """Ask for a reload and return at once: a ticket that :meth:`done` says the reload it asked for finished."""
        with self._cond:
            self._dirty = True
            self._cond.notify_all()
            return self._started + 1

    def done(self, ticket: int) -> bool:
        """Whether a reload started after the request that returned ``ticket`` has finished (well or not)."""
        with self._cond:
            return self._finished >= ticket

    @property
    def pending(self) -> bool:
        """A reload is in flight or asked for."""
        with self._cond:
            return self._dirty or self._busy

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no reload is in flight or asked for; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._dirty or self._busy) or self._stopped, timeout)

    def stop(self, timeout: float | None = None) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> "Reloader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _read_revision(self) -> int | None:
        if self.revision is None:
            return None
        try:
            return self.revision()
        except Exception as exc:
            self._warn(f"Reading the catalog revision failed: {type(exc).__name__}: {exc}")
            return None

    def _loop(self) -> None:
        next_poll = time.monotonic() if self.revision is not None else math.inf
        while True:
            with self._cond:
                while not self._stopped and not self._dirty and time.monotonic() < next_poll:
                    self._cond.wait(min(next_poll - time.monotonic(), 3600.0))
                if self._stopped:
                    return
                polling = not self._dirty
            if polling:
                next_poll = time.monotonic() + self.poll_seconds
                revision = self._read_revision()
                if revision is None or (
                    self.last_reloaded_revision is not None and revision <= self.last_reloaded_revision
                ):
                    continue
            with self._cond:
                self._dirty = False
                self._busy = True
                self._started += 1
            self._reload_once()

    def _reload_once(self) -> None:
        revision = self._read_revision()  # before reloading: a change made during the reload is reloaded later
        ok = False
        try:
            self.link.reload()
            ok = True
        except Exception as exc:  # never into the caller's thread: logged, retried at the next request or poll
            message = str(exc) if isinstance(exc, PrequelError) else f"{type(exc).__name__}: {exc}"
            self.last_error = message
            self._warn(f"Reloading Dagster code location failed: {message}")
        with self._cond:
            if ok:
                self.last_error = None
                self._warn.clear()
                if revision is not None:
                    self.last_reloaded_revision = max(revision, self.last_reloaded_revision or revision)
            self._busy = False
            self._finished += 1
            self._cond.notify_all()


@dataclass
class _Job:
    job_id: str
    asset_keys: list[Key]
    run_config: dict[str, Any] | None
    tags: dict[str, str] | None
    on_launched: OnLaunched
    on_failed: OnFailed
    deadline: float


class Launcher:
    """A thread launching runs once their assets exist in the code location: an asset the API has just
    added appears only after the location reloaded, which it asks the :class:`Reloader` for."""

    def __init__(
        self,
        link: DagsterLink,
        reloader: Reloader,
        *,
        wait_seconds: float = 120.0,
        check_seconds: float = 1.0,
        reload_retry_seconds: float = 10.0,
    ):
        self.link = link
        self.reloader = reloader
        self.wait_seconds = wait_seconds
        self.check_seconds = check_seconds
        self.reload_retry_seconds = reload_retry_seconds
        self._cond = threading.Condition()
        self._incoming: list[_Job] = []
        self._busy = False
        self._stopped = False
        self._ticket: int | None = None
        self._requested_at = -math.inf
        self._thread = threading.Thread(target=self._loop, name="prequel-dagster-launcher", daemon=True)
        self._thread.start()

    def submit(
        self,
        job_id: str,
        asset_keys: Sequence[Sequence[str]],
        *,
        run_config: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        on_launched: OnLaunched,
        on_failed: OnFailed,
    ) -> None:
        """Queue a launch and return at once; ``on_launched(job_id, run_id)`` or ``on_failed(job_id, message)``
        is called from the launcher's thread."""
        if not asset_keys:
            raise ValueError("a launch needs at least one asset key")
        job = _Job(
            job_id,
            [list(key) for key in asset_keys],
            dict(run_config) if run_config is not None else None,
            dict(tags) if tags is not None else None,
            on_launched,
            on_failed,
            time.monotonic() + self.wait_seconds,
        )
        with self._cond:
            self._incoming.append(job)
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every submitted job was launched or failed; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._incoming or self._busy) or self._stopped, timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread; jobs still waiting are dropped without a callback."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> "Launcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        waiting: list[_Job] = []
        while True:
            with self._cond:
                if not waiting:
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait_for(lambda: self._incoming or self._stopped)
                if self._stopped:
                    return
                waiting += self._incoming
                self._incoming.clear()
                self._busy = True
            try:
                waiting = self._round(waiting)
            except Exception:  # a bug, not Dagster: keep the thread alive for the next jobs
                log.exception("Launcher round failed")
            if waiting:
                with self._cond:
                    self._cond.wait_for(lambda: self._incoming or self._stopped, self.check_seconds)

    def _round(self, waiting: list[_Job]) -> list[_Job]:
        """Launch the jobs whose assets exist, fail those that waited too long; the others, still waiting."""
        wanted = list({tuple(key): key for job in waiting for key in job.asset_keys}.values())
        problem: str | None = None
        try:
            missing = {tuple(key) for key in self.link.missing_asset_keys(wanted)}
        except DagsterUnavailable as exc:
            missing, problem = {tuple(key) for key in wanted}, str(exc)
        still: list[_Job] = []
        now = time.monotonic()
        for job in waiting:
            absent = [key for key in job.asset_keys if tuple(key) in missing]
            if not absent:
                self._launch(job)
            elif now >= job.deadline:
                self._call(job.on_failed, job.job_id, self._never_appeared(absent, problem))
            else:
                still.append(job)
        if still and problem is None:
            self._ask_reload()
        return still

    def _ask_reload(self) -> None:
        """Ask for a reload unless one is under way or the last one asked for is recent."""
        if self.reloader.pending:
            return
        if self._ticket is not None and (
            not self.reloader.done(self._ticket) or time.monotonic() - self._requested_at < self.reload_retry_seconds
        ):
            return
        self._ticket = self.reloader.request()
        self._requested_at = time.monotonic()

    def _never_appeared(self, absent: list[Key], problem: str | None) -> str:
        names = ", ".join("/".join(key) for key in absent[:5]) + (
            f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        )
        message = (
            f"asset {names} did not appear in Dagster code location '{self.link.location}' "
            f"within {self.wait_seconds:g} s"
        )
        if problem is not None:
            return f"{message}: {problem}"
        try:
            load_error = self.link.location_error()
        except DagsterUnavailable as exc:
            load_error = str(exc)
        return f"{message}: {load_error}" if load_error else message

    def _launch(self, job: _Job) -> None:
        # Not retried: a launch that timed out may have created the run, and a second would run it twice.
        try:
            run_id = self.link.launch(job.asset_keys, run_config=job.run_config, tags=job.tags)
        except Exception as exc:
            message = str(exc) if isinstance(exc, PrequelError) else f"{type(exc).__name__}: {exc}"
            self._call(job.on_failed, job.job_id, message)
            return
        self._call(job.on_launched, job.job_id, run_id)

    @staticmethod
    def _call(callback: Callable[[str, str], None], job_id: str, value: str) -> None:
        try:
            callback(job_id, value)
        except Exception:
            log.exception("Callback for launch job %s failed", job_id)
