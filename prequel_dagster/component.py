"""``PrequelImportComponent``: the same config in a ``defs.yaml``, for projects laid out with ``dg``.

```yaml
type: prequel_dagster.PrequelImportComponent
attributes:
  config_path: prequel.yaml        # relative to this defs.yaml; or give the keys inline:
  # datalakes: [...]
  # providers: [...]
```
"""

from pathlib import Path
from typing import Any

import dagster as dg

from .builder import build_definitions
from .config.loading import KINDS, load_config

CONFIG_KEYS = KINDS  # the config's top-level lists


class PrequelImportComponent(dg.Component, dg.Resolvable, dg.Model):
    """Multi-tenant imports (Prequel Import's model): provider datasets, streams and their schedules."""

    config_path: str | None = None
    datalakes: list[dict[str, Any]] | None = None
    providers: list[dict[str, Any]] | None = None
    products: list[dict[str, Any]] | None = None
    sources: list[dict[str, Any]] | None = None
    datasets: list[dict[str, Any]] | None = None
    destinations: list[dict[str, Any]] | None = None
    streams: list[dict[str, Any]] | None = None
    notifications: list[dict[str, Any]] | None = None
    attributes: list[dict[str, Any]] | None = None
    data_streams: list[dict[str, Any]] | None = None

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        here = Path(context.path)
        here = here if here.is_dir() else here.parent
        inline = {k: getattr(self, k) for k in CONFIG_KEYS if getattr(self, k) is not None}
        if self.config_path and inline:
            raise ValueError("give either config_path or the config keys inline, not both")
        if self.config_path:
            path = Path(self.config_path)
            return build_definitions(load_config(path if path.is_absolute() else here / path))
        return build_definitions(load_config(inline, base_dir=here))
