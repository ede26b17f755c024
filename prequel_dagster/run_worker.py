"""The process of one run, forked from :class:`~prequel_dagster.run_launcher.PreloadedRunLauncher`'s
server. Importing this module is the preload: everything a run imports is imported here once, in
the server, and the default code location's definitions are built here once, so a forked run
starts with them. No connection, thread or instance is opened before the fork."""

import importlib
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

try:  # a PostgreSQL-backed instance (the postgres extra): its storages, imported once too
    importlib.import_module("dagster_postgres")
except ImportError:
    pass

DEFINITIONS = "prequel_dagster.definitions"
REVISION_TAG = "prequel/catalog_revision"  # (as definitions.REVISION_TAG; not imported: it builds the definitions)
REVISION_ENV_VAR = "PREQUEL_CATALOG_REVISION"
try:  # the default code location, built once here; a run rebuilds it if its config changed since
    importlib.import_module(DEFINITIONS)
except Exception:  # a run imports it again and reports the error in its own logs
    pass


def run_worker(run_id: str, instance_ref: str, working_directory: str | None) -> None:
    """What ``dagster api execute_run`` does, without importing anything again. The default code
    location comes preloaded, and is loaded afresh when its config file changed since the server
    built it (or resolves to another file from the run's working directory), so a run executes the
    config a new process would read; any other code location is loaded here, per run."""
    if working_directory:
        os.chdir(working_directory)
    with capture_interrupts(), dg.DagsterInstance.from_ref(deserialize_value(instance_ref, InstanceRef)) as instance:
        run = instance.get_run_by_id(run_id)
        tagged = run.tags.get(REVISION_TAG, "") if run is not None else ""
        if tagged.isdigit():  # the catalog revision the run was requested from: build exactly that one
            os.environ[REVISION_ENV_VAR] = tagged
        definitions = sys.modules.get(DEFINITIONS)
        if definitions is not None and not definitions.is_current(int(tagged) if tagged.isdigit() else None):
            del sys.modules[DEFINITIONS]  # the config or the catalog changed: load it afresh
        code = _execute_run_command_body(run_id, instance, lambda _event: None, set_exit_code_on_failure=False)
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        sys.exit(code)
