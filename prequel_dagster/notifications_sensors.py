"""The sensors that send failure notifications (``notifications:`` in ``prequel.yaml``, ``/webhooks`` in the API).

- ``prequel_notify_run_failures`` (a run-failure sensor): each dataset asset of the failed run that
  failed to materialize is an ``extract.failed``, each stream asset a ``load.failed``, with the why its
  op gave for that asset (an asset whose step never ran because an upstream step failed is not
  notified). A run that failed around its steps (its process died, its definitions did not load)
  notifies each planned asset it did not materialize, with the run's error, except a stream whose
  dataset is among them. The failed run's checks are handled as below.
- ``prequel_notify_run_checks`` (a run-success sensor): the asset checks a run evaluated.
  ``dead_letters_empty`` failing with more dead-letter records than at its previous evaluation is a
  ``dead_letters.grew``; any other check that fails after passing (or on its first evaluation) is a
  ``check.failed``, not repeated while it keeps failing.
- ``prequel_notify_freshness``: Dagster's freshness daemon records when an asset's freshness policy
  changes state (the translator's policy: fail after 2x the dataset's ``frequency_minutes``); a change
  to FAIL is a ``freshness.missed`` of that dataset or stream. It starts from the newest such record
  when it first runs (history is not notified); with the daemon off (``freshness: {enabled: false}``
  in dagster.yaml) nothing triggers it.

Each event goes to every enabled notification that lists its type, scoped to its provider or to every
provider. ``PREQUEL_DAGSTER_URL`` (the Dagster UI's address) adds a link to the run or asset.
"""

import datetime as dt
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.events import DagsterEventType
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from .config.models import Notification, PrequelConfig
from .notify import events as ev
from .notify.events import NotificationEvent
from .notify.sender import SendResult, notify
from .translator import DagsterPrequelTranslator, dataset_props, stream_props

DAGSTER_URL_ENV_VAR = "PREQUEL_DAGSTER_URL"  # (the same variable the API's Dagster link reads)
DEAD_LETTER_CHECK = "dead_letters_empty"


@dataclass(frozen=True)
class Target:
    """What an asset key is in the config: a provider's dataset (extract) or stream (load)."""

    provider_id: str
    dataset_id: str
    stream_id: str | None = None
    fail_minutes: float | None = None  # the freshness policy's fail window

    @property
    def is_stream(self) -> bool:
        return self.stream_id is not None

    def fields(self) -> dict[str, str | None]:
        return {"dataset_id": self.dataset_id, "stream_id": self.stream_id}


def build_notification_sensors(
    config: PrequelConfig, translator: DagsterPrequelTranslator, **send_options: object
) -> list[dg.SensorDefinition]:
    """The three sensors, when at least one notification is enabled (none otherwise). ``send_options``
    go to :func:`prequel_dagster.notify.sender.send` (tests: a transport, a retry policy)."""
    notifications = [n for n in config.notifications if n.is_enabled]
    if not notifications:
        return []
    targets = _LazyTargets(config, translator)
    notifier = _Notifier(config, notifications, send_options)
    return [
        _run_failure_sensor(targets, notifier),
        _run_checks_sensor(targets, notifier),
        _freshness_sensor(targets, notifier),
    ]


class _LazyTargets(dict[dg.AssetKey, Target]):
    """The config's asset keys and what they are, found on first use: not in every process that loads
    the definitions (run workers, the code server), only in the one that evaluates the sensors."""

    def __init__(self, config: PrequelConfig, translator: DagsterPrequelTranslator):
        super().__init__()
        self._source: tuple[PrequelConfig, DagsterPrequelTranslator] | None = (config, translator)
        self._lock = threading.Lock()

    def loaded(self) -> "_LazyTargets":
        with self._lock:
            if self._source is not None:
                self.update(_targets(*self._source))
                self._source = None
        return self


