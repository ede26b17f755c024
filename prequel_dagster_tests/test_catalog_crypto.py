"""The catalog's secrets: encrypted at rest with rotatable keys, found by the config models, never in responses."""

import base64
import copy
import io
import json
import os
import stat

import paramiko
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, Field

from prequel_dagster.catalog.crypto import KEY_VARIABLE, CatalogKeyError, SecretBox
from prequel_dagster.catalog.keypairs import snowflake_key_pair, ssh_key_pair, with_generated_keys
from prequel_dagster.catalog.secret_fields import (
    SEALED_KEY,
    is_sealed,
    merge_patch,
    rotate_sealed,
    seal,
    secret_paths,
    strip,
    unseal,
)
from prequel_dagster.config.errors import PrequelError
from prequel_dagster.config.models import Block, Destination, Source
from prequel_dagster.config.secrets import MASK, Secret
from prequel_dagster.sources.ssh import load_private_key


def new_key() -> str:
    return Fernet.generate_key().decode()


def box() -> SecretBox:
    return SecretBox.from_environment({KEY_VARIABLE: new_key()})


def secret(label: str) -> str:
    return f"{label}-{os.urandom(8).hex()}"


# ---------------------------------------------------------------------------- bodies


def postgres_body(password: str) -> dict:
    return {
        "id": "acme-pg",
        "name": "Acme",
        "vendor": "postgres",
        "provider_id": "acme",
        "postgres": {
            "host": "db.acme.test",
            "database": "app",
            "schema": "public",
            "password_auth": {"username": "reader", "password": password},
        },
    }


def redshift_body(secret_key: str) -> dict:
    return {
        "id": "acme-rs",
        "name": "Acme warehouse",
        "vendor": "redshift",
        "provider_id": "acme",
        "redshift": {
            "host": "main.abc123.us-east-1.redshift.amazonaws.com",
            "database": "dev",
            "username": "reader",
            "auth_method": "aws_access_keys",
            "aws_access_keys": {"access_id": "AKIAEXAMPLE", "secret_key": secret_key},
        },
    }


def sftp_body(password: str) -> dict:
    return {
        "id": "acme-sftp",
        "name": "Acme files",
        "vendor": "sftp",
        "provider_id": "acme",
        "sftp": {
            "host": "sftp.acme.test",
            "username": "acme",
            "auth_method": "password_auth",
            "password_auth": {"password": password},
        },
    }


def snowflake_body(private_key: str, passphrase: str) -> dict:
    return {
        "id": "acme-sf",
        "name": "Acme snowflake",
        "vendor": "snowflake",
        "provider_id": "acme",
        "snowflake": {
            "host": "acme.snowflakecomputing.com",
            "database": "APP",
            "username": "READER",
            "public_key_auth": {"private_key": private_key, "private_key_passphrase": passphrase},
        },
    }


def destination_body(token: str, api_key: str, signing_key: str) -> dict:
    return {
        "id": "hook",
        "name": "Our webhook",
        "type": "webhook_batch",
        "record_schema": {"type": "object", "properties": {"email": {"type": "string"}}},
        "signing": {"private_key": signing_key},
        "webhook_batch": {
            "request_template": {
                "uri": "https://hooks.example.test/in",
                "headers": {
                    "Authorization": f"Bearer {token}",
                    "X-Api-Key": api_key,
                    "X-Tenant": "tenant-header-value",
                },
            }
        },
    }


# ---------------------------------------------------------------------------- keys, encryption, rotation


def test_round_trip():
    b = box()
    token = b.encrypt("päss wörd")
    assert "päss" not in token
    assert b.decrypt(token) == "päss wörd"
    assert b.encrypt("same") != b.encrypt("same")  # (a fresh IV each time)


def test_rotation_with_two_keys():
    old, new = new_key(), new_key()
    before = SecretBox.from_environment({KEY_VARIABLE: old})
    rotated_later, left_behind = before.encrypt("first"), before.encrypt("second")

    both = SecretBox.from_environment({KEY_VARIABLE: f"{new}, {old}"})  # the new key first, the old still read
    assert both.decrypt(rotated_later) == "first"
    assert both.decrypt(left_behind) == "second"
    rotated = both.rotate(rotated_later)
    assert rotated != rotated_later
    assert SecretBox([new]).decrypt(rotated) == "first"  # re-encrypted under the new key
    with pytest.raises(CatalogKeyError):
        SecretBox([old]).decrypt(rotated)
    assert both.rotate(rotated) == rotated  # already under the new key: unchanged
    assert SecretBox([new]).decrypt(both.encrypt("third")) == "third"  # the first key encrypts

    after = SecretBox.from_environment({KEY_VARIABLE: new})  # the old key dropped
    assert after.decrypt(rotated) == "first"
    with pytest.raises(CatalogKeyError) as caught:
        after.decrypt(left_behind)
    message = str(caught.value)
    assert "another key" in message and KEY_VARIABLE in message and "after the new one" in message
    assert new not in message and old not in message
    with pytest.raises(CatalogKeyError):
        after.rotate(left_behind)


