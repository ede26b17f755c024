"""Apply a stream's mappings to a record batch: one output column per ``target_field``."""

from dataclasses import dataclass

import pyarrow as pa

from ..config.models import Mapping, Stream
from ..language.expressions import ExpressionError, Node, evaluate, parse_expression, referenced_columns


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


def apply_isolating(mapper: StreamMapper, table: pa.Table) -> tuple[pa.Table, pa.Array | None, dict[int, str]]:
    """``mapper.apply`` that keeps going when some rows' values make an expression fail (a division
    by zero, ``int("abc")``): those rows are found by halving and returned with their error, so one
    tenant row never blocks the rest. Returns the mapped good rows, the good-row mask (None if all
    are good) and ``{row index: error}``."""
    try:
        return mapper.apply(table), None, {}
    except ExpressionError as exc:
        whole = exc
    failed: dict[int, str] = {}

    def bisect(start: int, length: int) -> None:
        try:
            mapper.apply(table.slice(start, length))
        except ExpressionError as exc:
            if length == 1:
                failed[start] = str(exc)
            else:
                half = length // 2
                bisect(start, half)
                bisect(start + half, length - half)

    bisect(0, table.num_rows)
    if not failed:  # no single row fails alone: not a data problem
        raise whole
    good = pa.array([i not in failed for i in range(table.num_rows)], pa.bool_())
    return mapper.apply(table.filter(good)), good, failed


def compile_mapping(mapping: Mapping) -> CompiledMapping:
    if mapping.field_type == "field":
        name = mapping.column.name  # type: ignore[union-attr]
        return CompiledMapping(mapping.target_field, (name,), column=name)
    node = parse_expression(mapping.expression.expr)  # type: ignore[union-attr]
    return CompiledMapping(mapping.target_field, tuple(referenced_columns(node)), node=node)