def _targets(config: PrequelConfig, translator: DagsterPrequelTranslator) -> dict[dg.AssetKey, Target]:
    out: dict[dg.AssetKey, Target] = {}
    for dataset in config.datasets:
        props = dataset_props(config, dataset)
        out[translator.get_dataset_asset_key(props)] = Target(
            props.provider.id, dataset.id, None, _fail_minutes(translator.get_freshness_policy(props))
        )
    for stream in config.streams:
        sprops = stream_props(config, stream)
        out[translator.get_stream_asset_key(sprops)] = Target(
            sprops.dataset.provider.id,
            stream.dataset_id,
            stream.id,
            _fail_minutes(translator.get_freshness_policy(sprops.dataset)),
        )
    return out


def _fail_minutes(policy: object) -> float | None:
    window = getattr(policy, "fail_window", None)
    return window.to_timedelta().total_seconds() / 60 if window is not None else None


class _Notifier:
    """The enabled notifications, and sending to them from a sensor."""

    def __init__(self, config: PrequelConfig, notifications: Sequence[Notification], options: dict[str, object]):
        self.config = config
        self.notifications = notifications
        self.options = options
        self._masked = False

    def send(self, events: Sequence[NotificationEvent]) -> list[SendResult]:
        if not events:
            return []
        if not self._masked:  # this process's redact learns the config's secrets (runs wrote the errors)
            ev.mask_config_secrets(self.config)
            self._masked = True
        return notify(self.notifications, events, **self.options)  # type: ignore[arg-type]


def _link(path: str) -> str | None:
    base = os.environ.get(DAGSTER_URL_ENV_VAR, "").strip().rstrip("/")
    return f"{base}/{path}" if base.startswith(("http://", "https://")) else None


def _summary(events: Sequence[NotificationEvent], results: Sequence[SendResult]) -> dg.SkipReason:
    if not events:
        return dg.SkipReason("nothing to notify")
    sent = sum(r.delivered for r in results)
    failed = [str(r) for r in results if not r.delivered]
    text = f"{len(events)} event(s), {sent} of {len(results)} notification(s) delivered"
    return dg.SkipReason(text + ("; " + "; ".join(failed[:5]) if failed else ""))


# ---------------------------------------------------------------------------- runs


def run_failure_events(
    instance: dg.DagsterInstance, run: dg.DagsterRun, targets: dict[dg.AssetKey, Target], run_error: str | None
) -> list[NotificationEvent]:
    """``extract.failed`` / ``load.failed`` for the assets of a failed run (see the module's docstring).

    A failed step's op names each of its assets that failed (``<asset key>: <why>`` lines, see
    ``assets._each_selected``): those are notified with their why; a step whose failure names none (an
    unexpected error) notifies each asset it had to materialize and did not. Assets of steps that never
    ran because an upstream step failed are not notified. A run with no failed step (its process died)
    notifies what it did not materialize, but not a stream whose dataset is among them.
    """
    records = instance.get_records_for_run(
        run.run_id,
        of_type={
            DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            DagsterEventType.ASSET_MATERIALIZATION,
            DagsterEventType.STEP_FAILURE,
        },
    ).records
    planned: dict[dg.AssetKey, str | None] = {}  # asset -> its step
    materialized: set[dg.AssetKey] = set()
    step_failures: dict[str, tuple[float, str]] = {}
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            user = data.user_failure_data
            why = (user.description if user is not None and user.description else None) or (
                data.error.message if data.error is not None else ""
            )
            step_failures.setdefault(event.step_key or "", (entry.timestamp, why))
        elif event.asset_key is not None and event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialized.add(event.asset_key)
        elif event.asset_key is not None:
            planned.setdefault(event.asset_key, event.step_key)
    if not planned:
        planned = dict.fromkeys(run.asset_selection or ())
    failed: dict[dg.AssetKey, tuple[float, str]] = {}
    for step, (at, why) in step_failures.items():
        mine = [k for k, s in planned.items() if s == step and k not in materialized and k in targets]
        named = {k: _message_for(k, why, planned) for k in mine}
        for key, message in named.items():
            if message is not None or not any(named.values()):
                failed[key] = (at, message or why)
    if not step_failures:  # the run failed around its steps
        at = dt.datetime.now(dt.UTC).timestamp()
        left = [k for k in planned if k not in materialized and k in targets]
        datasets = {(targets[k].provider_id, targets[k].dataset_id) for k in left if not targets[k].is_stream}
        for key in left:
            target = targets[key]
            if not (target.is_stream and (target.provider_id, target.dataset_id) in datasets):
                failed[key] = (at, run_error or "the run failed")
    out = []
    for key, (at, message) in sorted(failed.items(), key=lambda item: tuple(item[0].path)):
        target = targets[key]
        out.append(
            ev.event(
                ev.LOAD_FAILED if target.is_stream else ev.EXTRACT_FAILED,
                target.provider_id,
                message or "the run failed",
                key=f"{run.run_id}/{key.to_user_string()}",
                occurred_at=at,
                run_id=run.run_id,
                link=_link(f"runs/{run.run_id}"),
                **target.fields(),
            )
        )
    return out


