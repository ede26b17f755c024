"""Where things live inside a datalake. The README's "Datalake layout" section mirrors this file.

```
_prequel_lake.json                                                       the lake's id (delivery ids derive from it)
lakehouse/<provider_id>/<dataset_id>/data/<seq>-<token>-<part>.parquet   row versions, one commit each
lakehouse/<provider_id>/<dataset_id>/_commits/<seq>.json                 commit manifests (the commit point)
artifacts/<provider_id>/streams/<stream_id>/_deliveries/<seq>.json       delivered-through markers
artifacts/<provider_id>/streams/<stream_id>/_pending/load.json           the open load (for resume)
artifacts/<provider_id>/streams/<stream_id>/dead_letter/<load>-<batch>.parquet   rejected records
```
Data files not named by a commit manifest are leftovers of a failed run and are never read.
"""

SEQ_WIDTH = 10


def seq_name(seq: int, suffix: str = ".json") -> str:
    return f"{seq:0{SEQ_WIDTH}d}{suffix}"


def parse_seq(name: str) -> int | None:
    stem = name.split(".", 1)[0]
    return int(stem) if stem.isdigit() and len(stem) == SEQ_WIDTH else None


def dataset_dir(provider_id: str, dataset_id: str) -> str:
    return f"lakehouse/{provider_id}/{dataset_id}"


def stream_dir(provider_id: str, stream_id: str) -> str:
    return f"artifacts/{provider_id}/streams/{stream_id}"
