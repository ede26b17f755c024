"""SQL sources through SQLAlchemy: reflect the table, read changed rows, yield Arrow record batches.

Identifiers are quoted by the dialect, values are bound parameters: nothing is pasted into SQL.
"""

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, NoSuchTableError, SQLAlchemyError

from ..config.errors import SourceError
from ..config.models import Dataset, PrequelConfig, Source
from ..config.secrets import MissingEnvironmentVariable
from .errors import check_columns, describe_failure

BATCH_ROWS = 50_000


# The SQLAlchemy dialect each vendor needs, and the extra that installs it.
VENDOR_EXTRAS = {"redshift": "redshift", "redshift_serverless": "redshift", "snowflake": "snowflake",
                 "bigquery": "bigquery"}


def engine_spec(source: Source, config: PrequelConfig) -> tuple[sa.URL | str, dict[str, Any]]:
    """The URL and ``create_engine`` keyword arguments for a SQL source (secrets revealed here).

    Connection settings are honoured per vendor: ``disable_ssl`` (sslmode) and
    ``connection_timeout_in_seconds`` (connect or login timeout).
    """
    where = f"source '{source.id}'"
    if source.vendor == "sqlite":
        path = config.resolve_path(source.sqlite.path)  # type: ignore[union-attr]
        if not path.exists():
            raise SourceError(f"{where}: SQLite file {path} does not exist; check sqlite.path")
        return f"sqlite:///{path}", {}
    if source.vendor == "postgres":
        pg = source.postgres
        assert pg is not None
        url = sa.URL.create("postgresql+psycopg", username=pg.password_auth.username,
                            password=pg.password_auth.password.reveal(), host=pg.host, port=pg.port, database=pg.database)
        return url, {"connect_args": {"connect_timeout": pg.connection_timeout_in_seconds,
                                      "sslmode": "disable" if pg.disable_ssl else "prefer",
                                      "application_name": "prequel_dagster"}, "pool_pre_ping": True}
    if source.vendor in ("redshift", "redshift_serverless"):
        rs = source.redshift or source.redshift_serverless
        assert rs is not None
        if rs.auth_method != "password_auth" or rs.password_auth is None:
            raise SourceError(f"{where}: Redshift auth_method '{rs.auth_method}' is not supported yet; "
                              "use password_auth")
        if rs.use_ssh_tunnel:
            raise SourceError(f"{where}: use_ssh_tunnel is supported for postgres sources only so far")
        url = sa.URL.create("redshift+psycopg2", username=rs.password_auth.username,
                            password=rs.password_auth.password.reveal(), host=rs.host, port=rs.port, database=rs.database)
        return url, {"connect_args": {"connect_timeout": rs.connection_timeout_in_seconds,
                                      "sslmode": "disable" if rs.disable_ssl else "require",
                                      "application_name": "prequel_dagster"}, "pool_pre_ping": True}
    if source.vendor == "snowflake":
        sf = source.snowflake
        assert sf is not None
        account = sf.host.removesuffix(".snowflakecomputing.com")
        query = {k: v for k, v in {"warehouse": sf.warehouse, "role": sf.role}.items() if v}
        connect_args: dict[str, Any] = {"login_timeout": sf.connection_timeout_in_seconds,
                                        "application": "prequel_dagster"}
        password = None
        if sf.auth_method == "password_auth" and sf.password_auth:
            password = sf.password_auth.password.reveal()
        elif sf.public_key_auth and sf.public_key_auth.private_key:
            from cryptography.hazmat.primitives import serialization

            passphrase = sf.public_key_auth.private_key_passphrase
            key = serialization.load_pem_private_key(
                sf.public_key_auth.private_key.reveal().encode(),
                password=passphrase.reveal().encode() if passphrase else None)
            connect_args["private_key"] = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption())
        else:
            raise SourceError(f"{where}: snowflake needs public_key_auth.private_key or password_auth")
        database = f"{sf.database}/{sf.schema_}" if sf.schema_ else sf.database
        url = sa.URL.create("snowflake", username=sf.username, password=password, host=account, database=database,
                            query=query)
        return url, {"connect_args": connect_args}
    if source.vendor == "bigquery":
        bq = source.bigquery
        assert bq is not None
        kwargs: dict[str, Any] = {}
        if bq.auth_method == "gcp_service_account_key" and bq.gcp_service_account_key:
            kwargs["credentials_info"] = json.loads(bq.gcp_service_account_key.service_account_key.reveal())
        if bq.region:
            kwargs["location"] = bq.region
        return f"bigquery://{bq.project_id}", kwargs
    raise SourceError(f"{where}: vendor '{source.vendor}' is not a SQL source")


