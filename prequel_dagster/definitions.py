"""The code location ``workspace.yaml`` loads: definitions from ``$PREQUEL_CONFIG``, ``./prequel.yaml``, or the demo."""

import gc
import os
from pathlib import Path

from .builder import build_definitions
from .config.loading import find_config_path, load_config
from .demo import TEMPLATE, demo_dir


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


def _load():
    path = _config_path()
    if path is not None:
        return load_config(path)
    # No config anywhere: the demo's, pointed at where `prequel-dagster demo` puts its files.
    return load_config(TEMPLATE, base_dir=demo_dir())


BUILT_FROM = _fingerprint()
defs = build_definitions(_load())
# The definitions live as long as the process: keep the collector from scanning them again and again
# (a third of a large code location's load time went to collections of objects that never die).
gc.freeze()


def is_current() -> bool:
    """Whether the config these definitions were built from is still the one a fresh load would read
    (a preloaded run worker rebuilds them when it is not)."""
    try:
        return _fingerprint() == BUILT_FROM
    except OSError:
        return False