def _message_for(key: dg.AssetKey, description: str, keys: Iterable[dg.AssetKey]) -> str | None:
    """What a step's failure says of ``key`` (its ``<asset key>: <why>`` line, and the lines after it up
    to the next asset's or check's), without the key; None if it does not name it."""
    prefix = key.to_user_string() + ": "
    others = tuple(k.to_user_string() + s for k in keys if k != key for s in (": ", ":"))
    lines = description.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(prefix):
            rest = [line[len(prefix) :]]
            for more in lines[i + 1 :]:  # a why that runs over several lines
                if more.startswith(others) or more.startswith(key.to_user_string() + ":"):
                    break
                rest.append(more)
            return "\n".join(rest).strip()
    return None


def run_check_events(
    instance: dg.DagsterInstance, run: dg.DagsterRun, targets: dict[dg.AssetKey, Target]
) -> list[NotificationEvent]:
    """``dead_letters.grew`` and ``check.failed`` for the checks a run evaluated (see the module's docstring)."""
    records = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION).records
    out = []
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        evaluation = event.event_specific_data
        target = targets.get(evaluation.asset_key)  # type: ignore[union-attr]
        if target is None or evaluation.passed:  # type: ignore[union-attr]
            continue
        check_key = dg.AssetCheckKey(evaluation.asset_key, evaluation.check_name)  # type: ignore[union-attr]
        previous = _previous_evaluation(instance, check_key, run.run_id)
        metadata = {k: v.value for k, v in evaluation.metadata.items()}  # type: ignore[union-attr]
        common = {
            "key": f"{run.run_id}/{check_key.to_user_string()}",
            "occurred_at": record.event_log_entry.timestamp,
            "run_id": run.run_id,
            "check_name": check_key.name,
            "link": _link(f"runs/{run.run_id}"),
            **target.fields(),
        }
        numbers = {k: v for k, v in metadata.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        if check_key.name == DEAD_LETTER_CHECK:
            count = int(metadata.get("dead_letter_records", 0) or 0)  # type: ignore[arg-type]
            before = 0
            if previous is not None and not previous.passed:
                before = int({k: v.value for k, v in previous.metadata.items()}.get("dead_letter_records", 0) or 0)
            if count > before:
                out.append(
                    ev.event(
                        ev.DEAD_LETTERS_GREW,
                        target.provider_id,
                        f"{count} records of stream '{target.stream_id}' are in the dead letter (was {before}); "
                        "see why with prequel-dagster or the Dagster UI, and redeliver them once fixed",
                        details={"dead_letter_records": count, "previous_dead_letter_records": before},
                        **common,  # type: ignore[arg-type]
                    )
                )
            continue
        if previous is not None and not previous.passed:
            continue  # still failing: notified when it started
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(numbers.items()))
        out.append(
            ev.event(
                ev.CHECK_FAILED,
                target.provider_id,
                f"check {check_key.name} failed on {'stream' if target.is_stream else 'dataset'} "
                f"'{target.stream_id or target.dataset_id}'" + (f" ({counts})" if counts else ""),
                details=numbers,
                **common,  # type: ignore[arg-type]
            )
        )
    return out


def _previous_evaluation(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, run_id: str) -> Any:
    """The check's completed evaluation before the one of ``run_id`` (None: the first one)."""
    done = (AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED)
    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=25)
    seen = False
    for execution in history:  # newest first
        if execution.run_id == run_id:
            seen = True
            continue
        if seen and execution.status in done and execution.event is not None:
            found = execution.event.dagster_event
            return found.event_specific_data if found is not None else None
    return None


