"""A hostile provider controls its own rows, file names and links (not the config): none of them
reaches another provider's data, and config mistakes that would fail silently fail loudly.

1. Glob patterns and links stay inside the source's folder or bucket (local folders, SeaweedFS,
   fake-gcs-server, sshd); odd file names are read as data.
2. A dataset naming a column the source lacks (cursor, key, deleted flag) fails, naming it.
3. PostgreSQL connection values reach libpq intact, whatever characters they hold.
4. Every parameter of a revealed SAS token is masked, in any order and encoding.
"""

import base64
import os
import sqlite3
import uuid
from pathlib import Path
from urllib.parse import quote, unquote

import boto3
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import ConfigError, SourceError
from prequel_dagster.engine import run_extract
from prequel_dagster.lake.commits import DatasetLog
from prequel_dagster.sources.files import GlobReader
from prequel_dagster.stores import LocalStore

from .pg_helpers import create_provider_db

GLOBEX_ROWS = "id,email\n666,ceo@globex.test\n"


def config(tmp_path, source: dict, dataset: dict, *, dataset_id="users"):
    """Provider acme with one source and one dataset, a local lake under ``tmp_path``."""
    return load_config(
        {
            "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": "lake"}}],
            "providers": [{"id": "acme", "name": "acme", "datalake_id": "lake", "products": ["all"]}],
            "sources": [{"name": "src", "provider_id": "acme", **source}],
            "datasets": [{"id": dataset_id, "name": dataset_id, "source_id": source["id"], **dataset}],
        },
        base_dir=str(tmp_path),
    )


def glob_dataset(pattern="exports/*.csv", **dimension):
    return {
        "method": "glob",
        "glob": {"pattern": pattern, "file_format": "csv"},
        "type": "dimension",
        "dimension": {"primary_key_column": "id", **dimension},
    }


def lake_rows(tmp_path, dataset="users") -> dict:
    log = DatasetLog(LocalStore(tmp_path / "lake"), "acme", dataset)
    if log.latest() is None:
        return {}
    return {r["id"]: r for r in pa.Table.from_batches(list(log.scan()), schema=log.schema()).to_pylist()}


def nothing_committed(tmp_path, dataset="users") -> bool:
    return DatasetLog(LocalStore(tmp_path / "lake"), "acme", dataset).latest() is None


# ---------------------------------------------------------------- 1. files stay inside their source


@pytest.fixture
def drop(tmp_path):
    """drop/acme (acme's folder, with exports/a.csv) next to drop/globex (another provider's)."""
    (tmp_path / "drop" / "acme" / "exports").mkdir(parents=True)
    (tmp_path / "drop" / "acme" / "exports" / "a.csv").write_text("id,email\n1,a@acme.test\n")
    (tmp_path / "drop" / "globex").mkdir()
    (tmp_path / "drop" / "globex" / "users.csv").write_text(GLOBEX_ROWS)
    return tmp_path / "drop"


def local(tmp_path, pattern="exports/*.csv", **dimension):
    return config(
        tmp_path,
        {"id": "acme-drop", "vendor": "local", "local": {"path": "drop/acme"}},
        glob_dataset(pattern, **dimension),
    )


@pytest.mark.parametrize(
    "pattern, problem",
    [
        ("../globex/*.csv", "has a '..' segment"),
        ("exports/../../globex/*.csv", "has a '..' segment"),
        ("..\\globex\\*.csv", "has a '..' segment"),
        ("{globex}/*.csv", "is absolute"),
    ],
)
def test_a_pattern_cannot_reach_another_providers_folder(drop, tmp_path, pattern, problem):
    pattern = pattern.format(globex=drop / "globex")
    with pytest.raises(ConfigError) as info:  # refused when the config loads, by validate too
        run_extract(local(tmp_path, pattern), "users")
    message = str(info.value)
    assert "datasets[0].glob.pattern" in message and problem in message and "write" in message
    assert nothing_committed(tmp_path)
    reader = object.__new__(GlobReader)  # and by the reader itself, for configs built without validation
    dataset = type("D", (), {"glob": type("G", (), {"pattern": pattern, "file_format": "csv"})(), "id": "users"})()
    with pytest.raises(SourceError, match="source 'acme-drop' \\(dataset 'users'\\)"):
        GlobReader.__init__(reader, type("S", (), {"id": "acme-drop"})(), dataset, None)


