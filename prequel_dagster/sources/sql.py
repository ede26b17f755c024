"""SQL sources through SQLAlchemy: reflect the table, read changed rows, yield Arrow record batches.

Identifiers are quoted by the dialect, values are bound parameters: nothing is pasted into SQL.
"""

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, NoSuchTableError, SQLAlchemyError

from ..config.errors import PrequelError, SourceError
from ..config.models import Dataset, PrequelConfig, Source
from ..config.secrets import MissingEnvironmentVariable, redact, register_secret_value
from .errors import check_columns, describe_failure

if TYPE_CHECKING:
    from .window import Window

BATCH_ROWS = 50_000


# The SQLAlchemy dialect each vendor needs, and the extra that installs it.
VENDOR_EXTRAS = {
    "redshift": "redshift",
    "redshift_serverless": "redshift",
    "snowflake": "snowflake",
    "bigquery": "bigquery",
}


def engine_spec(source: Source, config: PrequelConfig) -> tuple[sa.URL | str, dict[str, Any]]:
    """The URL and ``create_engine`` keyword arguments for a SQL source (secrets revealed here).

    Connection settings are honoured per vendor: ``disable_ssl`` (sslmode),
    ``connection_timeout_in_seconds`` (connect or login timeout), Snowflake's ``port``; Redshift's IAM
    auth logs in with a temporary password (:func:`redshift_iam_login`).
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
        url = sa.URL.create(
            "postgresql+psycopg",
            username=pg.password_auth.username,
            password=pg.password_auth.password.reveal(),
            host=pg.host,
            port=pg.port,
            database=pg.database,
        )
        return url, {
            "connect_args": {
                "connect_timeout": pg.connection_timeout_in_seconds,
                "sslmode": "disable" if pg.disable_ssl else "prefer",
                "application_name": "prequel_dagster",
            },
            "pool_pre_ping": True,
        }
    if source.vendor in ("redshift", "redshift_serverless"):
        rs = source.redshift or source.redshift_serverless
        assert rs is not None
        if rs.use_ssh_tunnel:  # (refused when the config loads)
            raise SourceError(f"{where}: use_ssh_tunnel is supported for postgres sources only so far")
        if rs.auth_method == "password_auth":
            if rs.password_auth is None:  # (refused when the config loads)
                raise SourceError(f"{where}: auth_method password_auth needs the password_auth block")
            user, password = rs.password_auth.username, rs.password_auth.password.reveal()
        else:
            user, password = redshift_iam_login(source)
        url = sa.URL.create(
            "redshift+psycopg2", username=user, password=password, host=rs.host, port=rs.port, database=rs.database
        )
        return url, {
            "connect_args": {
                "connect_timeout": rs.connection_timeout_in_seconds,
                "sslmode": "disable" if rs.disable_ssl else "require",
                "application_name": "prequel_dagster",
            },
            "pool_pre_ping": True,
        }
    if source.vendor == "snowflake":
        sf = source.snowflake
        assert sf is not None
        account = sf.host.removesuffix(".snowflakecomputing.com")
        query = {k: v for k, v in {"warehouse": sf.warehouse, "role": sf.role}.items() if v}
        connect_args: dict[str, Any] = {
            "login_timeout": sf.connection_timeout_in_seconds,
            "application": "prequel_dagster",
        }
        sf_password: str | None = None
        if sf.auth_method == "password_auth" and sf.password_auth:
            sf_password = sf.password_auth.password.reveal()
        elif sf.public_key_auth and sf.public_key_auth.private_key:
            from cryptography.hazmat.primitives import serialization

            passphrase = sf.public_key_auth.private_key_passphrase
            key = serialization.load_pem_private_key(
                sf.public_key_auth.private_key.reveal().encode(),
                password=passphrase.reveal().encode() if passphrase else None,
            )
            connect_args["private_key"] = key.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        else:
            raise SourceError(f"{where}: snowflake needs public_key_auth.private_key or password_auth")
        database = f"{sf.database}/{sf.schema_}" if sf.schema_ else sf.database
        if sf.port == 443:  # the dialect derives the account and the https host from the account identifier
            url = sa.URL.create(
                "snowflake", username=sf.username, password=sf_password, host=account, database=database, query=query
            )
        else:  # with a port, the dialect takes the host as given: the full host, and the account beside it
            labels = account.split(".")
            connect_args["account"] = labels[0][: labels[0].rfind("-")] if labels[1:2] == ["global"] else labels[0]
            url = sa.URL.create(
                "snowflake",
                username=sf.username,
                password=sf_password,
                host=f"{account}.snowflakecomputing.com",
                port=sf.port,
                database=database,
                query=query,
            )
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


IAM_CREDENTIALS_SECONDS = 3600
"""How long Redshift's temporary passwords last (the most both APIs allow): long enough to log in; a
session, once open, outlives its password."""


def _aws_client(service: str, region: str, credentials: dict[str, str | None], timeout: int) -> Any:
    """A boto3 client for ``service`` in ``region`` on these credentials (none: this machine's default chain)."""
    import boto3
    import botocore.config

    return boto3.client(
        service,
        region_name=region,
        aws_access_key_id=credentials.get("access_key"),
        aws_secret_access_key=credentials.get("secret_key"),
        aws_session_token=credentials.get("session_token"),
        config=botocore.config.Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 3, "mode": "standard"}
        ),
    )


