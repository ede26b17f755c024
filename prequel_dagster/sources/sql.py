"""SQL sources through SQLAlchemy: reflect the table, read changed rows, yield Arrow record batches.

Identifiers are quoted by the dialect, values are bound parameters: nothing is pasted into SQL.
"""

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
from .errors import describe_failure

BATCH_ROWS = 50_000


def make_engine(source: Source, config: PrequelConfig) -> Engine:
    """A SQLAlchemy engine for a SQL source; secrets are revealed here and nowhere earlier."""
    try:
        if source.vendor == "sqlite":
            path = config.resolve_path(source.sqlite.path)  # type: ignore[union-attr]
            if not path.exists():
                raise SourceError(f"source '{source.id}': SQLite file {path} does not exist; check sqlite.path")
            return sa.create_engine(f"sqlite:///{path}")
        if source.vendor == "postgres":
            pg = source.postgres
            assert pg is not None
            if pg.use_ssh_tunnel:
                raise SourceError(f"source '{source.id}': use_ssh_tunnel is not supported yet")
            url = sa.URL.create(
                "postgresql+psycopg",
                username=pg.password_auth.username,
                password=pg.password_auth.password.reveal(),
                host=pg.host,
                port=pg.port,
                database=pg.database,
            )
            connect_args = {
                "connect_timeout": pg.connection_timeout_in_seconds,
                "sslmode": "disable" if pg.disable_ssl else "prefer",
                "application_name": "prequel_dagster",
            }
            return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
    except MissingEnvironmentVariable as exc:
        raise SourceError(f"source '{source.id}': {exc}") from None
    raise SourceError(
        f"source '{source.id}': vendor '{source.vendor}' is not supported yet "
        "(supported now: postgres, sqlite); the config is valid and will work once the vendor lands"
    )


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


def _at_least(conn: sa.Connection, column: sa.ColumnElement[Any], bound: Any) -> sa.ColumnElement[bool]:
    """``column >= bound``; SQLite keeps timestamps as text, so both sides are normalised there."""
    if conn.dialect.name == "sqlite" and isinstance(bound, dt.datetime):
        return sa.func.datetime(column) >= sa.func.datetime(bound.strftime("%Y-%m-%d %H:%M:%S"))
    return column >= bound


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

    def read(self, lower_bound: Any = None, *, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Rows with ``cursor_column >= lower_bound`` (all rows when it is None), as record batches."""
        try:
            with self.engine.connect() as conn:
                yield from self._read(conn, lower_bound, batch_rows)
        except SourceError:
            raise
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            raise describe_failure(self.source, self.dataset, exc) from None
        finally:
            if self._owns_engine:
                self.engine.dispose()  # no idle connections left on the provider's database

    def read_keys(self, *, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Array]:
        """Every primary key at the source (for hard-delete detection), in batches."""
        key = self.dataset.primary_key
        try:
            with self.engine.connect() as conn:
                if self.dataset.method == "table":
                    table = self._table(conn)
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
        except SourceError:
            raise
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            raise describe_failure(self.source, self.dataset, exc) from None
        finally:
            if self._owns_engine:
                self.engine.dispose()

    def _read(self, conn: sa.Connection, lower_bound: Any, batch_rows: int) -> Iterator[pa.RecordBatch]:
        cursor_col = self.dataset.cursor_column
        if self.dataset.method == "table":
            table = self._table(conn)
            stmt = sa.select(table)
            if lower_bound is not None and cursor_col:
                stmt = stmt.where(_at_least(conn, table.c[cursor_col], lower_bound))
            types = [arrow_type(c.type) for c in table.columns]
            names = [c.name for c in table.columns]
        else:
            prep = conn.dialect.identifier_preparer
            query = self.dataset.sql.query.strip().rstrip(";")  # type: ignore[union-attr]
            text = f"SELECT * FROM ({query}) AS prequel_source"
            params: dict[str, Any] = {}
            if lower_bound is not None and cursor_col:
                text += f" WHERE {prep.quote(cursor_col)} >= :prequel_lower_bound"
                params["prequel_lower_bound"] = lower_bound
            stmt, types, names = sa.text(text).bindparams(**params), None, None  # type: ignore[assignment]

        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
        if names is None:
            names = list(result.keys())
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
