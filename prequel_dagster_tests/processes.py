"""Dagster's own processes (webserver, daemon, code server) started and stopped by the end-to-end tests."""

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def start_process(name: str, args: list[str], env: dict, cwd: Path, logs: Path | None = None) -> subprocess.Popen:
    """``args`` in a session of its own, its output in ``<logs or cwd>/<name>.log``."""
    with ((logs or cwd) / f"{name}.log").open("wb") as log:  # the child keeps its own copy
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its children (the code server's, the daemon's run workers) stop with it
            # Dagster maps SIGTERM to SIGINT's handler: make sure that is Python's, not an inherited "ignore"
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM to its whole session, SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def log_tails(logs: Path, chars: int = 2500) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in sorted(logs.glob("*.log")))


def wait_for(
    what: str,
    ready: Callable[[], Any],
    timeout: float,
    procs: Mapping[str, subprocess.Popen],
    logs: Path,
    *,
    tolerate: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll ``ready`` until it returns something truthy; fail with the processes' logs as soon as one
    exits, or after ``timeout`` s. Exceptions in ``tolerate`` count as not ready yet."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*tolerate):
            value = ready()
            if value:
                return value
        for name, proc in procs.items():
            assert proc.poll() is None, f"{name} exited ({proc.returncode}):\n{log_tails(logs)}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s\n{log_tails(logs)}"
        time.sleep(0.5)