@pytest.mark.parametrize(
    "link, target",
    [
        ("exports/evil.csv", "../../globex/users.csv"),  # a file link, relative
        ("exports/globex", "{globex}"),  # a folder link, absolute
        ("exports", "{globex}"),  # the pattern's own folder is the link
    ],
)
def test_links_out_of_the_source_folder_are_refused_naming_the_link(drop, tmp_path, link, target):
    acme = drop / "acme"
    if link == "exports":
        (acme / "exports" / "a.csv").unlink()
        (acme / "exports").rmdir()
    (acme / link).symlink_to(target.format(globex=drop / "globex"))
    with pytest.raises(SourceError) as info:
        run_extract(local(tmp_path), "users")
    message = str(info.value)
    assert f"{link} is a link that leads outside the source's folder" in message
    assert "source 'acme-drop' (dataset 'users')" in message and "remove the link" in message
    assert nothing_committed(tmp_path)


def test_links_inside_the_folder_are_read_and_loops_or_fifos_do_not_hang(drop, tmp_path):
    acme = drop / "acme"
    (acme / "archive").mkdir()
    (acme / "archive" / "2026.csv").write_text("id,email\n2,b@acme.test\n")
    (acme / "exports" / "current.csv").symlink_to("../archive/2026.csv")  # a file link inside: read
    (acme / "exports" / "loop").symlink_to("..")  # a folder link inside: not followed, no endless listing
    os.mkfifo(acme / "exports" / "pipe.csv")  # not a regular file: never opened (opening would block)
    result = run_extract(local(tmp_path), "users")
    assert result.counts.records_new_inserted == 2 and sorted(lake_rows(tmp_path)) == [1, 2]
    assert sorted(result.cursor) == ["exports/a.csv", "exports/current.csv"]


def test_a_file_swapped_for_a_link_after_listing_is_not_read(drop):
    from prequel_dagster.sources.files import LocalFiles, PathOutsideSource

    files = LocalFiles(str(drop / "acme"))
    assert [f.path for f in files.list("exports")] == ["exports/a.csv"]
    (drop / "acme" / "exports" / "a.csv").unlink()
    (drop / "acme" / "exports" / "a.csv").symlink_to(drop / "globex" / "users.csv")  # between listing and opening
    with pytest.raises(PathOutsideSource):
        files.open("exports/a.csv")
    (drop / "acme" / "exports" / "a.csv").unlink()
    os.mkfifo(drop / "acme" / "exports" / "a.csv")
    with pytest.raises(OSError, match="not a regular file"):  # refused at once, not blocked on the fifo
        files.open("exports/a.csv")


ODD_NAMES = [
    'it\'s "quoted".csv',
    "new\nline.csv",
    "ünïcødé 雪.csv",
    "..dots...csv",
    "%2e%2e%2fescape.csv",
    "semi;colon|pipe$(id)`x`.csv",
    " leading space.csv",
]


def test_odd_file_names_in_a_local_folder_are_read_as_data(drop, tmp_path):
    for i, name in enumerate(ODD_NAMES, start=10):
        (drop / "acme" / "exports" / name).write_text(f"id,email\n{i},x{i}@acme.test\n")
    cfg = local(tmp_path)
    result = run_extract(cfg, "users")
    assert result.counts.records_new_inserted == len(ODD_NAMES) + 1
    assert sorted(result.cursor) == sorted(["exports/a.csv"] + [f"exports/{n}" for n in ODD_NAMES])
    assert 666 not in lake_rows(tmp_path) and run_extract(cfg, "users").commit is None