def test_rotate_sealed_rotates_every_sealed_value():
    old, new = new_key(), new_key()
    body = destination_body("tok", "key", "pem")
    sealed = seal(Destination, body, SecretBox([old]))
    both = SecretBox([new, old])
    rotated = rotate_sealed(sealed, both)
    assert rotated != sealed
    assert unseal(Destination, rotated, SecretBox([new])) == body
    assert rotate_sealed(rotated, both) == rotated  # a second rotation changes nothing


def test_key_file_is_created_private_and_reused(tmp_path):
    path = tmp_path / "state" / "nested" / "catalog.key"
    first = SecretBox.from_environment({}, key_file=path)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(path.read_text().strip())  # a Fernet key
    token = first.encrypt("kept")
    assert SecretBox.from_environment({}, key_file=path).decrypt(token) == "kept"


def test_the_variable_wins_over_the_key_file(tmp_path):
    path = tmp_path / "catalog.key"
    key = new_key()
    b = SecretBox.from_environment({KEY_VARIABLE: key}, key_file=path)
    assert not path.exists()
    assert SecretBox([key]).decrypt(b.encrypt("x")) == "x"


def test_no_key_says_how_to_make_one():
    with pytest.raises(CatalogKeyError) as caught:
        SecretBox.from_environment({})
    assert isinstance(caught.value, PrequelError)
    message = str(caught.value)
    assert KEY_VARIABLE in message
    assert 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"' in message


@pytest.mark.parametrize(
    "bad", ["not-a-fernet-key-s3cr3t-s3cr3t", "x" * 44, base64.urlsafe_b64encode(b"k" * 31).decode()]
)
def test_a_malformed_key_is_named_but_never_shown(bad):
    for value in (bad, f"{new_key()},{bad}"):
        with pytest.raises(CatalogKeyError) as caught:
            SecretBox.from_environment({KEY_VARIABLE: value})
        message = str(caught.value)
        assert KEY_VARIABLE in message
        assert bad not in message and bad not in repr(caught.value)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__


# ---------------------------------------------------------------------------- finding secrets


def test_secret_paths_of_sources_and_destinations():
    pem = secret("pem")
    cases = [
        (Source, postgres_body("pw"), [("postgres", "password_auth", "password")]),
        (Source, redshift_body("sk"), [("redshift", "aws_access_keys", "secret_key")]),
        (Source, sftp_body("pw"), [("sftp", "password_auth", "password")]),
        (
            Source,
            snowflake_body(pem, "pp"),
            [
                ("snowflake", "public_key_auth", "private_key"),
                ("snowflake", "public_key_auth", "private_key_passphrase"),
            ],
        ),
        (
            Destination,
            destination_body("t", "k", pem),
            [
                ("signing", "private_key"),
                ("webhook_batch", "request_template", "headers", "Authorization"),
                ("webhook_batch", "request_template", "headers", "X-Api-Key"),
                ("webhook_batch", "request_template", "headers", "X-Tenant"),
            ],
        ),
    ]
    for model, body, expected in cases:
        model.model_validate(body)  # (the bodies are real ones)
        assert sorted(secret_paths(model, body)) == sorted(expected)


def test_secret_paths_follow_aliases_lists_and_unions():
    class Password(Block):
        password: Secret

    class Token(Block):
        token: Secret | None = None
        scope: str = ""

    class Model(BaseModel):
        key_: Secret = Field(alias="key")
        schema_: str | None = Field(default=None, alias="schema")
        auths: list[Password | Token] = []
        extra: dict[str, str] = {}

    body = {
        "key": "k",
        "schema": "public",
        "auths": [{"password": "p"}, {"token": "t", "scope": "read"}, {"token": None}],
        "extra": {"password": "not a secret field"},
    }
    Model.model_validate(body)
    assert secret_paths(Model, body) == [("key",), ("auths", 0, "password"), ("auths", 1, "token")]


