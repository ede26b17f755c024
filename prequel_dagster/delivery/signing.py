"""Request signing, as Prequel: RSA PKCS#1 v1.5 over SHA-256 of ``timestamp + "." + raw body``, hex.

``sign_request`` produces the three headers; ``verify_request`` is the small function receivers
import (``from prequel_dagster.delivery.signing import verify_request``).

The signature covers the timestamp and the body only, not the method, URL or other headers, so a
captured request can be replayed as it is. ``verify_request`` rejects timestamps more than
``tolerance_seconds`` (5 minutes) from now; within that window, remember the ``batch_id`` of each
stored batch and answer a repeat 2xx without applying it again (the reference receiver does).
"""

import datetime as dt
import hashlib
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TIMESTAMP_HEADER = "X-Prequel-Webhook-Timestamp"
SIGNATURE_HEADER = "X-Prequel-Webhook-Signature"
DIGEST_HEADER = "X-Prequel-Webhook-Digest"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """A request whose signature, digest or timestamp does not check out."""


def generate_key_pair(bits: int = 3072) -> tuple[bytes, bytes]:
    """(private key PEM, public key PEM) for ``prequel-dagster keys generate``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def load_private_key(pem: str | bytes) -> rsa.RSAPrivateKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data.replace(b"\\n", b"\n"), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError("the signing key is not a PEM-encoded RSA private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the signing key must be an RSA private key")
    return key


def sign_request(key: rsa.RSAPrivateKey, body: bytes, *, now: dt.datetime | None = None) -> dict[str, str]:
    timestamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    signature = key.sign(timestamp.encode() + b"." + body, padding.PKCS1v15(), hashes.SHA256())
    return {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature.hex(),
        DIGEST_HEADER: hashlib.sha256(body).hexdigest(),
    }


def verify_request(
    public_key_pem: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: dt.datetime | None = None,
) -> None:
    """Check a received request's signature, digest and timestamp; raise :class:`SignatureError` if wrong.

    ``body`` must be the raw request body as received, before any parsing or decompression. Any
    malformed header raises :class:`SignatureError`; a public key that is not RSA PEM, ``ValueError``.
    The signature does not cover the URL or other headers, and a replay within ``tolerance_seconds``
    passes: de-duplicate by ``batch_id`` (see the module docstring).
    """
    lower = {k.lower(): v for k, v in headers.items()}
    timestamp = lower.get(TIMESTAMP_HEADER.lower())
    signature = lower.get(SIGNATURE_HEADER.lower())
    if not (timestamp and signature and isinstance(timestamp, str) and isinstance(signature, str)):
        raise SignatureError(f"missing signature headers: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
    digest = lower.get(DIGEST_HEADER.lower())
    if digest is not None and digest != hashlib.sha256(body).hexdigest():
        raise SignatureError("digest does not match the body")
    try:
        sent = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise SignatureError("timestamp is not RFC 3339 (e.g. 2026-01-01T00:00:00Z)") from None
    if sent.tzinfo is None:
        raise SignatureError("timestamp has no timezone; end it with Z or an offset such as +00:00")
    try:
        age = abs(((now or dt.datetime.now(dt.UTC)) - sent).total_seconds())
    except OverflowError:
        raise SignatureError("timestamp is out of range") from None
    if age > tolerance_seconds:
        raise SignatureError(f"timestamp is {age:.0f}s away from now (tolerance {tolerance_seconds}s)")
    data = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the public key must be an RSA public key (PEM), the pair of the signing key")
    try:
        key.verify(bytes.fromhex(signature), timestamp.encode() + b"." + body, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise SignatureError("signature does not verify with the public key (a hex RSA signature)") from None
