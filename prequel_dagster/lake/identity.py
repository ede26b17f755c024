"""The lake's own id: created once with the lake, so delivery ids never repeat across lakes.

Load and batch ids are derived from it (see ``delivery.wire``): a lake deleted and rebuilt, or a
second environment sending to the same receiver, gets a new id and so never reuses a batch id
for different records.
"""

import json
import uuid

from ..stores import CommitConflict, Store
from .lake_files import read_json_object

IDENTITY_FILE = "_prequel_lake.json"


def lake_id(storage: Store) -> str:
    """The id stored in the lake, created (exactly once, even by racing runs) on first use."""
    if not storage.exists(IDENTITY_FILE):
        try:
            storage.create_exclusive(IDENTITY_FILE, json.dumps({"lake_id": uuid.uuid4().hex}).encode())
        except CommitConflict:
            pass  # another run created it first: use theirs
    data = read_json_object(
        storage,
        IDENTITY_FILE,
        what="lake identity",
        keys={"lake_id": str},
        fix="Restore it; a new one would make the next loads' ids differ from those already sent.",
    )
    return data["lake_id"]
