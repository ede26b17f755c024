"""prequel_dagster: multi-tenant data import in Prequel Import's model, as a Dagster plugin.

Public surface: :func:`build_definitions`, :class:`DagsterPrequelTranslator`,
:class:`PrequelImportComponent`, the resources :class:`PrequelDatalakeResource`,
:class:`PrequelSourceResource` and :class:`PrequelWebhookResource`, :func:`load_config`.

Names are imported on first use, so the engine (``prequel_dagster.engine``, the CLI's extract and
load paths) runs without loading Dagster: about 60 MB less memory and a second less start-up.
"""

import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

if "pyarrow" not in sys.modules and sys.platform.startswith("linux"):
    # Arrow picks its allocator once, when first imported. Its default, mimalloc, keeps pages freed on
    # another thread than the one that allocated them: an extract (read on one thread, written on
    # another) then grows by ~80 MB per 2M rows. jemalloc returns them and is as fast here. The
    # user's own setting wins; child processes (Dagster steps) inherit it.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")

_EXPORTS = {
    "build_definitions": ".builder",
    "PrequelImportComponent": ".component",
    "ConfigError": ".config",
    "PrequelConfig": ".config",
    "load_config": ".config",
    "PrequelDatalakeResource": ".resources",
    "PrequelSourceResource": ".resources",
    "PrequelWebhookResource": ".resources",
    "DagsterPrequelTranslator": ".translator",
    "PrequelDatasetProps": ".translator",
    "PrequelStreamProps": ".translator",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .builder import build_definitions
    from .component import PrequelImportComponent
    from .config import ConfigError, PrequelConfig, load_config
    from .resources import PrequelDatalakeResource, PrequelSourceResource, PrequelWebhookResource
    from .translator import DagsterPrequelTranslator, PrequelDatasetProps, PrequelStreamProps


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prequel_dagster' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
