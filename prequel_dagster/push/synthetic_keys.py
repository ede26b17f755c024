"""One key column for pushed tables Stitch keys by several columns or by none, so every table can be
a dataset (whose primary key is one column).

* ``_sdc_primary_key``: a composite key's values as one string, each value prefixed with its length
  (``1:7;5:alice;``), so no two different keys read the same whatever their text holds.
* ``_sdc_record_id``: for an append-only table (no ``key_names``), the staged file and the row
  (``<file>:<row>``): every pushed record is a record of its own, never replaced.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COMPOSITE_KEY = "_sdc_primary_key"
RECORD_ID = "_sdc_record_id"


def composite_key(table: pa.Table, key_names: list[str]) -> pa.Array:
    """Each row's key values, length-prefixed and joined (vectorised)."""
    parts: list[pa.Array | str] = []
    for name in key_names:
        text = pc.cast(table.column(name).combine_chunks(), pa.string())
        parts += [pc.cast(pc.utf8_length(text), pa.string()), ":", text, ";"]
    return pc.binary_join_element_wise(*parts, "")


def record_ids(file_stem: str, rows: int) -> pa.Array:
    """``<file_stem>:<row>`` for each row of a staged file (file names are unique, rows numbered)."""
    numbers = pc.cast(pa.array(np.arange(rows, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(file_stem, numbers, ":")


def key_column(key_names: list[str] | None) -> str | None:
    """The column a dataset of the table names as its primary key when it is not one of the table's
    own (None: the table's single key)."""
    if not key_names:
        return RECORD_ID
    return COMPOSITE_KEY if len(key_names) > 1 else None