# ---------------------------------------------------------------------------- sealing, stripping, patching


def test_seal_and_unseal():
    b = box()
    password, token, api_key, pem = secret("pw"), secret("tok"), secret("key"), secret("pem")
    for model, body, clear in [
        (Source, postgres_body(password), [password]),
        (Destination, destination_body(token, api_key, pem), [token, api_key, pem]),
    ]:
        sealed = seal(model, body, b)
        text = json.dumps(sealed)
        assert SEALED_KEY in text
        for value in clear:
            assert value not in text
        assert sealed["name"] == body["name"]
        assert unseal(model, sealed, b) == body
        assert seal(model, sealed, b) == sealed  # sealed values stay as they are
        model.model_validate(unseal(model, sealed, b))
    assert postgres_body(password)["postgres"]["password_auth"]["password"] == password  # not mutated


def test_seal_refuses_a_secret_that_is_not_a_string():
    with pytest.raises(ValueError, match=r"postgres\.password_auth\.password"):
        seal(Source, postgres_body({"nested": "x"}), box())  # type: ignore[arg-type]


def test_strip_leaves_no_secret_in_the_response():
    password, token, api_key, pem, pp = secret("pw"), secret("tok"), secret("key"), secret("pem"), secret("pp")
    b = box()
    for model, body, clear in [
        (Source, postgres_body(password), [password]),
        (Source, sftp_body(password), [password]),
        (Source, snowflake_body(pem, pp), [pem, pp]),
        (Source, redshift_body(api_key), [api_key]),
        (Destination, destination_body(token, api_key, pem), [token, api_key, pem]),
    ]:
        for stored in (body, seal(model, body, b)):
            shown = strip(model, stored)
            text = json.dumps(shown)
            for value in clear:
                assert value not in text
            assert SEALED_KEY not in text
    shown = strip(Destination, seal(Destination, destination_body(token, api_key, pem), b))
    assert shown["webhook_batch"]["request_template"]["headers"] == {
        "Authorization": MASK,
        "X-Api-Key": MASK,
        "X-Tenant": MASK,
    }
    assert "signing" in shown and "private_key" not in shown["signing"]
    assert shown["record_schema"] == destination_body("", "", "")["record_schema"]
    assert strip(Source, postgres_body(password))["postgres"]["password_auth"] == {"username": "reader"}


def test_strip_removes_sealed_values_anywhere():
    body = postgres_body("pw")
    body["postgres"]["host"] = {SEALED_KEY: "token"}  # (not a secret field: still never shown)
    assert "token" not in json.dumps(strip(Source, body))


def test_merge_patch_keeps_stored_secrets():
    b = box()
    password, token, api_key, pem = secret("pw"), secret("tok"), secret("key"), secret("pem")
    stored = seal(Destination, destination_body(token, api_key, pem), b)

    # a GET body sent back with a change: secrets omitted (signing key) or masked (headers) are kept
    shown = strip(Destination, stored)
    shown["name"] = "Renamed"
    merged = merge_patch(stored, shown)
    assert merged["name"] == "Renamed"
    assert unseal(Destination, merged, b) == {**destination_body(token, api_key, pem), "name": "Renamed"}

    # one header changed, one masked, one deleted, one added
    patch = {
        "webhook_batch": {
            "request_template": {
                "headers": {"Authorization": "Bearer new", "X-Api-Key": MASK, "X-Tenant": None, "X-New": "v"}
            }
        }
    }
    merged = unseal(Destination, merge_patch(stored, patch), b)
    assert merged["webhook_batch"]["request_template"]["headers"] == {
        "Authorization": "Bearer new",
        "X-Api-Key": api_key,
        "X-New": "v",
    }
    assert merged["signing"]["private_key"] == pem

    # a mask with nothing stored is never stored
    assert (
        "X-Other"
        not in merge_patch(stored, {"webhook_batch": {"request_template": {"headers": {"X-Other": MASK}}}})[
            "webhook_batch"
        ]["request_template"]["headers"]
    )

    # a new password replaces the sealed one; null deletes it
    source = seal(Source, postgres_body(password), b)
    replaced = merge_patch(source, {"postgres": {"password_auth": {"password": "new-password"}}})
    assert replaced["postgres"]["password_auth"] == {"username": "reader", "password": "new-password"}
    assert unseal(Source, merge_patch(source, {"postgres": {"password_auth": {"password": MASK}}}), b) == postgres_body(
        password
    )
    assert (
        "password"
        not in merge_patch(source, {"postgres": {"password_auth": {"password": None}}})["postgres"]["password_auth"]
    )
    assert source == seal(Source, source, b)  # (merge_patch copies: the stored body is unchanged)


