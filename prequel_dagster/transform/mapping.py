"""Apply a stream's mappings to a record batch: one output column per ``target_field``."""

from dataclasses import dataclass

import pyarrow as pa

from ..config.models import Mapping, Stream
from .expressions import ExpressionError, Node, evaluate, parse_expression, referenced_columns


@dataclass(frozen=True)
class CompiledMapping:
    target_field: str
    source_columns: tuple[str, ...]
    column: str | None = None
    node: Node | None = None


class StreamMapper:
    """Compiled once per load; ``apply`` maps whole batches with Arrow compute."""

    def __init__(self, stream: Stream):
        self.stream_id = stream.id
        self.mappings = [compile_mapping(m) for m in stream.mappings]

    @property
    def source_columns(self) -> list[str]:
        cols: list[str] = []
        for m in self.mappings:
            cols.extend(c for c in m.source_columns if c not in cols)
        return cols

    def check_columns(self, available: list[str]) -> list[str]:
        """Problems with columns the mappings read that the dataset does not have."""
        problems = []
        for i, m in enumerate(self.mappings):
            for col in m.source_columns:
                if col not in available:
                    problems.append(
                        f"streams '{self.stream_id}' mappings[{i}] ({m.target_field}) reads column '{col}', "
                        f"which the dataset does not have (columns: {', '.join(available)})"
                    )
        return problems

    def apply(self, batch: pa.RecordBatch | pa.Table) -> pa.Table:
        arrays, names = [], []
        for i, m in enumerate(self.mappings):
            try:
                arr = batch.column(m.column) if m.column is not None else evaluate(m.node, batch)  # type: ignore[arg-type]
            except KeyError:
                raise ExpressionError(
                    f"stream '{self.stream_id}' mappings[{i}]: the dataset has no column '{m.column}' "
                    f"(columns: {', '.join(batch.schema.names)})"
                ) from None
            except ExpressionError as exc:
                raise ExpressionError(f"stream '{self.stream_id}' mappings[{i}] ({m.target_field}): {exc}") from None
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise ExpressionError(
                    f"stream '{self.stream_id}' mappings[{i}] ({m.target_field}) failed on the data: {exc}"
                ) from None
            arrays.append(arr)
            names.append(m.target_field)
        return pa.Table.from_arrays(arrays, names=names)


def compile_mapping(mapping: Mapping) -> CompiledMapping:
    if mapping.field_type == "field":
        name = mapping.column.name  # type: ignore[union-attr]
        return CompiledMapping(mapping.target_field, (name,), column=name)
    node = parse_expression(mapping.expression.expr)  # type: ignore[union-attr]
    return CompiledMapping(mapping.target_field, tuple(referenced_columns(node)), node=node)
