"""PostgreSQL through ADBC: libpq's ``COPY ... (FORMAT binary)`` decoded to Arrow in C, no row in Python.

Types stay exact: ``numeric(p,s)`` becomes ``decimal128(p, s)`` (sent as the server's text and
parsed by Arrow; unbounded numerics stay exact text), ``timestamptz`` UTC timestamps,
``jsonb``/``json`` JSON text, arrays lists, ``bytea`` binary. Types Arrow has no faithful form for
(uuid, money, interval, inet, xml, ...) are read as their PostgreSQL text. Identifiers are quoted
and the cursor bound is a quoted literal (psycopg's quoting): a literal keeps the query on the COPY
path, which bound parameters would leave. Large full reads run on two connections (see ``read``);
``use_ssh_tunnel`` routes every connection through an SSH tunnel (``ssh``). The source's ``schema`` is
where ``table`` datasets without a ``source_table_namespace`` are read, and the ``search_path`` of
``sql`` datasets (set at login).
"""

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ..config.errors import SourceError
from ..config.models import Dataset, PrequelConfig, Source
from ..config.secrets import MissingEnvironmentVariable
from .errors import check_columns, describe_failure
from .read_ahead import interleave

if TYPE_CHECKING:
    from .window import Window

# PostgreSQL types read as their text (``::text``): Arrow has no faithful type for them.
_TEXT_CAST_TYPES = {
    "uuid",
    "money",
    "interval",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "xml",
    "tsvector",
    "bit",
    "varbit",
    "point",
    "line",
    "lseg",
    "box",
    "path",
    "polygon",
    "circle",
    "pg_lsn",
    "tsquery",
}
BATCH_BYTES_HINT = 8 * 1024 * 1024
PARALLEL_READS = 2  # connections for a full read of a large table
MIN_PAGES_PER_READ = 4096  # 32 MB of table per connection, or one connection


def _pg_type(field: pa.Field) -> str:
    meta = field.metadata or {}
    return (meta.get(b"POSTGRESQL:type") or b"").decode()


def _numeric_type(field: pa.Field) -> pa.DataType:
    """``numeric(p, s)`` from the column's typmod; unbounded or wider than 38 digits stays text."""
    typmod = int((field.metadata or {}).get(b"POSTGRESQL:typmod", b"-1"))
    if typmod < 4:
        return pa.string()
    precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
    return pa.decimal128(precision, scale) if 0 < precision <= 38 else pa.string()


class PostgresEndpoint:
    """Where and how to connect to a PostgreSQL source: the libpq connection string, through the
    source's SSH tunnel while :meth:`open` (reads and test-source share it)."""

    def __init__(self, source: Source):
        self.source = source
        pg = source.postgres
        assert pg is not None
        if pg.use_ssh_tunnel and pg.ssh_tunnel is None:
            raise SourceError(f"source '{source.id}': use_ssh_tunnel is true but the ssh_tunnel block is missing")
        self.pg = pg
        try:
            self._password = pg.password_auth.password.reveal()
        except MissingEnvironmentVariable as exc:
            raise SourceError(f"source '{source.id}': {exc}") from None

    def _conninfo(self, host: str, port: int) -> str:
        """libpq keyword/value connection string, every value quoted by psycopg: a host, user, password
        or database holding ``@ / ? # : ' =`` or spaces reaches the server as configured."""
        pg = self.pg
        options = {}
        if pg.schema_:  # the search_path of sql datasets, set at login (libpq's options: spaces and \ escaped)
            path = sql.Identifier(pg.schema_).as_string(None).replace("\\", "\\\\").replace(" ", "\\ ")
            options["options"] = f"-c search_path={path}"
        return make_conninfo(
            "",
            host=host,
            port=port,
            user=pg.password_auth.username,
            password=self._password,
            dbname=pg.database,
            sslmode="disable" if pg.disable_ssl else "prefer",
            connect_timeout=pg.connection_timeout_in_seconds,
            application_name="prequel_dagster",
            **options,
        )

    @contextlib.contextmanager
    def open(self) -> Iterator[str]:
        """The connection string: straight to the database, or through the SSH tunnel for this read."""
        pg = self.pg
        if not pg.use_ssh_tunnel:
            yield self._conninfo(pg.host, pg.port)
            return
        from .ssh import connect, tunnel

        t = pg.ssh_tunnel
        assert t is not None
        try:
            key = t.ssh_private_key.reveal() if t.ssh_private_key else None
        except MissingEnvironmentVariable as exc:
            raise SourceError(f"source '{self.source.id}': {exc}") from None
        client = connect(
            f"source '{self.source.id}' (ssh_tunnel)",
            host=t.ssh_tunnel_host,
            port=t.ssh_tunnel_port,
            username=t.ssh_tunnel_username,
            private_key=key,
            timeout=pg.connection_timeout_in_seconds,
        )
        try:
            with tunnel(client, pg.host, pg.port) as local_port:
                yield self._conninfo("127.0.0.1", local_port)
        finally:
            client.close()


