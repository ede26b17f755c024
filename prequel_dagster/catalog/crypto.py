"""The catalog's encryption of secrets at rest: Fernet keys from ``PREQUEL_CATALOG_KEY`` (or a key file), rotatable."""

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ..config.errors import PrequelError

KEY_VARIABLE = "PREQUEL_CATALOG_KEY"
MAKE_A_KEY = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


class CatalogKeyError(PrequelError):
    """The catalog's key is missing, malformed, or not the one its secrets were encrypted with."""


class SecretBox:
    """Encrypts with the first key, decrypts with any: rotation puts a new key first, re-encrypts
    (:meth:`rotate`), then drops the old key."""

    def __init__(self, keys: Sequence[str | bytes], source: str = KEY_VARIABLE):
        """``keys``: Fernet keys, the encrypting one first; ``source`` names where they came from in messages."""
        self.source = source
        fernets = []
        for number, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError):
                which = f"key {number} of {len(keys)}" if len(keys) > 1 else "the key"
                # (from None: the underlying error could quote the key)
                raise CatalogKeyError(
                    f"{source}: {which} is not a Fernet key (32 url-safe base64-encoded bytes); make one with "
                    f"{MAKE_A_KEY}"
                ) from None
        if not fernets:
            raise CatalogKeyError(f"{source} holds no key; make one with {MAKE_A_KEY}")
        self._primary = fernets[0]
        self._all = MultiFernet(fernets)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, key_file: Path | None = None) -> "SecretBox":
        """Keys from ``PREQUEL_CATALOG_KEY`` (comma-separated, the encrypting one first); if it is unset or
        blank, from ``key_file`` (created with a new key, mode 0600, if it does not exist)."""
        env = os.environ if environ is None else environ
        text = env.get(KEY_VARIABLE, "")
        if text.strip():
            return cls(_split(text), KEY_VARIABLE)
        if key_file is None:
            raise CatalogKeyError(
                f"{KEY_VARIABLE} is not set: the catalog encrypts secrets with it. Make a key with "
                f"{MAKE_A_KEY} and export {KEY_VARIABLE}=<the key> (keep it safe: without it the "
                "catalog's secrets cannot be read)"
            )
        path = Path(key_file).expanduser()
        return cls(_split(_read_or_create(path)), f"key file {path} ({KEY_VARIABLE} is not set)")

    def encrypt(self, text: str) -> str:
        return self._all.encrypt(text.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._all.decrypt(token.encode()).decode()
        except InvalidToken:
            raise self._wrong_key() from None

    def rotate(self, token: str) -> str:
        """``token`` encrypted with the first key; unchanged if it already is (so a rotation can be resumed,
        and counts only what it changed)."""
        data = token.encode()
        try:
            self._primary.decrypt(data)
            return token
        except InvalidToken:
            pass
        try:
            return self._all.rotate(data).decode("ascii")
        except InvalidToken:
            raise self._wrong_key() from None

    def _wrong_key(self) -> CatalogKeyError:
        return CatalogKeyError(
            f"a catalog secret cannot be decrypted with the key(s) of {self.source}: the catalog was encrypted "
            f"with another key. Add the old key to {KEY_VARIABLE} after the new one "
            f"({KEY_VARIABLE}=<new key>,<old key>), rotate the catalog's secrets, then drop the old key"
        )

    def __repr__(self) -> str:
        return f"SecretBox(source={self.source!r})"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _read_or_create(path: Path) -> str:
    """The key file's text; a new key written there first if it does not exist (another process may be
    creating it at the same moment: the first one wins and the others read its key)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(Fernet.generate_key().decode() + "\n")
                f.flush()
                os.fsync(f.fileno())
    for _ in range(50):  # a file another process has just created may not hold its key yet
        try:
            text = path.read_text()
        except OSError as exc:
            raise CatalogKeyError(f"cannot read the catalog key file {path}: {exc.strerror or exc}") from None
        if text.strip():
            return text
        time.sleep(0.05)
    raise CatalogKeyError(
        f"the catalog key file {path} is empty; delete it to have a new key made, or set {KEY_VARIABLE}"
    )
