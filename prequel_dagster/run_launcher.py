"""A run launcher whose run workers start warm: each run is its own process, forked from a server
that has already imported Dagster and this package.

Dagster's default launcher starts every run as a new Python process that imports Dagster, pyarrow
and the code location before doing anything: about 2 s of CPU per run, which at one run per
provider and hour is most of what a machine does. Forking from a preloaded server (the standard
library's ``multiprocessing`` forkserver) keeps one process per run — a crash or a memory leak
stays in its run, and ``terminate`` interrupts only that run — while a run starts in milliseconds.
The server also builds the default code location (``prequel_dagster.definitions``) once; a run
builds it afresh when its config file changed since, and takes the launcher's environment as it is
at launch, so a run executes what a new process would (see :mod:`prequel_dagster.run_worker`).

Configure it in ``dagster.yaml``::

    run_launcher:
      module: prequel_dagster.run_launcher
      class: PreloadedRunLauncher
      config: {preload_modules: [prequel_dagster.run_worker]}   # the default
"""

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.origin import JobPythonOrigin
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster_shared.serdes import deserialize_value, serialize_value

WORKER_TAG = "prequel/run_worker"
DEFAULT_PRELOAD = ("prequel_dagster.run_worker",)


class PreloadedRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in its own process, forked from a server that preloaded ``preload_modules``.

    A code location served by another Python interpreter than the launcher's cannot be forked from
    it: its runs start as ``dagster api execute_run`` processes of that interpreter, as Dagster's
    default launcher would start them.
    """

    def __init__(
        self, preload_modules: Sequence[str] = DEFAULT_PRELOAD, inst_data: ConfigurableClassData | None = None
    ):
        self._inst_data = inst_data
        self._preload = list(preload_modules)
        self._context: Any = None
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, dg.Field]:
        return {
            "preload_modules": dg.Field(
                [str],
                is_required=False,
                default_value=list(DEFAULT_PRELOAD),
                description="Modules the fork server imports once, so no run imports them again.",
            )
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> "PreloadedRunLauncher":
        return cls(inst_data=inst_data, **config_value)

    def _forkserver(self) -> Any:
        """The standard library's fork server: started by the first launch, it imports the preload
        modules once and forks a process per run from there on."""
        if self._context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(self._preload)  # read when the server first starts
            self._context = context
        return self._context

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None:
            raise dg.DagsterInvariantViolationError(f"run {run.run_id} has no code origin: it cannot be launched")
        instance_ref = serialize_value(self._instance.get_ref())
        working_directory = getattr(origin.repository_origin.code_pointer, "working_directory", None)
        if _same_interpreter(origin):
            worker = self._forkserver().Process(
                target=_run_in_fork,
                # the launcher's environment as it is now, not as it was when the server started
                args=(run.run_id, instance_ref, working_directory, dict(os.environ)),
                name=f"dagster-run-{run.run_id[:8]}",
            )
            worker.start()
            pid, how = worker.pid, "forked from the preloaded server"
        else:
            pid, how = _start_interpreter(origin, run.run_id, instance_ref, working_directory), "started"
        self._instance.add_run_tags(run.run_id, {WORKER_TAG: f"{socket.gethostname()}:{pid}"})
        self._instance.report_engine_event(f"Run worker {how} (pid {pid}).", run, cls=self.__class__)

    def terminate(self, run_id: str) -> bool:
        """Interrupt the run's worker, as Ctrl-C would: Dagster marks the run canceled."""
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        host, _, pid = run.tags.get(WORKER_TAG, "").rpartition(":")
        if not pid.isdigit() or host != socket.gethostname():
            self._instance.report_engine_event(
                f"Cannot terminate: the run worker ({run.tags.get(WORKER_TAG, 'not started')}) is not on this machine.",
                run,
                cls=self.__class__,
            )
            return False
        self._instance.report_run_canceling(run)
        try:
            os.kill(int(pid), signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def join(self, timeout: int = 30) -> None:
        for child in multiprocessing.active_children():
            child.join(timeout)


def _same_interpreter(origin: JobPythonOrigin) -> bool:
    executable = origin.repository_origin.executable_path
    return not executable or os.path.realpath(executable) == os.path.realpath(sys.executable)


def _start_interpreter(origin: JobPythonOrigin, run_id: str, instance_ref: str, working_directory: str | None) -> int:
    from dagster._grpc.types import ExecuteRunArgs

    args = ExecuteRunArgs(job_origin=origin, run_id=run_id, instance_ref=deserialize_value(instance_ref, InstanceRef))
    command = [origin.repository_origin.executable_path, "-m", "dagster", "api", "execute_run", serialize_value(args)]
    return subprocess.Popen(command, cwd=working_directory or None).pid


def _run_in_fork(run_id: str, instance_ref: str, working_directory: str | None, environment: dict[str, str]) -> None:
    """The forked process's entry point (the server has preloaded ``run_worker``; the launcher never imports it)."""
    os.environ.clear()
    os.environ.update(environment)
    try:
        from .run_worker import run_worker
    except Exception as exc:  # the run would otherwise sit in STARTING with no word of why
        with dg.DagsterInstance.from_ref(deserialize_value(instance_ref, InstanceRef)) as instance:
            run = instance.get_run_by_id(run_id)
            if run is not None:
                instance.report_run_failed(
                    run,
                    f"The run worker could not import prequel_dagster.run_worker: {exc!r}; check the package install.",
                )
        raise
    run_worker(run_id, instance_ref, working_directory)