class PostgresReader:
    """Reads one table or query dataset of a PostgreSQL source as Arrow record batches."""

    def __init__(self, source: Source, dataset: Dataset, config: PrequelConfig):
        self.dataset = dataset
        self.keys_unique = False  # set by read() before the first batch: the key is a unique index's only column
        self.endpoint = PostgresEndpoint(source)
        self.source, self.pg = source, self.endpoint.pg

    def _endpoint(self) -> contextlib.AbstractContextManager[str]:
        return self.endpoint.open()

    def _relation(self) -> sql.Composable:
        if self.dataset.method == "table":
            tm = self.dataset.table
            assert tm is not None
            namespace = tm.source_table_namespace or self.pg.schema_  # the source's schema is the default
            return (
                sql.Identifier(namespace, tm.source_table_name) if namespace else sql.Identifier(tm.source_table_name)
            )
        query = self.dataset.sql.query.strip().rstrip(";")  # type: ignore[union-attr]
        return sql.SQL("({}) AS prequel_source").format(sql.SQL(query))  # the provider's own query, as configured

    def query(self, probe: pa.Schema, lower_bound: Any, window: "Window | None" = None) -> str:
        """The SELECT for one read: text casts where Arrow has no faithful type, the cursor bound (or a
        time window's two bounds, in the cursor column's own type)."""
        columns: list[sql.Composable] = []
        for field in probe:
            ident = sql.Identifier(field.name)
            if _pg_type(field) in _TEXT_CAST_TYPES or _pg_type(field) == "numeric" or pa.types.is_interval(field.type):
                # numerics as text: the server's formatting plus Arrow's decimal parse cost half the
                # client CPU of decoding PostgreSQL's binary numeric
                columns.append(sql.SQL("{}::text AS {}").format(ident, ident))
            else:
                columns.append(ident)
        stmt = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(columns), self._relation())
        cursor_col = self.dataset.cursor_column
        if window is not None and cursor_col:
            field = self.arrow_schema(probe).field(cursor_col)
            where = (
                f"dataset '{self.dataset.id}': created_at_column '{cursor_col}' ({_pg_type(probe.field(cursor_col))})"
            )
            low, high = window.bounds_for(field.type, where)
            stmt += sql.SQL(" WHERE {} >= {} AND {} < {}").format(
                sql.Identifier(cursor_col), sql.Literal(low), sql.Identifier(cursor_col), sql.Literal(high)
            )
        elif lower_bound is not None and cursor_col:
            stmt += sql.SQL(" WHERE {} >= {}").format(sql.Identifier(cursor_col), sql.Literal(lower_bound))
        return stmt.as_string(None)

    def cursor_after_read(self) -> None:
        return None  # the engine takes the largest cursor-column value

    def close(self) -> None:
        pass  # each read opens and closes its own connections (and tunnel)

    def read(self, lower_bound: Any = None, *, window: "Window | None" = None) -> Iterator[pa.RecordBatch]:
        """Rows with ``cursor_column >= lower_bound`` (all rows when it is None), or with it in ``window``,
        as record batches.

        A full read of a large table runs as PARALLEL_READS range scans (by physical page, like
        ``pg_dump -j``) on as many connections sharing one snapshot, so they see one consistent
        table and the database's COPY work spreads over its cores; batches come in any order.
        """
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as adbc

        try:
            with contextlib.ExitStack() as stack:
                conninfo = stack.enter_context(self._endpoint())
                cursor = self._open(adbc, conninfo, stack)
                parallel = (
                    self.dataset.method == "table" and lower_bound is None and window is None and PARALLEL_READS > 1
                )
                if parallel:  # must come first in the transaction, for the snapshot to be exported
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(self._relation()).as_string(None))
                probe = cursor.fetch_arrow_table().schema
                if len(set(probe.names)) != len(probe.names):
                    raise SourceError(
                        f"dataset '{self.dataset.id}': the source returns duplicate column names "
                        f"({', '.join(probe.names)}); alias them in the query"
                    )
                check_columns(self.source, self.dataset, probe.names)
                self.keys_unique = self._key_is_unique(cursor)
                query, schema = self.query(probe, lower_bound, window), self.arrow_schema(probe)
                ranges = self._page_ranges(cursor) if parallel else []
                if len(ranges) < 2:
                    yield from self._batches(cursor, query, schema)
                    return
                cursor.execute("SELECT pg_export_snapshot()")
                snapshot = cursor.fetchone()[0]
                cursors = [cursor]
                for _ in ranges[1:]:
                    other = self._open(adbc, conninfo, stack)
                    other.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)).as_string(None))
                    cursors.append(other)
                streams = [self._batches(c, query + " WHERE " + where, schema) for c, where in zip(cursors, ranges)]
                yield from interleave(streams, depth=1)
        except SourceError:
            raise
        except (adbc_driver_manager.Error, OSError) as exc:
            raise describe_failure(self.source, self.dataset, exc) from None

    def read_keys(self) -> Iterator[pa.Array]:
        """Every primary key at the source (for hard-delete detection), in batches."""
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as adbc

        key = sql.Identifier(self.dataset.primary_key)
        try:
            with contextlib.ExitStack() as stack:
                cursor = self._open(adbc, stack.enter_context(self._endpoint()), stack)
                cursor.execute(sql.SQL("SELECT {} FROM {}").format(key, self._relation()).as_string(None))
                for batch in cursor.fetch_record_batch():
                    yield batch.column(0)
        except (adbc_driver_manager.Error, OSError) as exc:
            raise describe_failure(self.source, self.dataset, exc) from None

    def _open(self, adbc: Any, conninfo: str, stack: contextlib.ExitStack) -> Any:
        conn = stack.enter_context(adbc.connect(conninfo))
        cursor = stack.enter_context(conn.cursor())  # closed before its connection
        cursor.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES_HINT)})
        return cursor

    def _batches(self, cursor: Any, query: str, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        cursor.execute(query)
        reader = cursor.fetch_record_batch()
        for batch in reader:
            if batch.num_rows:
                yield self.normalise(batch, schema)

    def _page_ranges(self, cursor: Any) -> list[str]:
        """``ctid`` conditions splitting the table's pages into PARALLEL_READS ranges (none if small)."""
        cursor.execute(
            sql.SQL("SELECT pg_relation_size({}::regclass) / current_setting('block_size')::int")
            .format(sql.Literal(self._relation().as_string(None)))
            .as_string(None)
        )
        pages = int(cursor.fetchone()[0])
        if pages < MIN_PAGES_PER_READ * PARALLEL_READS:
            return []
        bounds = [pages * i // PARALLEL_READS for i in range(PARALLEL_READS + 1)]
        ranges = [f"ctid >= '({lo},0)'::tid AND ctid < '({hi},0)'::tid" for lo, hi in zip(bounds, bounds[1:-1])]
        return ranges + [f"ctid >= '({bounds[-2]},0)'::tid"]  # the last range is open: pages added meanwhile

    def _key_is_unique(self, cursor: Any) -> bool:
        """Whether a unique index (a primary key, say) covers exactly the dataset's key column."""
        if self.dataset.method != "table":
            return False
        cursor.execute(
            sql.SQL(
                "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                "WHERE i.indrelid = {}::regclass AND i.indisunique AND i.indisvalid AND i.indpred IS NULL "
                "AND i.indnatts = 1 AND a.attname = {}"
            )
            .format(sql.Literal(self._relation().as_string(None)), sql.Literal(self.dataset.primary_key))
            .as_string(None)
        )
        return bool(cursor.fetchone()[0])

    @staticmethod
    def arrow_schema(probe: pa.Schema) -> pa.Schema:
        """The lake schema for a probed result: numerics as decimals, the text-cast types as text,
        other extension types by their plain storage."""
        fields = []
        for field in probe:
            t = field.type
            if _pg_type(field) == "numeric":
                t = _numeric_type(field)
            elif _pg_type(field) in _TEXT_CAST_TYPES or pa.types.is_interval(t):
                t = pa.string()
            elif isinstance(t, pa.BaseExtensionType):
                t = t.storage_type
            fields.append(pa.field(field.name, t, metadata={b"source_type": _pg_type(field).encode()}))
        return pa.schema(fields)

    @staticmethod
    def normalise(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
        arrays = []
        for column, field in zip(batch.columns, schema):
            if isinstance(column.type, pa.BaseExtensionType):
                column = column.storage
            if column.type != field.type:
                column = column.cast(field.type)
            arrays.append(column)
        return pa.RecordBatch.from_arrays(arrays, schema=schema)