@pytest.mark.parametrize(
    "target, patch, result",
    [  # RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({"a": "foo"}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_is_rfc_7386(target, patch, result):
    assert merge_patch(target, patch) == result


# ---------------------------------------------------------------------------- generated key pairs


def _source(vendor: str, block: dict) -> Source:
    return Source.model_validate({"id": "s", "name": "s", "vendor": vendor, "provider_id": "acme", vendor: block})


def _loads_with_paramiko(private: str, public: str) -> None:
    kind, blob, comment = public.split(" ")
    assert (kind, comment) == ("ssh-ed25519", "prequel-dagster")
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(private))
    assert key.get_base64() == blob
    assert load_private_key(private).get_base64() == blob  # what tunnels and SFTP sources call


def test_ssh_tunnel_keys_are_generated():
    block = {
        "host": "db.acme.test",
        "database": "app",
        "password_auth": {"username": "reader", "password": "pw"},
        "use_ssh_tunnel": True,
        "ssh_tunnel": {"ssh_tunnel_host": "bastion.acme.test", "ssh_tunnel_username": "tunnel"},
    }
    before = copy.deepcopy(block)
    out = with_generated_keys("postgres", block)
    assert block == before  # not mutated
    tunnel = _source("postgres", out).postgres.ssh_tunnel  # type: ignore[union-attr]
    assert tunnel is not None and tunnel.ssh_private_key is not None
    _loads_with_paramiko(tunnel.ssh_private_key.template, out["ssh_tunnel"]["ssh_public_key"])
    body = {"id": "s", "name": "s", "vendor": "postgres", "provider_id": "acme", "postgres": out}
    assert ("postgres", "ssh_tunnel", "ssh_private_key") in secret_paths(Source, body)
    shown = strip(Source, body)
    assert shown["postgres"]["ssh_tunnel"]["ssh_public_key"] == out["ssh_tunnel"]["ssh_public_key"]
    assert "PRIVATE KEY" not in json.dumps(shown)

    assert with_generated_keys("postgres", out) == out  # a key is there: kept
    assert with_generated_keys("postgres", {**block, "use_ssh_tunnel": False}) == {**block, "use_ssh_tunnel": False}


def test_sftp_keys_are_generated():
    block = {"host": "sftp.acme.test", "username": "acme"}
    out = with_generated_keys("sftp", block)
    source = _source("sftp", out)
    assert source.sftp is not None and source.sftp.public_key_auth is not None
    _loads_with_paramiko(out["public_key_auth"]["private_key"], out["public_key_auth"]["public_key"])
    password = {**block, "auth_method": "password_auth", "password_auth": {"password": "pw"}}
    assert with_generated_keys("sftp", password) == password


def test_snowflake_keys_are_generated():
    block = {
        "host": "acme.snowflakecomputing.com",
        "database": "APP",
        "username": "READER",
        "public_key_auth": {"private_key_passphrase": "stale"},
    }
    out = with_generated_keys("snowflake", block)
    auth = _source("snowflake", out).snowflake.public_key_auth  # type: ignore[union-attr]
    assert auth is not None and auth.private_key is not None and auth.private_key_passphrase is None
    key = serialization.load_pem_private_key(auth.private_key.template.encode(), password=None)  # as sources/sql.py
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    public = out["public_key_auth"]["public_key"]
    assert "-----" not in public and "\n" not in public
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert base64.b64decode(public) == der

    no_block = {k: v for k, v in block.items() if k != "public_key_auth"}
    assert "private_key" in with_generated_keys("snowflake", no_block)["public_key_auth"]
    password = {**no_block, "auth_method": "password_auth", "password_auth": {"username": "u", "password": "p"}}
    assert with_generated_keys("snowflake", password) == password
    assert with_generated_keys("postgres", no_block) == no_block  # only snowflake and sftp have key auth


def test_key_pairs_are_new_each_time():
    assert ssh_key_pair() != ssh_key_pair()
    assert snowflake_key_pair()[1] != snowflake_key_pair()[1]


def test_is_sealed():
    assert is_sealed({SEALED_KEY: "t"})
    assert not is_sealed({SEALED_KEY: "t", "other": 1}) and not is_sealed("t") and not is_sealed({SEALED_KEY: 1})