def redshift_iam_login(source: Source) -> tuple[str, str]:
    """The temporary database user and password of a Redshift source with IAM auth.

    The IAM identity is an IAM user's ``aws_access_keys`` or the assumed ``aws_iam_role`` (assumed with
    this machine's AWS credentials). A provisioned cluster is asked for ``username``'s password with
    GetClusterCredentials (``cluster``, ``region``); Redshift Serverless for the identity's own login
    with GetCredentials (``workgroup``, ``region``). The password is masked in every message from here on.
    """
    import botocore.exceptions

    from ..stores.s3 import s3_credentials

    rs = source.redshift or source.redshift_serverless
    assert rs is not None
    where = f"source '{source.id}'"
    serverless = source.vendor == "redshift_serverless"
    region, timeout = rs.aws_region, rs.connection_timeout_in_seconds
    if not region or not (rs.workgroup_name if serverless else rs.cluster_identifier and rs.username):
        raise SourceError(
            f"{where}: auth_method {rs.auth_method} needs the "  # (refused when the config loads)
            + ("workgroup and region" if serverless else "cluster, region and username")
        )
    try:
        if rs.auth_method == "aws_access_keys":
            assert rs.aws_access_keys is not None
            identity: dict[str, str | None] = {
                "access_key": rs.aws_access_keys.access_id,
                "secret_key": rs.aws_access_keys.secret_key.reveal(),
            }
        else:
            identity = s3_credentials(rs, where, region=region, sts=_aws_client("sts", region, {}, timeout))
    except MissingEnvironmentVariable as exc:
        raise SourceError(f"{where}: {exc}") from None
    except PrequelError as exc:
        raise SourceError(str(exc)) from None
    target = f"workgroup '{rs.workgroup_name}'" if serverless else f"cluster '{rs.cluster_identifier}'"
    try:
        if serverless:
            client = _aws_client("redshift-serverless", region, identity, timeout)
            answer = client.get_credentials(
                workgroupName=rs.workgroup_name, dbName=rs.database, durationSeconds=IAM_CREDENTIALS_SECONDS
            )
            user, password = answer["dbUser"], answer["dbPassword"]
        else:
            client = _aws_client("redshift", region, identity, timeout)
            answer = client.get_cluster_credentials(
                DbUser=rs.username,
                DbName=rs.database,
                ClusterIdentifier=rs.cluster_identifier,
                DurationSeconds=IAM_CREDENTIALS_SECONDS,
                AutoCreate=False,
            )
            user, password = answer["DbUser"], answer["DbPassword"]
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        detail = redact(str(exc.response.get("Error", {}).get("Message", "")) or str(exc)).splitlines()[0][:300]
        raise SourceError(
            f"{where}: cannot get a temporary Redshift password for {target} in {region} "
            f"({code}: {detail}) — {_iam_fix(rs, code, serverless)}"
        ) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise SourceError(
            f"{where}: cannot reach Redshift's API in region {region} ({type(exc).__name__}) — "
            "check region, and that this machine can reach AWS"
        ) from None
    register_secret_value(password)
    return user, password