def _run_failure_sensor(targets: _LazyTargets, notifier: _Notifier) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="prequel_notify_run_failures",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends extract.failed and load.failed (and the failed run's check events) to the "
        "notifications that subscribe to them.",
    )
    def _notify_run_failures(context: dg.RunFailureSensorContext) -> dg.SkipReason:
        run = context.dagster_run
        error = _run_error(context.failure_event)
        found = targets.loaded()
        events = run_failure_events(context.instance, run, found, error)
        events += run_check_events(context.instance, run, found)
        return _summary(events, notifier.send(events))

    return _notify_run_failures


def _run_error(failure_event: dg.DagsterEvent | None) -> str | None:
    """Why the run failed: its error's message (the first line of a traceback), or the event's message."""
    if failure_event is None:
        return None
    error = getattr(failure_event.event_specific_data, "error", None)
    message = getattr(error, "message", None)
    return str(message).strip() if message else failure_event.message


def _run_checks_sensor(targets: _LazyTargets, notifier: _Notifier) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.SUCCESS,
        name="prequel_notify_run_checks",
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends dead_letters.grew and check.failed for the checks each successful run evaluated.",
    )
    def _notify_run_checks(context: dg.RunStatusSensorContext) -> dg.SkipReason:
        events = run_check_events(context.instance, context.dagster_run, targets.loaded())
        return _summary(events, notifier.send(events))

    return _notify_run_checks


# ---------------------------------------------------------------------------- freshness

FRESHNESS_BATCH = 200


def freshness_events(
    instance: dg.DagsterInstance, targets: dict[dg.AssetKey, Target], after: int
) -> tuple[list[NotificationEvent], int]:
    """``freshness.missed`` for the freshness changes to FAIL recorded after storage id ``after``, and the
    storage id to continue from."""
    records = instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=DagsterEventType.FRESHNESS_STATE_CHANGE, after_cursor=after),
        limit=FRESHNESS_BATCH,
        ascending=True,
    )
    out = []
    for record in records:
        after = max(after, record.storage_id)
        event = record.event_log_entry.dagster_event
        change = event.event_specific_data if event is not None else None
        if change is None or change.new_state != FreshnessState.FAIL or change.previous_state == FreshnessState.FAIL:  # type: ignore[union-attr]
            continue
        target = targets.get(change.key)  # type: ignore[union-attr]
        if target is None:
            continue
        what = (
            f"stream '{target.stream_id}' has not loaded"
            if target.is_stream
            else (f"dataset '{target.dataset_id}' has not been extracted")
        )
        window = f" within {target.fail_minutes:g} minutes" if target.fail_minutes else ""
        out.append(
            ev.event(
                ev.FRESHNESS_MISSED,
                target.provider_id,
                f"{what}{window} (its freshness policy's fail window)",
                key=f"{change.key.to_user_string()}/{change.state_change_timestamp}",  # type: ignore[union-attr]
                occurred_at=change.state_change_timestamp,  # type: ignore[union-attr]
                link=_link("assets/" + "/".join(change.key.path)),  # type: ignore[union-attr]
                details={"fail_window_minutes": target.fail_minutes} if target.fail_minutes else {},
                **target.fields(),
            )
        )
    return out, after


def _newest_freshness_record(instance: dg.DagsterInstance) -> int:
    records = instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=DagsterEventType.FRESHNESS_STATE_CHANGE), limit=1, ascending=False
    )
    return records[0].storage_id if records else 0


def _freshness_sensor(targets: _LazyTargets, notifier: _Notifier) -> dg.SensorDefinition:
    @dg.sensor(
        name="prequel_notify_freshness",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sends freshness.missed when Dagster's freshness daemon finds a dataset or stream past its "
        "freshness policy's fail window.",
    )
    def _notify_freshness(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if not context.cursor:  # first run: from now on
            return dg.SensorResult(
                cursor=str(_newest_freshness_record(context.instance)), skip_reason="started: watching from now"
            )
        events, after = freshness_events(context.instance, targets.loaded(), int(context.cursor))
        skip = _summary(events, notifier.send(events))
        return dg.SensorResult(cursor=str(after), skip_reason=skip.skip_message)

    return _notify_freshness
