"""What the commands share: the config they load (YAML and the API's catalog together) and the error
for bad command-line input."""

import argparse

from .config.errors import PrequelError


class UsageError(PrequelError):
    """Bad command-line input: exit status 2."""


def _load(args: argparse.Namespace):  # -> PrequelConfig
    """The YAML config (``--config``, ``$PREQUEL_CONFIG`` or ``./prequel.yaml``) and the API's catalog together."""
    from .catalog.entries import load_with_catalog
    from .config.loading import find_config_path

    found = load_with_catalog(find_config_path(args.config))
    if found is None:
        raise UsageError(
            "no config given, PREQUEL_CONFIG unset, no ./prequel.yaml and no catalog (.prequel/catalog.db)"
        )
    return found[0]
