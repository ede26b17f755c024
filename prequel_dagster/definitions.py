"""The code location ``workspace.yaml`` loads: definitions from ``$PREQUEL_CONFIG`` or ``./prequel.yaml``
and the catalog (``$PREQUEL_CATALOG_URL`` or ``.prequel/catalog.db``) together, or the demo's.

The catalog is read as of one revision (the newest, or ``$PREQUEL_CATALOG_REVISION``): the runs its
schedules and sensors request carry that revision as a tag, and a run worker builds the definitions
of the same revision, so no run executes a half-updated catalog.
"""

import gc
import os
from pathlib import Path

from .builder import build_definitions
from .catalog.entries import load_with_catalog
from .catalog.store import Catalog
from .config.loading import find_config_path, load_config
from .config.models import PrequelConfig
from .demo import TEMPLATE, demo_dir

REVISION_ENV_VAR = "PREQUEL_CATALOG_REVISION"
REVISION_TAG = "prequel/catalog_revision"


def _config_path() -> Path | None:
    path = find_config_path()
    if path is not None:
        return path
    demo_config = demo_dir() / "prequel.yaml"
    return demo_config if demo_config.exists() else None


def _fingerprint() -> tuple[str, int, int] | None:
    """The config file these definitions come from, with its size and modification time (None: the embedded demo)."""
    path = _config_path()
    if path is None:
        return None
    stat = os.stat(path)
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _wanted_revision() -> int | None:
    text = os.environ.get(REVISION_ENV_VAR)
    return int(text) if text and text.isdigit() else None


def _load() -> tuple[PrequelConfig, int | None]:
    """The config (YAML and catalog) and the catalog revision it holds (None: no catalog)."""
    found = load_with_catalog(_config_path(), revision=_wanted_revision())
    if found is not None:
        return found
    # No config anywhere: the demo's, pointed at where `prequel-dagster demo` puts its files.
    return load_config(TEMPLATE, base_dir=demo_dir()), None


def catalog_revision() -> int | None:
    """The catalog's newest revision (None: there is no catalog)."""
    catalog = Catalog.open(create=False)
    if catalog is None:
        return None
    try:
        return catalog.revision()
    finally:
        catalog.close()


BUILT_FROM = _fingerprint()
config, CATALOG_REVISION = _load()
defs = build_definitions(
    config, run_tags={REVISION_TAG: str(CATALOG_REVISION)} if CATALOG_REVISION is not None else None
)
del config
# The definitions live as long as the process: keep the collector from scanning them again and again
# (a third of a large code location's load time went to collections of objects that never die).
gc.freeze()


def is_current(revision: int | None = None) -> bool:
    """Whether these definitions are the ones a fresh load would build: the same config file, and the
    catalog at ``revision`` (default: its newest). A preloaded run worker rebuilds them when not."""
    try:
        if _fingerprint() != BUILT_FROM:
            return False
        wanted = revision if revision is not None else catalog_revision()
        return wanted == CATALOG_REVISION
    except Exception:  # the catalog cannot be read: rebuild, and let the load report why
        return False
