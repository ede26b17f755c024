"""Where things live inside a datalake. The README's "Datalake layout" section mirrors this file.

```
_prequel_lake.json                                                       the lake's id (delivery ids derive from it)
lakehouse/<provider_id>/<dataset_id>/data/<seq>-<token>-<part>.parquet   row versions, one commit each
lakehouse/<provider_id>/<dataset_id>/_commits/<seq>.json                 commit manifests (the commit point)
lakehouse/<provider_id>/<dataset_id>/compacted/<n>-<token>-<part>.parquet   row versions of many commits, with
                                                                          their commit in _prequel_seq
lakehouse/<provider_id>/<dataset_id>/_compactions/<n>.json               compaction n: files it replaced by which
lakehouse/<provider_id>/<dataset_id>/_checkpoints/<seq>.json             the log's state through commit seq (a cache)
lakehouse/<provider_id>/<dataset_id>/_checkpoints/<seq>.keys-<h>.parquet the key snapshot through commit seq (a cache)
lakehouse/<provider_id>/<dataset_id>/_checkpoints/_last_checkpoint.json  which checkpoint is the latest (a hint)
artifacts/<provider_id>/streams/<stream_id>/_deliveries/<seq>.json       delivered-through markers
artifacts/<provider_id>/streams/<stream_id>/_position.json               the newest marker's seq (a hint)
artifacts/<provider_id>/streams/<stream_id>/_pending/load.json           the open load (for resume)
artifacts/<provider_id>/streams/<stream_id>/dead_letter/<load>-<batch>.parquet   rejected records
artifacts/<provider_id>/push/<source_id>/<table>/staged/<ns>-<id>.json      an accepted Batch request, not yet committed
artifacts/<provider_id>/push/<source_id>/<table>/staged/<ns>-<id>.parquet   a table of an accepted Push request, not yet committed
```
Data files not named by a commit manifest or a compaction are leftovers of a failed run and are never
read. Checkpoints, key snapshots and hints are caches: without them (missing or damaged) readers
rebuild the same state from the manifests.
"""

from urllib.parse import quote

SEQ_WIDTH = 10


def seq_name(seq: int, suffix: str = ".json") -> str:
    return f"{seq:0{SEQ_WIDTH}d}{suffix}"


def parse_seq(name: str) -> int | None:
    stem = name.split(".", 1)[0]
    return int(stem) if stem.isdigit() and len(stem) == SEQ_WIDTH else None


def parse_manifest_seq(name: str) -> int | None:
    """The seq of a ``<seq>.json`` name exactly (not of the other files that share its prefix)."""
    return parse_seq(name) if len(name) == SEQ_WIDTH + 5 and name.endswith(".json") else None


def dataset_dir(provider_id: str, dataset_id: str) -> str:
    return f"lakehouse/{provider_id}/{dataset_id}"


def commits_dir(dataset_directory: str) -> str:
    return f"{dataset_directory}/_commits"


def data_dir(dataset_directory: str) -> str:
    return f"{dataset_directory}/data"


def compactions_dir(dataset_directory: str) -> str:
    return f"{dataset_directory}/_compactions"


def compacted_dir(dataset_directory: str) -> str:
    return f"{dataset_directory}/compacted"


def checkpoints_dir(dataset_directory: str) -> str:
    return f"{dataset_directory}/_checkpoints"


LAST_CHECKPOINT = "_last_checkpoint.json"


def stream_dir(provider_id: str, stream_id: str) -> str:
    return f"artifacts/{provider_id}/streams/{stream_id}"


def push_dir(provider_id: str, source_id: str) -> str:
    """An Import API source's accepted batches, one folder per table (``push/staging.py``)."""
    return f"artifacts/{provider_id}/push/{source_id}"


PUSH_CURSOR_KEY = "staged"
PUSH_STAGED_SUFFIXES = (".json", ".parquet")
"""A staged Batch request as it arrived, and a staged table of a Push request."""
"""A push dataset's commit cursor: ``{"staged": <name of the last staged batch committed>}``."""


def push_table_segment(table_name: str) -> str:
    """A pushed table's name as one path segment: percent-encoded (``.`` too), so a tenant's name never
    names another folder."""
    return quote(table_name, safe="").replace(".", "%2E")


def push_staged_dir(provider_id: str, source_id: str, table_name: str) -> str:
    """A pushed table's accepted batches, waiting for the commit into its dataset."""
    return f"{push_dir(provider_id, source_id)}/{push_table_segment(table_name)}/staged"
