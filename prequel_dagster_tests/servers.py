"""Real servers for the tests, started by the test session on loopback (recipes: shared/reference/test-servers.md).

A missing server skips locally but FAILS under CI, so CI can never go green by skipping.
"""

import contextlib
import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile

import pytest


def need(what: str, hint: str) -> None:
    (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{what} not available: {hint}")


def free_port() -> int:
    for _ in range(500):
        port = random.randint(20000, 45000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _pg_bin() -> str | None:
    candidates = [os.environ.get("PG_BIN")]
    if shutil.which("pg_ctl"):
        candidates.append(os.path.dirname(shutil.which("pg_ctl")))  # type: ignore[arg-type]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    return next((c for c in candidates if c and os.path.exists(os.path.join(c, "pg_ctl"))), None)


@contextlib.contextmanager
def postgres_server():
    """A throwaway PostgreSQL cluster with scram-sha-256 password auth on 127.0.0.1."""
    if os.environ.get("TEST_PG_DSN"):
        raise RuntimeError("TEST_PG_DSN is not supported by these tests; they create their own databases")
    bindir = _pg_bin()
    if not bindir:
        need("PostgreSQL", "apt-get install -y postgresql (or set PG_BIN)")
    password = "pg-admin-" + os.urandom(4).hex()
    run_as: dict = {}
    d = tempfile.mkdtemp(prefix="prequel-pg-")
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = pwd.getpwnam("nobody")
        run_as = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        os.chown(d, pw.pw_uid, pw.pw_gid)
    with open(f"{d}/pwfile", "w") as f:
        f.write(password + "\n")
    if run_as:
        os.chown(f"{d}/pwfile", run_as["user"], run_as["group"])
    env = dict(os.environ, LC_ALL="C.UTF-8", LANG="C.UTF-8")
    env.pop("PGDATA", None)

    def run(*args: str) -> None:
        subprocess.run([os.path.join(bindir, args[0]), *args[1:]], check=True, env=env, cwd=d,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **run_as)

    run("initdb", "-D", f"{d}/data", "-U", "postgres", "--pwfile", f"{d}/pwfile",
        "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
    port = free_port()
    try:
        run("pg_ctl", "-D", f"{d}/data", "-l", f"{d}/log", "-w", "-t", "60", "-o",
            f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off", "start")
        yield {"host": "127.0.0.1", "port": port, "user": "postgres", "password": password,
               "dsn": f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"}
    finally:
        with contextlib.suppress(Exception):
            run("pg_ctl", "-D", f"{d}/data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(d, ignore_errors=True)
