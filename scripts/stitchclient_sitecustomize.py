"""For .venv-clients only: the collections aliases Python 3.10 removed, which the Transit library
bundled in stitchclient 1.0.1 still imports (collections.MutableMapping)."""

import collections
import collections.abc

for _name in ("MutableMapping", "Mapping", "Hashable", "MutableSet", "Set", "Sequence", "Iterable", "Callable"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