def _iam_fix(rs: Any, code: str, serverless: bool) -> str:
    identity = (
        "the IAM user of aws_access_keys"
        if rs.auth_method == "aws_access_keys"
        else f"the role {rs.aws_iam_role.aws_iam_role_arn}"
    )
    if code in ("ClusterNotFound", "ClusterNotFoundFault", "ResourceNotFoundException"):
        return "check workgroup and region" if serverless else "check cluster (the cluster identifier) and region"
    if code in ("InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "AuthFailure"):
        return "AWS refused the keys: check aws_access_keys.access_id and secret_key"
    if code in (
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnsupportedOperation",
        "UnsupportedOperationFault",
    ):
        if serverless:
            return (
                f"allow {identity} redshift-serverless:GetCredentials on the workgroup, and map it to a "
                "database user with SELECT on the dataset's tables"
            )
        return (
            f"allow {identity} redshift:GetClusterCredentials on dbuser:{rs.cluster_identifier}/{rs.username} "
            f"and dbname:{rs.cluster_identifier}/{rs.database}"
        )
    return "check cluster or workgroup, region, username and the IAM identity's permissions"


def default_schema(source: Source) -> str | None:
    """The ``schema`` of a postgres or redshift source: where ``table`` datasets without a namespace are
    read, and the ``search_path`` of ``sql`` datasets' queries. (Snowflake takes its schema in the URL.)"""
    if source.vendor in ("postgres", "redshift", "redshift_serverless"):
        return source.settings.schema_ or None  # type: ignore[attr-defined]
    return None


def search_path_statement(dialect: sa.engine.Dialect, schema: str) -> str:
    """``SET search_path`` to only this schema (then pg_catalog, always searched), quoted by the dialect."""
    return f"SET search_path TO {dialect.identifier_preparer.quote(schema)}"


def _use_search_path(engine: Engine, schema: str) -> None:
    statement = search_path_statement(engine.dialect, schema)

    @sa.event.listens_for(engine, "connect", insert=True)
    def _set(dbapi_connection: Any, _record: Any) -> None:
        # outside a transaction, so the pool's rollback on return does not undo it (SQLAlchemy's recipe)
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement)
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit


def make_engine(source: Source, config: PrequelConfig) -> Engine:
    """A SQLAlchemy engine for a SQL source; secrets are revealed here and nowhere earlier."""
    try:
        url, kwargs = engine_spec(source, config)
        engine = sa.create_engine(url, **kwargs)
        schema = default_schema(source)
        if schema:
            _use_search_path(engine, schema)
        return engine
    except MissingEnvironmentVariable as exc:
        raise SourceError(f"source '{source.id}': {exc}") from None
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        extra = VENDOR_EXTRAS.get(source.vendor, source.vendor)
        raise SourceError(
            f"source '{source.id}': the {source.vendor} driver is not installed ({exc}); "
            f"pip install 'prequel_dagster[{extra}]'"
        ) from None


def select_changed(
    table: sa.Table,
    cursor_column: str | None,
    lower_bound: Any,
    dialect_name: str = "",
    window: "Window | None" = None,
    where: str = "",
) -> sa.Select:
    """``SELECT *`` of a table, with ``cursor_column >= :bound`` when incremental (a bound parameter),
    or ``:start <= cursor_column < :end`` for a time window (its bounds in the column's type)."""
    stmt = sa.select(table)
    if window is not None and cursor_column:
        column = table.c[cursor_column]
        low, high = window.bounds_for(arrow_type(column.type)[0], where or f"column '{cursor_column}'")
        return stmt.where(*_window_conditions(column, low, high, dialect_name))
    if lower_bound is not None and cursor_column:
        column = table.c[cursor_column]
        if dialect_name == "sqlite" and isinstance(lower_bound, dt.datetime):
            # SQLite keeps timestamps as text: both sides normalised
            stmt = stmt.where(sa.func.datetime(column) >= sa.func.datetime(lower_bound.strftime("%Y-%m-%d %H:%M:%S")))
        else:
            stmt = stmt.where(column >= lower_bound)
    return stmt


