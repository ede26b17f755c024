"""Key pairs the API makes for a source: the private key is kept (sealed), only the public key is shown."""

import base64
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

COMMENT = "prequel-dagster"


def ssh_key_pair() -> tuple[str, str]:
    """An Ed25519 key pair for SSH (tunnels, SFTP): the private key in OpenSSH format (what paramiko's
    ``Ed25519Key`` reads), the public key as an ``authorized_keys`` line."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} {COMMENT}"


def snowflake_key_pair() -> tuple[str, str]:
    """An RSA 2048 key pair for Snowflake key-pair auth: the private key as unencrypted PKCS#8 PEM, the
    public key as ``ALTER USER ... SET RSA_PUBLIC_KEY='...'`` takes it (the base64 DER, no PEM lines)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(der).decode()


def with_generated_keys(vendor_block_name: str, block: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a source's vendor block (``block`` is the ``postgres`` object of the body) with a key pair
    made where one is asked for and the private key missing: an SSH tunnel (``use_ssh_tunnel``),
    Snowflake's and SFTP's ``public_key_auth`` (their default auth method)."""
    out = _copy(block)
    tunnel = out.get("ssh_tunnel")
    if out.get("use_ssh_tunnel") is True and isinstance(tunnel, dict) and _missing(tunnel.get("ssh_private_key")):
        tunnel["ssh_private_key"], tunnel["ssh_public_key"] = ssh_key_pair()
    make = {"snowflake": snowflake_key_pair, "sftp": ssh_key_pair}.get(vendor_block_name)
    if make is not None and out.get("auth_method", "public_key_auth") == "public_key_auth":
        auth = out.get("public_key_auth")
        if auth is None:
            auth = out["public_key_auth"] = {}
        if isinstance(auth, dict) and _missing(auth.get("private_key")):
            auth.pop("private_key_passphrase", None)  # the new key is not encrypted: a passphrase would fail it
            auth["private_key"], auth["public_key"] = make()
    return out


def _missing(value: Any) -> bool:
    return value is None or value == ""


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(item) for item in value]
    return value
