"""prequel_dagster: multi-tenant data import in Prequel Import's model, as a Dagster plugin.

Public surface: :func:`build_definitions`, :class:`DagsterPrequelTranslator`,
:class:`PrequelImportComponent`, :class:`PrequelResource`, :func:`load_config`.
"""

from .builder import build_definitions
from .component import PrequelImportComponent
from .config import ConfigError, PrequelConfig, load_config
from .resources import PrequelResource
from .translator import DagsterPrequelTranslator, PrequelDatasetProps, PrequelStreamProps

__all__ = [
    "ConfigError",
    "DagsterPrequelTranslator",
    "PrequelConfig",
    "PrequelDatasetProps",
    "PrequelImportComponent",
    "PrequelResource",
    "PrequelStreamProps",
    "build_definitions",
    "load_config",
]
