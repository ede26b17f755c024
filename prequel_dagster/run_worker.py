"""The process of one run, forked from :class:`~prequel_dagster.run_launcher.PreloadedRunLauncher`'s
server. Importing this module is the preload: everything a run imports is imported here once, in
the server, so a forked run starts with it (module names, not objects: no connection, thread or
instance crosses the fork)."""

import os
import sys

# What a run imports besides the code location: Dagster's run worker and its instance storages,
# the run's HTTP transport and schema validation. Imported for their side effect.
import dagster as dg
import dagster._core.executor.in_process
import dagster._core.instance.factory
import dagster._core.storage.local_compute_log_manager
import dagster._core.storage.root
import dagster._core.storage.runs.sqlite.sqlite_run_storage
import dagster._core.storage.schedules.sqlite.sqlite_schedule_storage
import dagster._core.storage.sqlite_storage
import httpcore  # noqa: F401
import jsonschema  # noqa: F401
from dagster._cli.api import _execute_run_command_body
from dagster._core.instance.ref import InstanceRef
from dagster._utils.interrupts import capture_interrupts
from dagster_shared.serdes import deserialize_value

import prequel_dagster.builder  # noqa: F401


def run_worker(run_id: str, instance_ref: str, working_directory: str | None) -> None:
    """What ``dagster api execute_run`` does, without importing anything again. The code location
    itself is loaded here, per run, so the run executes the definitions the code server serves."""
    if working_directory:
        os.chdir(working_directory)
    with capture_interrupts(), dg.DagsterInstance.from_ref(deserialize_value(instance_ref, InstanceRef)) as instance:
        code = _execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=False)
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        sys.exit(code)
