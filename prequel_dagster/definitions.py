"""The code location ``workspace.yaml`` loads: definitions from ``$PREQUEL_CONFIG``, ``./prequel.yaml``, or the demo."""

from .builder import build_definitions
from .config.loading import find_config_path, load_config
from .demo import TEMPLATE, demo_dir


def _load():
    path = find_config_path()
    if path is not None:
        return load_config(path)
    demo_config = demo_dir() / "prequel.yaml"
    if demo_config.exists():
        return load_config(demo_config)
    # No config anywhere: the demo's, pointed at where `prequel-dagster demo` puts its files.
    return load_config(TEMPLATE, base_dir=demo_dir())


defs = build_definitions(_load())
