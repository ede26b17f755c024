"""PostgreSQL extraction against a real server: exact types end to end, awkward identifiers, schema
drift between runs, a kill -9 in the middle of writing, and clear messages for broken sources."""

import datetime as dt
import decimal
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid

import psycopg
import pyarrow as pa
import pytest

from prequel_dagster.config import load_config
from prequel_dagster.config.errors import SourceError
from prequel_dagster.delivery.receiver import Receiver
from prequel_dagster.engine import run_extract, run_load
from prequel_dagster.lake.commits import OP_COLUMN, DatasetLog
from prequel_dagster.stores import LocalStore

from .pg_helpers import dsn

PASSWORD = "typed-" + os.urandom(4).hex()
T0 = dt.datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)
U = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")


@pytest.fixture
def typed_db(pg, monkeypatch):
    """Database ``typed`` with table "My Schema"."Odd Table": every type, NULLs, awkward names."""
    monkeypatch.setenv("TYPED_PG_PASSWORD", PASSWORD)
    with psycopg.connect(pg["dsn"], autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS typed WITH (FORCE)")
        admin.execute("DROP ROLE IF EXISTS typed")
        admin.execute(f"CREATE ROLE typed LOGIN PASSWORD '{PASSWORD}'")
        admin.execute("CREATE DATABASE typed OWNER typed")
    with psycopg.connect(dsn(pg, "typed", "typed", PASSWORD), autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "My Schema"')
        conn.execute("""CREATE TABLE "My Schema"."Odd Table" (
            "Id" bigint PRIMARY KEY, "my col" text, "quote""d" text, "Amount" numeric(20,6), unbounded numeric,
            updated_at timestamptz NOT NULL, local_ts timestamp, payload jsonb, tags text[], scores int[],
            u uuid, raw bytea, flag boolean, day date, span interval, small smallint, ratio double precision)""")
        conn.execute(
            """INSERT INTO "My Schema"."Odd Table" VALUES
            (1, 'spaces and "quotes"', 'it''s', 12345678901234.123456, 3.14159265358979323846264338327950288,
             %s, '2026-03-01 09:30:15.5', '{"a": {"b": [1, 2.5, null]}, "s": "x"}', '{"x","y z"}', '{1,NULL,3}',
             %s, '\\x00ff10', true, '2026-02-28', '1 day 02:03:04', -7, 0.1),
            (2, NULL, NULL, NULL, NULL, %s, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
            (T0, U, T0 + dt.timedelta(seconds=1)),
        )
    return pg


def typed_config(pg, lake, **dataset_overrides):
    dataset = {
        "id": "odd",
        "name": "odd",
        "source_id": "typed-pg",
        "method": "table",
        "table": {"source_table_namespace": "My Schema", "source_table_name": "Odd Table"},
        "type": "dimension",
        "dimension": {"primary_key_column": "Id", "last_modified_column": "updated_at"},
    }
    dataset.update(dataset_overrides)
    return {
        "datalakes": [{"id": "lake", "name": "lake", "storage": "local", "local": {"path": str(lake)}}],
        "providers": [{"id": "typed", "name": "typed", "datalake_id": "lake", "products": ["all"]}],
        "sources": [
            {
                "id": "typed-pg",
                "name": "typed",
                "vendor": "postgres",
                "provider_id": "typed",
                "postgres": {
                    "host": pg["host"],
                    "port": pg["port"],
                    "database": "typed",
                    "auth_method": "password_auth",
                    "password_auth": {"username": "typed", "password": "${TYPED_PG_PASSWORD}"},
                    "disable_ssl": True,
                },
            }
        ],
        "datasets": [dataset],
    }


def lake_rows(lake, dataset="odd") -> dict:
    log = DatasetLog(LocalStore(lake), "typed", dataset)
    table = pa.Table.from_batches(list(log.scan()), schema=log.schema())
    return {row["Id"]: row for row in table.to_pylist()}


def test_every_type_lands_exactly_in_the_lake(typed_db, tmp_path):
    config = load_config(typed_config(typed_db, tmp_path / "lake"), base_dir=str(tmp_path))
    result = run_extract(config, "odd")
    schema = result.schema
    assert schema.field("Amount").type == pa.decimal128(20, 6)
    assert schema.field("updated_at").type == pa.timestamp("us", "UTC")
    assert schema.field("local_ts").type == pa.timestamp("us")
    assert schema.field("tags").type == pa.list_(pa.string()) and schema.field("raw").type == pa.binary()
    rows = lake_rows(tmp_path / "lake")
    one = rows[1]
    assert one["my col"] == 'spaces and "quotes"' and one['quote"d'] == "it's"
    assert one["Amount"] == decimal.Decimal("12345678901234.123456")  # never a float
    assert decimal.Decimal(one["unbounded"]) == decimal.Decimal("3.14159265358979323846264338327950288")
    assert one["updated_at"] == T0 and one["local_ts"] == dt.datetime(2026, 3, 1, 9, 30, 15, 500000)
    assert json.loads(one["payload"]) == {"a": {"b": [1, 2.5, None]}, "s": "x"}
    assert one["tags"] == ["x", "y z"] and one["scores"] == [1, None, 3]
    assert one["u"] == str(U) and one["raw"] == b"\x00\xff\x10" and one["flag"] is True
    assert one["day"] == dt.date(2026, 2, 28) and one["span"] == "1 day 02:03:04"
    assert one["small"] == -7 and one["ratio"] == 0.1
    two = rows[2]
    assert all(v is None for k, v in two.items() if k not in ("Id", "updated_at", OP_COLUMN))


def test_exact_values_reach_the_endpoint(typed_db, tmp_path):
    with Receiver() as receiver:
        raw = typed_config(typed_db, tmp_path / "lake")
        raw["destinations"] = [
            {
                "id": "app",
                "name": "app",
                "type": "webhook_batch",
                "webhook_batch": {"request_template": {"uri": receiver.url + "/batches"}},
                "record_schema": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "amount": {"type": "number"},
                        "at": {"type": "string", "format": "date-time"},
                        "payload": {"type": "object"},
                        "tags": {"type": "array"},
                        "u": {"type": "string"},
                        "raw": {"type": "string"},
                        "flag": {"type": "boolean"},
                    },
                    "required": ["id"],
                },
            }
        ]
        raw["streams"] = [
            {
                "id": "odd-app",
                "name": "odd",
                "dataset_id": "odd",
                "destination_id": "app",
                "mappings": [
                    {"target_field": "id", "field_type": "expression", "expression": {"expr": "string(Id)"}},
                    {"target_field": "amount", "field_type": "field", "column": {"name": "Amount"}},
                    {"target_field": "at", "field_type": "field", "column": {"name": "updated_at"}},
                    {"target_field": "payload", "field_type": "field", "column": {"name": "payload"}},
                    {"target_field": "tags", "field_type": "field", "column": {"name": "tags"}},
                    {"target_field": "u", "field_type": "field", "column": {"name": "u"}},
                    {"target_field": "raw", "field_type": "field", "column": {"name": "raw"}},
                    {"target_field": "flag", "field_type": "field", "column": {"name": "flag"}},
                ],
            }
        ]
        config = load_config(raw, base_dir=str(tmp_path))
        run_extract(config, "odd")
        result = run_load(config, "odd-app")
        assert result.counts.records_loaded == 2 and result.counts.records_errored == 0
        body = receiver.requests[0].body.decode()
    assert '"amount":12345678901234.123456' in body  # the decimal's own digits on the wire
    records = {r["id"]: r for r in json.loads(body)["records"]}
    assert records["1"] == {
        "id": "1",
        "amount": 12345678901234.123456,
        "at": "2026-03-01T09:30:15.123456Z",
        "payload": {"a": {"b": [1, 2.5, None]}, "s": "x"},
        "tags": ["x", "y z"],
        "u": str(U),
        "raw": "AP8Q",
        "flag": True,
    }
    assert records["2"] == {"id": "2", "at": "2026-03-01T09:30:16.123456Z"}  # NULLs: optional fields left out


def test_schema_drift_is_reported_and_nothing_is_lost(typed_db, tmp_path):
    config = load_config(typed_config(typed_db, tmp_path / "lake"), base_dir=str(tmp_path))
    run_extract(config, "odd")
    later = T0 + dt.timedelta(hours=1)
    with psycopg.connect(dsn(typed_db, "typed", "typed", PASSWORD), autocommit=True) as conn:
        conn.execute('ALTER TABLE "My Schema"."Odd Table" ADD COLUMN "New Col" text')
        conn.execute('ALTER TABLE "My Schema"."Odd Table" DROP COLUMN "quote""d"')
        conn.execute('ALTER TABLE "My Schema"."Odd Table" ALTER COLUMN small TYPE bigint')
        conn.execute('ALTER TABLE "My Schema"."Odd Table" ALTER COLUMN "Amount" TYPE numeric(24,6)')
        conn.execute(
            'UPDATE "My Schema"."Odd Table" SET "New Col" = %s, small = 5000000000, updated_at = %s WHERE "Id" = 1',
            ("fresh", later),
        )
    result = run_extract(config, "odd")
    assert result.counts.records_existing_updated == 1
    changes = "\n".join(result.schema_changes)
    assert "column added: New Col (string)" in changes
    assert 'column dropped: quote"d' in changes
    assert "column type changed: small int16 -> int64" in changes
    assert "column type changed: Amount decimal128(20, 6) -> decimal128(24, 6)" in changes
    rows = lake_rows(tmp_path / "lake")
    assert rows[1]["New Col"] == "fresh" and rows[1]["small"] == 5000000000 and rows[1]['quote"d'] is None
    assert rows[2]["small"] is None and rows[2]["Amount"] is None  # the older version, read in the new types
    log = DatasetLog(LocalStore(tmp_path / "lake"), "typed", "odd")
    assert log.schema().field("small").type == pa.int64()


def test_broken_sources_name_the_source_and_the_fix(typed_db, tmp_path, monkeypatch):
    def fails(match, **changes):
        raw = typed_config(typed_db, tmp_path / "lake")
        for key, value in changes.items():
            target = raw["datasets"][0] if key in ("table",) else raw["sources"][0]["postgres"]
            target[key] = value
        with pytest.raises(SourceError) as info:
            run_extract(load_config(raw, base_dir=str(tmp_path)), "odd")
        text = str(info.value)
        assert "typed-pg" in text and match in text, text
        assert PASSWORD not in text and "Traceback" not in text
        return text

    fails("check host and port", port=1, connection_timeout_in_seconds=2)
    fails("check the source's database name", database="nope")
    fails("check the dataset's table", table={"source_table_namespace": "My Schema", "source_table_name": "Gone"})
    monkeypatch.setenv("TYPED_PG_PASSWORD", "wrong-" + PASSWORD)
    assert "wrong-" + PASSWORD not in fails("check password_auth.username")
    monkeypatch.setenv("TYPED_PG_PASSWORD", PASSWORD)
    with psycopg.connect(typed_db["dsn"].rsplit("/", 1)[0] + "/typed", autocommit=True) as admin:
        admin.execute("CREATE TABLE public.secret_table (id bigint PRIMARY KEY)")  # owned by the admin
    fails(
        "grant the source user SELECT", table={"source_table_namespace": "public", "source_table_name": "secret_table"}
    )


KILL_MID_WRITE = textwrap.dedent("""
    import json, os, signal, sys
    from prequel_dagster.config import load_config
    from prequel_dagster.engine import run_extract
    from prequel_dagster.lake import commits

    original = commits.CommitWriter.write
    calls = {"n": 0}

    def write_then_die(self, batch):
        original(self, batch)
        calls["n"] += 1
        if calls["n"] == 2:  # a Parquet file half written, no commit yet
            os.kill(os.getpid(), signal.SIGKILL)

    commits.CommitWriter.write = write_then_die
    run_extract(load_config(json.loads(sys.argv[1]), base_dir=sys.argv[2]), "odd")
""")


def test_kill_9_mid_write_leaves_nothing_visible_and_the_next_run_commits_everything(typed_db, tmp_path):
    with psycopg.connect(dsn(typed_db, "typed", "typed", PASSWORD), autocommit=True) as conn:
        conn.execute(
            """INSERT INTO "My Schema"."Odd Table" ("Id", updated_at, "my col")
                        SELECT g, %s + g * interval '1 ms', repeat('x', 200) FROM generate_series(3, 60000) g""",
            (T0,),
        )
    raw = typed_config(typed_db, tmp_path / "lake")
    env = dict(os.environ, TYPED_PG_PASSWORD=PASSWORD)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_MID_WRITE, json.dumps(raw), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    log = DatasetLog(LocalStore(tmp_path / "lake"), "typed", "odd")
    assert log.latest() is None and list(log.scan()) == []  # the written file is there, but not visible
    assert list((tmp_path / "lake").rglob("*.parquet"))
    result = run_extract(load_config(raw, base_dir=str(tmp_path)), "odd")
    assert result.counts.records_new_inserted == 60000
    assert sorted(lake_rows(tmp_path / "lake")) == list(range(1, 60001))


def test_a_full_read_split_over_two_connections_reads_every_row_once(typed_db, tmp_path, monkeypatch):
    from prequel_dagster.sources import postgres

    with psycopg.connect(dsn(typed_db, "typed", "typed", PASSWORD), autocommit=True) as conn:
        conn.execute(
            """INSERT INTO "My Schema"."Odd Table" ("Id", updated_at, "my col")
                        SELECT g, %s, repeat('y', 100) FROM generate_series(3, 20000) g""",
            (T0,),
        )
        conn.execute('DELETE FROM "My Schema"."Odd Table" WHERE "Id" % 7 = 0')  # holes in the pages
    monkeypatch.setattr(postgres, "MIN_PAGES_PER_READ", 1)
    ranges = []
    original = postgres.PostgresReader._page_ranges
    monkeypatch.setattr(
        postgres.PostgresReader, "_page_ranges", lambda self, c: ranges.extend(original(self, c)) or ranges
    )
    result = run_extract(load_config(typed_config(typed_db, tmp_path / "lake"), base_dir=str(tmp_path)), "odd")
    assert len(ranges) == 2
    expected = [i for i in range(1, 20001) if i % 7]
    assert result.counts.records_new_inserted == len(expected)
    assert sorted(lake_rows(tmp_path / "lake")) == expected


def _execute(pg, statement, *params):
    with psycopg.connect(dsn(pg, "typed", "typed", PASSWORD), autocommit=True) as conn:
        conn.execute(statement, params or None)


def test_hard_deletes_are_detected_only_when_asked(typed_db, tmp_path):
    _execute(
        typed_db,
        """INSERT INTO "My Schema"."Odd Table" ("Id", updated_at)
                          SELECT g, %s FROM generate_series(3, 10) g""",
        T0,
    )
    raw = typed_config(typed_db, tmp_path / "lake")
    raw["datasets"][0]["dimension"]["detect_hard_deletes"] = True
    watching = load_config(raw, base_dir=str(tmp_path))
    blind = load_config(typed_config(typed_db, tmp_path / "lake"), base_dir=str(tmp_path))
    run_extract(watching, "odd")
    _execute(typed_db, 'DELETE FROM "My Schema"."Odd Table" WHERE "Id" IN (4, 7)')
    assert run_extract(blind, "odd").counts.records_existing_deleted == 0  # as Prequel: not without opting in
    result = run_extract(watching, "odd")
    assert result.counts.records_existing_deleted == 2
    latest = lake_rows(tmp_path / "lake")
    assert {k for k, row in latest.items() if row[OP_COLUMN] == "delete"} == {4, 7}
    assert latest[4]["updated_at"] == T0  # the delete carries the record's last values
    assert run_extract(watching, "odd").counts.records_existing_deleted == 0  # reported once
    _execute(
        typed_db, 'INSERT INTO "My Schema"."Odd Table" ("Id", updated_at) VALUES (4, %s)', T0 + dt.timedelta(days=1)
    )
    back = run_extract(watching, "odd")
    assert back.counts.records_new_inserted == 1 and lake_rows(tmp_path / "lake")[4][OP_COLUMN] == "insert"
    _execute(typed_db, 'DELETE FROM "My Schema"."Odd Table"')
    with pytest.raises(SourceError, match="refusing"):
        run_extract(watching, "odd")


def test_full_read_dimensions_have_a_volume_guard_and_long_extracts_report_progress(typed_db, tmp_path, monkeypatch):
    from prequel_dagster.engine import extract

    raw = typed_config(typed_db, tmp_path / "lake", dimension={"primary_key_column": "Id", "max_full_read_rows": 1})
    with pytest.raises(SourceError, match="last_modified_column") as info:
        run_extract(load_config(raw, base_dir=str(tmp_path)), "odd")
    assert "max_full_read_rows" in str(info.value)
    assert DatasetLog(LocalStore(tmp_path / "lake"), "typed", "odd").latest() is None  # nothing committed
    monkeypatch.setattr(extract, "PROGRESS_EVERY_SECONDS", 0)
    lines: list[str] = []
    run_extract(load_config(typed_config(typed_db, tmp_path / "lake"), base_dir=str(tmp_path)), "odd", log=lines.append)
    progress = [line for line in lines if "rows read" in line]
    assert progress and "MB" in progress[0] and "rows/s" in progress[0]
