"""The whole service wired together: catalog, YAML config, the Dagster link, and the ASGI app to serve or mount.

Mount it in your own app with ``app.mount("/prequel", build_app())``; serve it with
``prequel-dagster api`` (uvicorn).
"""

import os
import sys
from pathlib import Path

from fastapi import FastAPI

from ..catalog.store import Catalog
from ..config.loading import CONFIG_ENV_VAR, find_config_path
from ..config.models import PrequelConfig
from ..delivery.reachability import unreachable
from .actions import Actions
from .app import create_app
from .dagster_link import URL_ENV_VAR as DAGSTER_URL_ENV_VAR
from .dagster_link import DagsterLink, Launcher, Reloader
from .service import Service


def check_destination(config: PrequelConfig, destination_id: str) -> str | None:
    return unreachable(config.destination(destination_id))


def build_app(
    *,
    config_path: str | Path | None = None,
    catalog_url: str | None = None,
    dagster_url: str | None = None,
    poll_seconds: float = 5.0,
) -> FastAPI:
    """The API over the catalog (``catalog_url``, default ``$PREQUEL_CATALOG_URL`` or ``.prequel/catalog.db``)
    and the YAML config, launching Extracts and Loads through the Dagster webserver at ``dagster_url``
    (default ``$PREQUEL_DAGSTER_URL`` or ``http://127.0.0.1:3000``)."""
    catalog = Catalog.open(catalog_url)
    assert catalog is not None
    service = Service(
        catalog, find_config_path(config_path), check_destination=check_destination, freeze_after_load=True
    )
    link = DagsterLink(dagster_url) if dagster_url else DagsterLink.from_environment()
    reloader = Reloader(link, catalog.revision, poll_seconds=poll_seconds)
    launcher = Launcher(link, reloader)
    actions = Actions(service, link, reloader=reloader, launcher=launcher)
    service.on_change = actions.changed
    app = create_app(service=service, actions=actions)

    @app.on_event("shutdown")
    def _stop() -> None:
        launcher.stop(5)
        reloader.stop(5)
        link.close()
        catalog.close()

    return app


def app_from_environment() -> FastAPI:
    """The app each worker process builds when ``prequel-dagster api --workers N`` runs several: the
    config, catalog and Dagster URL come from the environment the parent set."""
    return build_app()


def serve(
    host: str,
    port: int,
    *,
    workers: int = 1,
    config_path: str | Path | None = None,
    dagster_url: str | None = None,
) -> None:
    """Serve the API on uvicorn; ``workers`` > 1 runs that many processes on one port (the catalog is
    the only state they share, so any of them may take any request)."""
    import uvicorn

    if workers <= 1:
        app = build_app(config_path=config_path, dagster_url=dagster_url)
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    if config_path:
        os.environ[CONFIG_ENV_VAR] = str(Path(config_path).resolve())
    if dagster_url:
        os.environ[DAGSTER_URL_ENV_VAR] = dagster_url
    target = f"{__name__}:{app_from_environment.__name__}"
    # The supervisor only starts and watches the workers: it becomes a bare uvicorn process (exec, same
    # pid), so it does not keep this command's imports (about 100 MB) for the life of the service.
    command = [sys.executable, "-m", "uvicorn", target, "--factory", "--workers", str(workers)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [*command, "--host", host, "--port", str(port), "--log-level", "info"])