def _utc_text(moment: dt.datetime) -> str:
    """A bound as SQLite's ``datetime()`` text: UTC wall time (a naive bound is UTC already)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _window_conditions(column: Any, low: Any, high: Any, dialect_name: str) -> list[Any]:
    """``low <= column < high`` as bound parameters; SQLite keeps timestamps as text, so both sides are
    normalised by its ``datetime()`` (the bounds as UTC wall time)."""
    if dialect_name == "sqlite" and isinstance(low, dt.datetime):
        text = [sa.func.datetime(_utc_text(b)) for b in (low, high)]
        return [sa.func.datetime(column) >= text[0], sa.func.datetime(column) < text[1]]
    return [column >= low, column < high]


def select_query(
    dialect: sa.engine.Dialect,
    query: str,
    cursor_column: str | None,
    lower_bound: Any,
    window: "Window | None" = None,
) -> sa.TextClause:
    """The provider's own query wrapped as a subquery, with the cursor condition as a bound parameter
    (or a time window's two bounds: the query's column types are unknown here, so the window's
    instants are bound as they are; the extract keeps only the rows inside it, by their Arrow type)."""
    text = f"SELECT * FROM ({query.strip().rstrip(';')}) AS prequel_source"
    if window is not None and cursor_column:
        column = dialect.identifier_preparer.quote(cursor_column)
        low: Any = window.start
        high: Any = window.end
        if dialect.name == "sqlite":  # timestamps kept as text: both sides normalised (the bounds as UTC)
            column = f"datetime({column})"
            low, high = _utc_text(low), _utc_text(high)
            text += f" WHERE {column} >= datetime(:prequel_window_start) AND {column} < datetime(:prequel_window_end)"
        else:
            text += f" WHERE {column} >= :prequel_window_start AND {column} < :prequel_window_end"
        return sa.text(text).bindparams(prequel_window_start=low, prequel_window_end=high)
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
        namespace = tm.source_table_namespace or default_schema(self.source)
        try:
            return sa.Table(tm.source_table_name, sa.MetaData(), schema=namespace, autoload_with=conn)
        except NoSuchTableError:
            name = f"{namespace}.{tm.source_table_name}" if namespace else tm.source_table_name
            where = "table.source_table_namespace" if tm.source_table_namespace else "the source's schema"
            raise SourceError(
                f"dataset '{self.dataset.id}': table {name} not found in source '{self.source.id}'; "
                f"check {where} and table.source_table_name"
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

    keys_unique = False  # batches are de-duplicated by key

    def cursor_after_read(self) -> None:
        return None  # the engine takes the largest cursor-column value

    def close(self) -> None:
        pass  # read() and read_keys() release their connection as they end

    def read(
        self, lower_bound: Any = None, *, window: "Window | None" = None, batch_rows: int = BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Rows with ``cursor_column >= lower_bound`` (all rows when it is None), or with it in ``window``,
        as record batches."""
        with self._connection() as conn:
            yield from self._read(conn, lower_bound, batch_rows, window)

    def read_keys(self, *, batch_rows: int = BATCH_ROWS) -> Iterator[pa.Array]:
        """Every primary key at the source (for hard-delete detection), in batches."""
        key = self.dataset.primary_key
        with self._connection() as conn:
            if self.dataset.method == "table":
                table = self._table(conn)
                check_columns(self.source, self.dataset, [c.name for c in table.columns])
                stmt: sa.Executable = sa.select(table.c[key])
                typ, conv = arrow_type(table.c[key].type)
            else:
                query = self.dataset.sql.query.strip().rstrip(";")  # type: ignore[union-attr]
                stmt = sa.text(f"SELECT {conn.dialect.identifier_preparer.quote(key)} FROM ({query}) AS prequel_source")
                typ, conv = None, _infer_value
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
            for rows in result.partitions(batch_rows):
                values = [r[0] for r in rows]
                yield pa.array([conv(v) for v in values] if conv else values, type=typ)

    def _read(
        self, conn: sa.Connection, lower_bound: Any, batch_rows: int, window: "Window | None" = None
    ) -> Iterator[pa.RecordBatch]:
        cursor_col = self.dataset.cursor_column
        if self.dataset.method == "table":
            table = self._table(conn)
            names = [c.name for c in table.columns]
            check_columns(self.source, self.dataset, names)
            where = f"dataset '{self.dataset.id}': created_at_column '{cursor_col}'"
            stmt: sa.Executable = select_changed(table, cursor_col, lower_bound, conn.dialect.name, window, where)
            types = [arrow_type(c.type) for c in table.columns]
        else:
            stmt = select_query(conn.dialect, self.dataset.sql.query, cursor_col, lower_bound, window)  # type: ignore[union-attr]
            types, names = None, None

        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
        if names is None:
            names = list(result.keys())
            check_columns(self.source, self.dataset, names)
        schema = pa.schema([pa.field(n, t[0]) for n, t in zip(names, types)]) if types else None
        for rows in result.partitions(batch_rows):
            columns: list[Any] = list(zip(*rows)) if rows else [[] for _ in names]
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
