"""test-source: connect to a source with its credentials and say whether it works, and how to fix it."""

from dataclasses import dataclass

from ..config.errors import PrequelError
from ..config.models import FILE_SOURCE_VENDORS, PUSH_SOURCE_VENDORS, PrequelConfig, Source
from ..config.secrets import redact
from .errors import fix_for


@dataclass(frozen=True)
class Probe:
    """Prequel's test-source answer: ``code`` is ``OK`` or what failed; ``message`` says what to change."""

    code: str
    message: str

    @property
    def ok(self) -> bool:
        return self.code == "OK"


def probe_source(config: PrequelConfig, source: Source) -> Probe:
    """Open a connection (or list the bucket) with the source's settings; never raises for the source's own faults."""
    if source.vendor in PUSH_SOURCE_VENDORS:
        return Probe("OK", f"source '{source.id}' is pushed to (Stitch's Import API): nothing to connect to")
    try:
        if source.vendor == "postgres":
            _postgres(config, source)
        elif source.vendor in FILE_SOURCE_VENDORS:
            from .files import open_files

            files = open_files(source, config)
            try:
                files.list("prequel-dagster-test-source/")
            finally:
                files.close()
        else:
            import sqlalchemy as sa

            from .sql import make_engine

            engine = make_engine(source, config)
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
            finally:
                engine.dispose()
    except PrequelError as exc:
        return Probe("SOURCE_ERROR", redact(str(exc)))
    except Exception as exc:  # the driver's own error: its first line, secrets masked, and the fix
        raw = redact(str(getattr(exc, "orig", None) or exc)).strip()
        first = raw.splitlines()[0] if raw else type(exc).__name__
        code, fix = fix_for(raw)
        return Probe(code, f"source '{source.id}': {first} — {fix}")
    return Probe("OK", f"connected to source '{source.id}' ({source.vendor})")


def _postgres(config: PrequelConfig, source: Source) -> None:
    import psycopg

    from .postgres import PostgresEndpoint

    with PostgresEndpoint(source).open() as conninfo, psycopg.connect(conninfo) as connection:
        connection.execute("SELECT 1")
