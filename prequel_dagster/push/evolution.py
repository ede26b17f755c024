"""A field pushed with another type than before becomes a column of its own, as Stitch splits
``cost`` into ``cost__st``: the first type keeps the name (the lake's type, once committed), each
other type gets ``<field>__<suffix>``. Nothing is dropped and no value is converted."""

from collections.abc import Iterable

import pyarrow as pa

from ..config.errors import SourceError

SUFFIXES = (
    (pa.types.is_boolean, "bo"),
    (pa.types.is_integer, "it"),
    (pa.types.is_floating, "fl"),
    (pa.types.is_timestamp, "ti"),
    (pa.types.is_string, "st"),
    (pa.types.is_large_string, "st"),
)


def suffix(data_type: pa.DataType) -> str:
    for test, name in SUFFIXES:
        if test(data_type):
            return name
    return "js"


def split_type_changes(
    tables: Iterable[pa.Table], reference: pa.Schema | None, *, keys: set[str], where: str
) -> list[pa.Table]:
    """``tables`` (staged batches, arrival order) with each column whose type differs from the one
    first seen (``reference`` first: the lake's) renamed ``<name>__<suffix>``.

    A key column cannot change type (it would no longer identify its records): SourceError naming
    ``where`` (the dataset and its staged folder) and the fix.
    """
    seen: dict[str, pa.DataType] = {f.name: f.type for f in reference} if reference is not None else {}
    out = []
    for table in tables:
        names = []
        for field in table.schema:
            name = field.name
            held = seen.get(name)
            if held is not None and held != field.type and not pa.types.is_null(field.type):
                if name in keys:
                    raise SourceError(
                        f"{where}: key column '{name}' was pushed as {field.type} after {held}; a key keeps its "
                        "type. Nothing was committed and the batches stay staged: push the key with its first "
                        "type, then move or delete the staged batch with the other type"
                    )
                name = f"{field.name}__{suffix(field.type)}"
                if name in table.column_names or seen.get(name, field.type) != field.type:
                    raise SourceError(
                        f"{where}: field '{field.name}' changed type to {field.type} and its split column "
                        f"'{name}' is taken; nothing was committed and the batches stay staged: rename the "
                        "field in what you push"
                    )
            seen.setdefault(name, field.type)
            names.append(name)
        out.append(table.rename_columns(names))
    return out