@pytest.fixture
def buckets(s3, monkeypatch):
    """Bucket acme-* (acme's) and globex-* (another provider's, same store and keys)."""
    monkeypatch.setenv("FILES_SECRET", s3["secret_key"])
    client = boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        region_name=s3["region"],
    )
    acme, globex = "acme-" + os.urandom(4).hex(), "globex-" + os.urandom(4).hex()
    for name in (acme, globex):
        client.create_bucket(Bucket=name)
    client.put_object(Bucket=globex, Key="exports/users.csv", Body=GLOBEX_ROWS.encode())
    return client, acme, globex


def bucket_config(s3, tmp_path, bucket, pattern):
    return config(
        tmp_path,
        {
            "id": "acme-files",
            "vendor": "s3_compatible",
            "s3_compatible": {
                "host": s3["host"],
                "port": s3["port"],
                "bucket_name": bucket,
                "disable_ssl": True,
                "aws_access_keys": {"access_key_id": s3["access_key"], "secret_access_key": "${FILES_SECRET}"},
            },
        },
        glob_dataset(pattern),
    )


def test_odd_keys_in_a_bucket_are_read_as_data_and_patterns_stay_in_the_bucket(s3, buckets, tmp_path):
    client, acme, globex = buckets
    keys = [f"exports/{n}" for n in ODD_NAMES] + ["exports/%2e%2e/x.csv", "exports/#frag?q=1&x=2.csv"]
    for i, key in enumerate(keys, start=10):
        client.put_object(Bucket=acme, Key=key, Body=f"id,email\n{i},x{i}@acme.test\n".encode())
    result = run_extract(bucket_config(s3, tmp_path, acme, "exports/*.csv"), "users")
    assert result.counts.records_new_inserted == len(keys) and sorted(result.cursor) == sorted(keys)
    for pattern in (f"../{globex}/exports/*.csv", f"/{globex}/exports/*.csv", f"exports/../../{globex}/*/*.csv"):
        with pytest.raises(ConfigError, match="glob.pattern: .* (has a '..' segment|is absolute)"):
            run_extract(bucket_config(s3, tmp_path / "other", acme, pattern), "users")
    assert 666 not in lake_rows(tmp_path)