def make_engine(source: Source, config: PrequelConfig) -> Engine:
    """A SQLAlchemy engine for a SQL source; secrets are revealed here and nowhere earlier."""
    try:
        url, kwargs = engine_spec(source, config)
        return sa.create_engine(url, **kwargs)
    except MissingEnvironmentVariable as exc:
        raise SourceError(f"source '{source.id}': {exc}") from None
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        extra = VENDOR_EXTRAS.get(source.vendor, source.vendor)
        raise SourceError(f"source '{source.id}': the {source.vendor} driver is not installed ({exc}); "
                          f"pip install 'prequel_dagster[{extra}]'") from None


def select_changed(table: sa.Table, cursor_column: str | None, lower_bound: Any,
                   dialect_name: str = "") -> sa.Select:
    """``SELECT *`` of a table, with ``cursor_column >= :bound`` when incremental (a bound parameter)."""
    stmt = sa.select(table)
    if lower_bound is not None and cursor_column:
        column = table.c[cursor_column]
        if dialect_name == "sqlite" and isinstance(lower_bound, dt.datetime):
            # SQLite keeps timestamps as text: both sides normalised
            stmt = stmt.where(sa.func.datetime(column) >= sa.func.datetime(lower_bound.strftime("%Y-%m-%d %H:%M:%S")))
        else:
            stmt = stmt.where(column >= lower_bound)
    return stmt


def select_query(dialect: sa.engine.Dialect, query: str, cursor_column: str | None, lower_bound: Any) -> sa.TextClause:
    """The provider's own query wrapped as a subquery, with the cursor condition as a bound parameter."""
    text = f"SELECT * FROM ({query.strip().rstrip(';')}) AS prequel_source"
    if lower_bound is None or not cursor_column:
        return sa.text(text)
    text += f" WHERE {dialect.identifier_preparer.quote(cursor_column)} >= :prequel_lower_bound"
    return sa.text(text).bindparams(prequel_lower_bound=lower_bound)


def arrow_type(sa_type: sa.types.TypeEngine[Any]) -> tuple[pa.DataType, Callable[[Any], Any] | None]:
    """Arrow type for a column, and a per-value converter when the driver's Python type needs one."""
    t = sa_type
    if isinstance(t, sa.Boolean):
        return pa.bool_(), None
    if isinstance(t, sa.Integer):
        return pa.int64(), None
    if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float):
        if t.precision is not None and t.precision <= 38:
            return pa.decimal128(t.precision, t.scale or 0), None
        return pa.string(), lambda v: None if v is None else str(v)  # unbounded numeric: exact as text
    if isinstance(t, sa.Float):
        return pa.float64(), None
    if isinstance(t, sa.DateTime):
        return (pa.timestamp("us", "UTC") if t.timezone else pa.timestamp("us")), None
    if isinstance(t, sa.Date):
        return pa.date32(), None
    if isinstance(t, sa.Time):
        return pa.time64("us"), None
    if isinstance(t, sa.Interval):
        return pa.duration("us"), None
    if isinstance(t, sa.LargeBinary) or isinstance(t, sa.types._Binary):
        return pa.binary(), None
    if isinstance(t, sa.JSON):
        return pa.string(), lambda v: None if v is None else (v if isinstance(v, str) else json.dumps(v))
    if isinstance(t, sa.Uuid):
        return pa.string(), lambda v: None if v is None else str(v)
    if isinstance(t, sa.ARRAY):
        inner, conv = arrow_type(t.item_type)
        return pa.list_(inner), (lambda v: None if v is None else [conv(x) for x in v]) if conv else None
    return pa.string(), lambda v: None if v is None else (v if isinstance(v, str) else str(v))


