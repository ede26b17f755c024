"""README "Datalake kinds" claims that no other test checks, against real servers on loopback:

* a `gcs` datalake with `auth_method: gcp_service_account_key` (fake-gcs-server; fake-gcs-server has no
  OAuth token endpoint, so the key's `token_uri` points at a small RFC 7523 token endpoint started
  here, which verifies the key's signed JWT like Google's does; a relay in front of fake-gcs-server
  records the Authorization header of every request the lake makes);
* an `abs` datalake with `auth_method: azure_service_shared_access_signature` (Azurite, which
  enforces what a container SAS may do as Azure does).
"""

import base64
import datetime as dt
import http.client
import json
import os
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import PrequelError
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.stores import AbsStore, open_datalake

from .test_claims_delivery import raw_config

ROWS = {i: f"user-{i}" for i in range(1, 31)}
READ_WRITE = "https://www.googleapis.com/auth/devstorage.read_write"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- an OAuth 2.0 token endpoint for service-account JWTs (RFC 7523), as Google's answers ----------


class TokenEndpoint:
    """Answers the JWT-bearer grant: the assertion must be signed (RS256) by the registered key of its
    issuer, for this endpoint's URL, unexpired; the answer is a fresh access token."""

    def __init__(self):
        self.keys: dict[str, rsa.RSAPublicKey] = {}  # client_email -> public key
        self.issued: list[str] = []
        self.claims: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                status, answer = endpoint.grant(form)
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"

    def grant(self, form: dict) -> tuple[int, dict]:
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, {"error": "unsupported_grant_type"}
        try:
            head, body, sig = form["assertion"][0].split(".")
            header, claims = json.loads(_b64url_decode(head)), json.loads(_b64url_decode(body))
            assert header["alg"] == "RS256"
            self.keys[claims["iss"]].verify(
                _b64url_decode(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (KeyError, ValueError, AssertionError, InvalidSignature):  # malformed, unknown issuer, bad signature
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        # Google's token endpoint takes its own URL as the audience, whatever URL the request went to.
        if claims["aud"] != GOOGLE_TOKEN_AUDIENCE or claims["exp"] < time.time() or not claims.get("scope"):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: audience, expiry or scope."}
        token = "ya29.test-" + os.urandom(12).hex()
        self.issued.append(token)
        self.claims.append(claims)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class Relay:
    """Forwards every request to ``upstream`` unchanged and notes its Authorization header (upload
    session URLs are rewritten to come back through here)."""

    HOP = frozenset(
        {"connection", "keep-alive", "transfer-encoding", "expect", "te", "upgrade", "host", "content-length"}
    )

    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self.agents: set[str] = set()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _relay(self):
                body = self._body()
                relay.seen.append((self.command, self.path, self.headers.get("Authorization")))
                relay.agents.add(self.headers.get("User-Agent", ""))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in Relay.HOP}
                conn = http.client.HTTPConnection(relay.upstream.hostname, relay.upstream.port, timeout=120)
                try:
                    send = body if body or self.command in ("POST", "PUT") else None
                    conn.request(self.command, self.path, body=send, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() in Relay.HOP:
                        continue
                    if k.lower() == "location":
                        v = v.replace(f"{relay.upstream.scheme}://{relay.upstream.netloc}", relay.url)
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def service_account_key(token_uri: str, email: str = "prequel-lake@test-project.iam.gserviceaccount.com"):
    """A throwaway service account key file (JSON text) and its private key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": os.urandom(20).hex(),
        "private_key": _pem(key),
        "client_email": email,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    return json.dumps(info), key


def gcs_key_lake(endpoint: str, bucket: str) -> dict:
    return {
        "id": "lake",
        "name": "lake",
        "storage": "gcs",
        "gcs": {
            "bucket_name": bucket,
            "prefix": "imports",
            "endpoint": endpoint,
            "auth_method": "gcp_service_account_key",
            "gcp_service_account_key": {"service_account_key": "${GCP_SA_KEY_JSON}"},
        },
    }


@pytest.fixture
def gcs_bucket(gcs):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs["endpoint"]}
    )
    name = "sa-lake-" + os.urandom(4).hex()
    client.create_bucket(name)
    return client.bucket(name)


def test_a_gcs_lake_with_a_service_account_key_extracts_and_loads(gcs, gcs_bucket, monkeypatch, tmp_path):
    with TokenEndpoint() as tokens, Relay(gcs["endpoint"]) as relay, Receiver() as receiver:
        key_json, key = service_account_key(tokens.url)
        tokens.keys[json.loads(key_json)["client_email"]] = key.public_key()
        monkeypatch.setenv("GCP_SA_KEY_JSON", key_json)
        config = load_config(
            raw_config(tmp_path, gcs_key_lake(relay.url, gcs_bucket.name), receiver.url, ROWS), base_dir=str(tmp_path)
        )
        first = run_extract(config, "users")
        assert first.counts.records_new_inserted == len(ROWS)
        assert first.data_uri.startswith(f"gs://{gcs_bucket.name}/imports/")
        assert run_load(config, "users-app").counts.records_loaded == len(ROWS)
        assert run_extract(config, "users").commit is None  # the cursor came back from the bucket
        assert run_load(config, "users-app").counts.records_loaded == 0
    assert sorted(r["record"]["id"] for r in receiver.store.records()) == sorted(ROWS)
    names = [b.name for b in gcs_bucket.list_blobs(prefix="imports/")]
    assert any(n.startswith("imports/lakehouse/acme/users/_commits/") for n in names)
    assert any(n.startswith("imports/lakehouse/acme/users/data/") and n.endswith(".parquet") for n in names)
    assert any(n.startswith("imports/artifacts/acme/streams/users-app/_deliveries/") for n in names)
    # The key was used: its signed JWT was accepted for the read-write scope, and every request the lake
    # made (the Python client's and Arrow's, gcloud-python and gl-cpp) carried a token issued for it.
    assert tokens.issued and all(READ_WRITE in c["scope"].split() for c in tokens.claims)
    assert relay.seen and {auth for _, _, auth in relay.seen} <= {f"Bearer {t}" for t in tokens.issued}, sorted(
        {(m, p.split("?")[0], (a or "")[:20]) for m, p, a in relay.seen}
    )
    assert any(m in ("POST", "PUT") for m, _, _ in relay.seen)  # writes too, not only reads
    assert any("python" in a for a in relay.agents) and any("cpp" in a for a in relay.agents), relay.agents


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _key_material(text: str) -> str:
    """The base64 body of the private key in a key file (or in text that is not JSON)."""
    try:
        text = json.loads(text).get("private_key", "")
    except ValueError:
        pass
    return "".join(line for line in text.splitlines() if "PRIVATE KEY" not in line)


def _with(good: str, **changes) -> str:
    return json.dumps(dict(json.loads(good), **changes))


BAD_KEYS = {
    "not JSON": lambda good: "-----BEGIN PRIVATE KEY-----\n" + json.loads(good)["private_key"][28:90],
    "missing fields": lambda good: json.dumps(
        {k: v for k, v in json.loads(good).items() if k not in ("client_email", "token_uri")}
    ),
    "unreadable private key": lambda good: _with(
        good,
        private_key="-----BEGIN PRIVATE KEY-----\nTUlJQ2Vh"
        + json.loads(good)["private_key"][60:80]
        + "\n-----END PRIVATE KEY-----\n",
    ),
    "refused by the token endpoint": lambda good: _with(
        good, private_key=_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ),  # another key than the one registered for the account
}


@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_a_bad_service_account_key_is_refused_naming_the_datalake_without_the_secret(
    case, gcs, gcs_bucket, monkeypatch, tmp_path
):
    with TokenEndpoint() as tokens:
        good, key = service_account_key(tokens.url)
        tokens.keys[json.loads(good)["client_email"]] = key.public_key()
        bad = BAD_KEYS[case](good)
        monkeypatch.setenv("GCP_SA_KEY_JSON", bad)
        config = load_config(
            {
                "datalakes": [gcs_key_lake(gcs["endpoint"], gcs_bucket.name)],
                "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
            },
            base_dir=str(tmp_path),
        )
        with pytest.raises(Exception) as info:
            open_datalake(config.datalake("lake"), config)
    shown = "".join(traceback.format_exception(info.value))
    for material in (_key_material(good), _key_material(bad)):  # no piece of a key in the message or traceback
        pieces = {material[i : i + 16] for i in range(0, max(len(material) - 15, 0), 4)}
        assert not [p for p in pieces if p in shown], case
    assert isinstance(info.value, PrequelError), f"{case}: {type(info.value).__name__}: {info.value}"
    assert "datalake 'lake'" in str(info.value) and "service_account_key" in str(info.value), str(info.value)


# -- Azure: a container SAS ------------------------------------------------------------------------


@pytest.fixture
def sas_container(azurite, monkeypatch):
    from azure.storage.blob import (
        BlobServiceClient,
        ContainerSasPermissions,
        generate_container_sas,
    )

    name = "sas-lake-" + os.urandom(4).hex()
    container = BlobServiceClient.from_connection_string(azurite["connection_string"]).create_container(name)
    sas = generate_container_sas(
        azurite["account"],
        name,
        account_key=azurite["key"],
        permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, delete=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    monkeypatch.setenv("LAKE_SAS", sas)
    return container, sas


def abs_sas_lake(azurite, container_name: str) -> dict:
    return {
        "id": "lake",
        "name": "lake",
        "storage": "abs",
        "abs": {
            "bucket_name": container_name,
            "storage_account_name": azurite["account"],
            "prefix": "imports",
            "endpoint": azurite["endpoint"],
            "auth_method": "azure_service_shared_access_signature",
            "azure_service_shared_access_signature": {"shared_access_signature_token": "${LAKE_SAS}"},
        },
    }


def _extract_and_load_twice(config, receiver, **storage):
    first = run_extract(config, "users", **storage)
    assert first.counts.records_new_inserted == len(ROWS) and first.data_uri.startswith("abfs://")
    assert run_load(config, "users-app", **storage).counts.records_loaded == len(ROWS)
    assert run_extract(config, "users", **storage).commit is None  # the cursor came back from the container
    assert run_load(config, "users-app", **storage).counts.records_loaded == 0
    assert sorted(r["record"]["id"] for r in receiver.store.records()) == sorted(ROWS)


def _assert_lake_layout(container):
    names = [b.name for b in container.list_blobs(name_starts_with="imports/")]
    assert any(n.startswith("imports/lakehouse/acme/users/_commits/") for n in names), names
    assert any(n.startswith("imports/lakehouse/acme/users/data/") and n.endswith(".parquet") for n in names)
    assert any(n.startswith("imports/artifacts/acme/streams/users-app/_deliveries/") for n in names)


def test_an_azure_lake_with_a_container_sas_extracts_and_loads(azurite, sas_container, tmp_path):
    container, sas = sas_container
    with Receiver() as receiver:
        config = load_config(
            raw_config(tmp_path, abs_sas_lake(azurite, container.container_name), receiver.url, ROWS),
            base_dir=str(tmp_path),
        )
        try:
            _extract_and_load_twice(config, receiver)
        except PrequelError as exc:
            signature = sas.split("sig=")[1].split("&")[0]
            assert signature not in str(exc) and urllib.parse.unquote(signature) not in str(exc)
            pytest.fail(f"a container SAS with read/add/create/write/delete/list cannot open the lake: {exc}")
    _assert_lake_layout(container)


def test_the_container_sas_itself_carries_every_lake_operation(azurite, sas_container, tmp_path):
    """As far as the product goes without its opening check: the same SAS, handed to the lake storage
    directly, carries a whole extract and load (Arrow's reads and writes, exclusive commits, deletes)."""
    container, sas = sas_container
    storage = AbsStore(
        account=azurite["account"],
        container=container.container_name,
        prefix="imports",
        sas_token=sas,
        endpoint=azurite["endpoint"],
    )
    with Receiver() as receiver:
        config = load_config(
            raw_config(tmp_path, abs_sas_lake(azurite, container.container_name), receiver.url, ROWS),
            base_dir=str(tmp_path),
        )
        _extract_and_load_twice(config, receiver, storage=storage)
    _assert_lake_layout(container)
    pending = "imports/artifacts/acme/streams/users-app/_pending/"
    assert not [b.name for b in container.list_blobs(name_starts_with=pending)]