def test_names_with_dot_segments_are_refused_where_a_store_keeps_them(gcs, tmp_path):
    """fake-gcs-server, like GCS and S3, stores ``exports/../../x`` as a literal name; other stores
    and SDKs resolve the dots, so such a name is refused rather than read."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs["endpoint"]}
    )
    name = "acme-" + os.urandom(4).hex()
    bucket = client.create_bucket(name)
    bucket.blob("exports/a.csv").upload_from_string(b"id,email\n1,a@acme.test\n")
    bucket.blob("exports/../../globex/users.csv").upload_from_string(GLOBEX_ROWS.encode())
    cfg = config(
        tmp_path,
        {
            "id": "acme-gcs",
            "vendor": "gcs",
            "gcs": {"bucket_name": name, "auth_method": "gcp_service_account_role", "endpoint": gcs["endpoint"]},
        },
        glob_dataset("exports/*.csv"),
    )
    with pytest.raises(SourceError, match=r"file exports/\.\./\.\./globex/users\.csv has a '\.' or '\.\.' segment"):
        run_extract(cfg, "users")
    assert nothing_committed(tmp_path)


def test_sftp_links_out_of_the_login_folder_are_refused(sshd, tmp_path, monkeypatch):
    monkeypatch.setenv("SFTP_KEY", sshd["private_key"])
    folder = "hostile-" + os.urandom(4).hex()
    inbox = Path(sshd["files"]) / folder
    inbox.mkdir()
    (inbox / "a.csv").write_text("id,email\n1,a@acme.test\n")
    (tmp_path / "globex.csv").write_text(GLOBEX_ROWS)  # outside the login folder
    (inbox / "evil.csv").symlink_to(tmp_path / "globex.csv")
    cfg = config(
        tmp_path,
        {
            "id": "acme-sftp",
            "vendor": "sftp",
            "sftp": {
                "host": sshd["host"],
                "port": sshd["port"],
                "username": sshd["username"],
                "auth_method": "public_key_auth",
                "public_key_auth": {"private_key": "${SFTP_KEY}"},
            },
        },
        glob_dataset(f"{folder}/*.csv"),
    )
    with pytest.raises(SourceError, match=f"{folder}/evil.csv is a link that leads outside"):
        run_extract(cfg, "users")
    assert nothing_committed(tmp_path)
    (inbox / "evil.csv").unlink()
    archive = Path(sshd["files"]) / f"{folder}-archive"  # inside the login folder, outside the pattern
    archive.mkdir()
    (archive / "b.csv").write_text("id,email\n2,b@acme.test\n")
    (inbox / "current.csv").symlink_to(f"../{folder}-archive/b.csv")  # a link inside the login folder: read
    result = run_extract(cfg, "users")
    assert sorted(lake_rows(tmp_path)) == [1, 2] and f"{folder}/current.csv" in result.cursor


# ---------------------------------------------------------------- 2. a dataset names a column the source lacks

TYPOS = [  # (type block, the setting that names a missing column, the expected hint)
    (
        {"dimension": {"primary_key_column": "id", "last_modified_column": "updated"}},
        "dimension.last_modified_column 'updated'",
        "did you mean 'updated_at'",
    ),
    (
        {
            "dimension": {
                "primary_key_column": "id",
                "last_modified_column": "updated_at",
                "is_deleted_column": "deleted",
            }
        },
        "dimension.is_deleted_column 'deleted'",
        "did you mean 'is_deleted'",
    ),
    (
        {"dimension": {"primary_key_column": "ID", "max_full_read_rows": 1}},
        "dimension.primary_key_column 'ID'",
        "did you mean 'id'",
    ),
    (
        {"fact": {"primary_key_column": "id", "created_at_column": "created_at"}},
        "fact.created_at_column 'created_at'",
        "",
    ),
]


def assert_names_the_typo(info, setting, hint, source_id):
    message = str(info.value)
    assert f"dataset 'users': {setting} is not a column of source '{source_id}'" in message
    assert "its columns: id, email" in message and hint in message
    assert f"fix {setting.split(' ')[0]}" in message


@pytest.fixture(scope="module")
def typo_db(pg):
    password = "typo-" + os.urandom(4).hex()
    create_provider_db(pg, "typos", users=3, domain="acme.test", password=password)
    with psycopg.connect(f"postgresql://typos:{password}@{pg['host']}:{pg['port']}/typos") as conn:
        conn.execute("CREATE TABLE empty_users (LIKE users)")
    return pg, password


@pytest.mark.parametrize("method", ["table", "empty table", "sql"])
@pytest.mark.parametrize("block, setting, hint", TYPOS)
def test_a_column_typo_fails_the_postgres_extract_naming_it(
    typo_db, tmp_path, monkeypatch, method, block, setting, hint
):
    pg, password = typo_db
    monkeypatch.setenv("TYPOS_PG_PASSWORD", password)
    dataset = {"method": "table", "table": {"source_table_namespace": "public", "source_table_name": "users"}}
    if method == "empty table":  # no rows: the columns are checked all the same
        dataset["table"]["source_table_name"] = "empty_users"
    if method == "sql":
        dataset = {"method": "sql", "sql": {"query": "select * from users where id > 0"}}
    cfg = config(
        tmp_path,
        {
            "id": "acme-pg",
            "vendor": "postgres",
            "postgres": {
                "host": pg["host"],
                "port": pg["port"],
                "database": "typos",
                "auth_method": "password_auth",
                "password_auth": {"username": "typos", "password": "${TYPOS_PG_PASSWORD}"},
                "disable_ssl": True,
            },
        },
        {**dataset, "type": next(iter(block)), **block},
    )
    for _ in range(2):  # not a silent full read the first time, nor any later time
        with pytest.raises(SourceError) as info:
            run_extract(cfg, "users")
        assert_names_the_typo(info, setting, hint, "acme-pg")
    assert nothing_committed(tmp_path)


@pytest.mark.parametrize("method", ["table", "sql"])
@pytest.mark.parametrize("block, setting, hint", TYPOS)
def test_a_column_typo_fails_the_sqlite_extract_naming_it(tmp_path, method, block, setting, hint):
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, updated_at TIMESTAMP, is_deleted BOOLEAN)")
        db.execute("INSERT INTO users VALUES (1, 'a@acme.test', '2026-01-01 00:00:00', 0)")
    dataset = (
        {"method": "table", "table": {"source_table_name": "users"}}
        if method == "table"
        else {"method": "sql", "sql": {"query": "SELECT * FROM users"}}
    )
    cfg = config(
        tmp_path,
        {"id": "acme-db", "vendor": "sqlite", "sqlite": {"path": "src.db"}},
        {**dataset, "type": next(iter(block)), **block},
    )
    with pytest.raises(SourceError) as info:
        run_extract(cfg, "users")
    assert_names_the_typo(info, setting, hint, "acme-db")
    assert nothing_committed(tmp_path)


def test_a_cursor_null_in_every_row_does_not_bypass_the_full_read_guard(tmp_path):
    with sqlite3.connect(tmp_path / "src.db") as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, updated_at TIMESTAMP)")
        db.execute("INSERT INTO users VALUES (1, 'a@acme.test', NULL), (2, 'b@acme.test', NULL)")
    cfg = config(
        tmp_path,
        {"id": "acme-db", "vendor": "sqlite", "sqlite": {"path": "src.db"}},
        {
            "method": "table",
            "table": {"source_table_name": "users"},
            "type": "dimension",
            "dimension": {"primary_key_column": "id", "last_modified_column": "updated_at", "max_full_read_rows": 1},
        },
    )
    first = run_extract(cfg, "users")  # the first extract reads in full anyway
    assert first.counts.records_new_inserted == 2 and first.cursor is None
    with pytest.raises(
        SourceError,
        match="more than 1 rows to read in full .* fill updated_at "
        r"\(dimension.last_modified_column, NULL in every row so far\)",
    ):
        run_extract(cfg, "users")


@pytest.mark.parametrize(
    "dimension, setting",
    [
        ({"primary_key_column": "ID"}, "dimension.primary_key_column 'ID'"),
        ({"primary_key_column": "id", "is_deleted_column": "deleted"}, "dimension.is_deleted_column 'deleted'"),
    ],
)
def test_a_column_typo_fails_a_glob_extract_naming_it(drop, tmp_path, dimension, setting):
    (drop / "acme" / "exports" / "a.csv").write_text("id,email,is_deleted\n1,a@acme.test,false\n")
    cfg = config(
        tmp_path,
        {"id": "acme-drop", "vendor": "local", "local": {"path": "drop/acme"}},
        {**glob_dataset(), "dimension": dimension},
    )
    with pytest.raises(SourceError) as info:
        run_extract(cfg, "users")
    assert (
        f"dataset 'users': {setting} is not a column of source 'acme-drop' (its columns: id, email, "
        "is_deleted)" in str(info.value)
    )
    assert nothing_committed(tmp_path)


# ---------------------------------------------------------------- 3. connection values reach libpq intact


def test_connection_values_with_uri_characters_reach_postgres_intact(pg, tmp_path, monkeypatch):
    from prequel_dagster.sources.postgres import PostgresReader
    from prequel_dagster.sources.sql import engine_spec

    tag = os.urandom(3).hex()
    user, database = f"odd user@x:'q {tag}", f"odd db@x/y?z#w:'q=1 {tag}"
    password = f"p@ss/w?o#r:d 'q\" \\x=y&z% {tag}"
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(user)))
    try:
        with psycopg.connect(
            make_conninfo("", host=pg["host"], port=pg["port"], user=user, password=password, dbname=database)
        ) as conn:
            conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
            conn.execute("INSERT INTO users VALUES (1, 'a@acme.test'), (2, 'b@acme.test')")
        monkeypatch.setenv("ODD_PG_PASSWORD", password)

        def odd_config(host: str, lake: Path):
            return config(
                lake,
                {
                    "id": "acme-pg",
                    "vendor": "postgres",
                    "postgres": {
                        "host": host,
                        "port": pg["port"],
                        "database": database,
                        "auth_method": "password_auth",
                        "password_auth": {"username": user, "password": "${ODD_PG_PASSWORD}"},
                        "disable_ssl": True,
                    },
                },
                {
                    "method": "table",
                    "table": {"source_table_name": "users"},
                    "type": "dimension",
                    "dimension": {"primary_key_column": "id"},
                },
            )

        assert run_extract(odd_config(pg["host"], tmp_path), "users").counts.records_new_inserted == 2

        host = "db@x/y?z#w: 'q"  # every character that changes how a URI parses
        cfg = odd_config(host, tmp_path / "odd-host")
        reader = PostgresReader(cfg.source("acme-pg"), cfg.dataset("users"), cfg)
        with reader._endpoint() as conninfo:
            parsed = conninfo_to_dict(conninfo)
        assert (parsed["host"], parsed["port"], parsed["user"], parsed["password"], parsed["dbname"]) == (
            host,
            str(pg["port"]),
            user,
            password,
            database,
        )
        url, _ = engine_spec(cfg.source("acme-pg"), cfg)  # the SQLAlchemy path (checks, other tools)
        assert (url.host, url.username, url.password, url.database) == (host, user, password, database)
        with pytest.raises(SourceError, match="source 'acme-pg'.*check host and port") as info:
            run_extract(cfg, "users")
        assert password not in str(info.value)
    finally:
        with psycopg.connect(pg["dsn"], autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


# ---------------------------------------------------------------- 4. every parameter of a SAS token is masked


def test_every_parameter_of_a_revealed_sas_token_is_masked_in_any_order(monkeypatch):
    from prequel_dagster.config.secrets import Secret, redact

    oid, tid = str(uuid.uuid4()), str(uuid.uuid4())
    sig = base64.b64encode(os.urandom(32)).decode()  # holds "/", "+" and "=": URL-encoded in the token
    token = (
        "sv=2025-01-05&ss=b&srt=co&sp=rl&se=2031-01-01T00%3A00%3A00Z&st=2030-01-01T00%3A00%3A00Z&spr=https"
        f"&skoid={oid}&sktid={tid}&skt=2030-01-01T00%3A00%3A00Z&ske=2031-01-01T00%3A00%3A00Z&sks=b"
        f"&skv=2025-01-05&sr=c&sig={quote(sig, safe='')}"
    )
    monkeypatch.setenv("HOSTILE_SAS", "?" + token)
    Secret("${HOSTILE_SAS}").reveal()
    params = [tuple(p.split("=", 1)) for p in token.split("&")]
    reordered = "&".join(f"{k}={unquote(v)}" for k, v in sorted(params))  # as Arrow quotes it: sorted, decoded
    message = (
        f"GET https://acct.blob.core.windows.net/c/x.csv?{reordered} failed: 403 AuthorizationFailure "
        f"(principal {oid} of tenant {tid}); retry with ?{'&'.join(f'{k}={v}' for k, v in reversed(params))}"
    )
    masked = redact(message)
    for name, value in params:
        for form in {value, unquote(value), quote(unquote(value), safe="")}:
            if len(value) >= 4:
                assert f"{name}={form}" not in masked, name
            else:  # one- to three-letter flags (sp=rl, sr=c) are no secret, and stay readable
                assert f"{name}={form}" in masked
    for secret in (oid, tid, sig, quote(sig, safe="")):
        assert secret not in masked
    assert masked.startswith("GET https://acct.blob.core.windows.net/c/x.csv?se=***&sig=***&ske=***&skoid=***")