def _infer_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class SqlReader:
    """Reads one table or query dataset as Arrow batches."""

    def __init__(self, source: Source, dataset: Dataset, config: PrequelConfig, engine: Engine | None = None):
        self.source = source
        self.dataset = dataset
        self._owns_engine = engine is None
        self.engine = engine or make_engine(source, config)

    def _table(self, conn: sa.Connection) -> sa.Table:
        tm = self.dataset.table
        assert tm is not None
        try:
            return sa.Table(tm.source_table_name, sa.MetaData(), schema=tm.source_table_namespace, autoload_with=conn)
        except NoSuchTableError:
            name = f"{tm.source_table_namespace}.{tm.source_table_name}" if tm.source_table_namespace else tm.source_table_name
            raise SourceError(
                f"dataset '{self.dataset.id}': table {name} not found in source '{self.source.id}'; "
                "check table.source_table_namespace and table.source_table_name"
            ) from None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        """A connection whose failures become a SourceError naming the source and the fix."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except SourceError:
            raise
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            raise describe_failure(self.source, self.dataset, exc) from None
        finally:
            if self._owns_engine:
                self.engine.dispose()  # no idle connections left on the provider's database

    def read(self, lower_bound: Any = None, *, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Rows with ``cursor_column >= lower_bound`` (all rows when it is None), as record batches."""
        with self._connection() as conn:
            yield from self._read(conn, lower_bound, batch_rows)

    def read_keys(self, *, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Array]:
        """Every primary key at the source (for hard-delete detection), in batches."""
        key = self.dataset.primary_key
        with self._connection() as conn:
            if self.dataset.method == "table":
                table = self._table(conn)
                check_columns(self.source, self.dataset, [c.name for c in table.columns])
                stmt = sa.select(table.c[key])
                typ, conv = arrow_type(table.c[key].type)
            else:
                query = self.dataset.sql.query.strip().rstrip(";")  # type: ignore[union-attr]
                stmt = sa.text(f"SELECT {conn.dialect.identifier_preparer.quote(key)} FROM ({query}) AS prequel_source")
                typ, conv = None, _infer_value
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
            for rows in result.partitions(batch_rows):
                values = [r[0] for r in rows]
                yield pa.array([conv(v) for v in values] if conv else values, type=typ)

    def _read(self, conn: sa.Connection, lower_bound: Any, batch_rows: int) -> Iterator[pa.RecordBatch]:
        cursor_col = self.dataset.cursor_column
        if self.dataset.method == "table":
            table = self._table(conn)
            names = [c.name for c in table.columns]
            check_columns(self.source, self.dataset, names)
            stmt = select_changed(table, cursor_col, lower_bound, conn.dialect.name)
            types = [arrow_type(c.type) for c in table.columns]
        else:
            stmt = select_query(conn.dialect, self.dataset.sql.query, cursor_col, lower_bound)  # type: ignore[union-attr]
            types, names = None, None

        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
        if names is None:
            names = list(result.keys())
            check_columns(self.source, self.dataset, names)
        schema = pa.schema([pa.field(n, t[0]) for n, t in zip(names, types)]) if types else None
        for rows in result.partitions(batch_rows):
            columns = list(zip(*rows)) if rows else [[] for _ in names]
            if types is not None:
                arrays = [
                    pa.array([conv(v) for v in col] if conv else col, type=typ)
                    for col, (typ, conv) in zip(columns, types)
                ]
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
            else:
                arrays = [pa.array([_infer_value(v) for v in col]) for col in columns]
                batch = pa.RecordBatch.from_arrays(arrays, names=names)
                if schema is None:
                    schema = pa.schema(
                        [pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type) for f in batch.schema]
                    )
                yield batch.cast(schema)
