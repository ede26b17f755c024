"""SSH for sources: a client for SFTP file sources, and tunnels that reach a database through a
bastion (``use_ssh_tunnel``). Keys are revealed only here, at connect time."""

import contextlib
import io
import select
import socket
import threading
from collections.abc import Iterator
from typing import Any

from ..config.errors import SourceError

_KEY_TYPES = ("Ed25519Key", "ECDSAKey", "RSAKey")


def load_private_key(pem: str, passphrase: str | None = None) -> Any:
    """A paramiko key from its PEM/OpenSSH text, whatever its type."""
    import paramiko

    for name in _KEY_TYPES:
        try:
            return getattr(paramiko, name).from_private_key(io.StringIO(pem), password=passphrase)
        except paramiko.SSHException:
            continue
    raise SourceError("the SSH private key is not a readable Ed25519, ECDSA or RSA key (or its passphrase is wrong)")


def connect(
    where: str,
    *,
    host: str,
    port: int,
    username: str,
    private_key: str | None = None,
    passphrase: str | None = None,
    password: str | None = None,
    timeout: float = 30,
) -> Any:
    """A connected ``paramiko.SSHClient``; failures become a SourceError naming ``where`` and the fix.

    Host keys are accepted on first use (the config has no known-hosts field); the connection is
    still encrypted and authenticated by the user's key.
    """
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect(
            host,
            port=port,
            username=username,
            pkey=load_private_key(private_key, passphrase) if private_key else None,
            password=password,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except paramiko.AuthenticationException:
        raise SourceError(
            f"{where}: SSH login as '{username}' to {host}:{port} was refused — add the public key "
            "to the user's authorized_keys (or check the password)"
        ) from None
    except (OSError, paramiko.SSHException) as exc:
        raise SourceError(
            f"{where}: cannot reach the SSH server {host}:{port} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no answer'}) — check the host, port and "
            "firewall"
        ) from None
    return client


@contextlib.contextmanager
def tunnel(client: Any, remote_host: str, remote_port: int) -> Iterator[int]:
    """Forward a local loopback port to ``remote_host:remote_port`` through ``client``; yields the port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    transport = client.get_transport()
    stop = threading.Event()

    def pump(local: socket.socket) -> None:
        try:
            channel = transport.open_channel("direct-tcpip", (remote_host, remote_port), local.getpeername())
        except Exception:  # the database end refused: the client sees a closed connection
            local.close()
            return
        with contextlib.closing(local), contextlib.closing(channel):
            while not stop.is_set():
                readable, _, _ = select.select([local, channel], [], [], 0.5)
                if local in readable:
                    data = local.recv(65536)
                    if not data:
                        break
                    channel.sendall(data)
                if channel in readable:
                    data = channel.recv(65536)
                    if not data:
                        break
                    local.sendall(data)

    def accept() -> None:
        while not stop.is_set():
            try:
                local, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=pump, args=(local,), daemon=True, name="prequel-ssh-tunnel").start()

    acceptor = threading.Thread(target=accept, daemon=True, name="prequel-ssh-accept")
    acceptor.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        acceptor.join(timeout=2)
