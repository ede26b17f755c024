"""Config: models with Prequel Import's field names, loading, cross-reference checks, errors."""

from .errors import ConfigError, ConfigIssue, DeliveryError, PrequelError, SourceError
from .loading import find_config_path, load_config
from .models import Datalake, Dataset, Destination, Mapping, PrequelConfig, Provider, Source, Stream
from .secrets import Secret, redact

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "Datalake",
    "Dataset",
    "DeliveryError",
    "Destination",
    "Mapping",
    "PrequelConfig",
    "PrequelError",
    "Provider",
    "Secret",
    "Source",
    "SourceError",
    "Stream",
    "find_config_path",
    "load_config",
    "redact",
]
