"""Time windows of partitioned datasets: ``[start, end)`` of a fact dataset's ``created_at_column``.

A window is two timezone-aware instants. Each side compares it with values of its own type: a
``timestamptz`` (Arrow timestamp with a zone) as the instants; a timestamp without a zone as UTC wall
time; a date as the day that starts at or after each instant (UTC), so a day belongs to the window
holding its midnight. Any other column type cannot be windowed and is refused with the fix.
"""

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from ..config.errors import SourceError


@dataclass(frozen=True)
class Window:
    """``[start, end)``: the time window of one partition, or of a range of them."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a window's start and end must carry a time zone")
        if not self.start < self.end:
            raise ValueError(f"a window must end after it starts: {self.describe()}")

    @classmethod
    def of(cls, value: "Window | tuple[dt.datetime, dt.datetime]") -> "Window":
        return value if isinstance(value, Window) else cls(value[0], value[1])

    def describe(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    def bounds_for(self, arrow_type: pa.DataType, where: str) -> tuple[Any, Any]:
        """The window's bounds as values of a column of ``arrow_type`` (see the module's docstring)."""
        if pa.types.is_timestamp(arrow_type):
            if arrow_type.tz is not None:
                return self.start.astimezone(dt.UTC), self.end.astimezone(dt.UTC)
            return _naive_utc(self.start), _naive_utc(self.end)
        if pa.types.is_date(arrow_type):
            return _day_from(self.start), _day_from(self.end)
        raise SourceError(
            f"{where} is {arrow_type}, not a timestamp or date: time partitions put each row in the window of "
            "its created_at_column. Point fact.created_at_column at a timestamp or date column (cast it in a "
            "sql dataset's query), or remove partitions"
        )

    def scalars_for(self, arrow_type: pa.DataType, where: str) -> tuple[pa.Scalar, pa.Scalar]:
        low, high = self.bounds_for(arrow_type, where)
        return pa.scalar(low, arrow_type), pa.scalar(high, arrow_type)

    def mask(self, values: pa.Array | pa.ChunkedArray, where: str) -> pa.Array:
        """Which values fall in the window (nulls do not)."""
        low, high = self.scalars_for(values.type, where)
        inside = pc.and_(pc.greater_equal(values, low), pc.less(values, high))
        if isinstance(inside, pa.ChunkedArray):
            inside = inside.combine_chunks()
        return pc.fill_null(inside, False)

    def expression(self, column: str, arrow_type: pa.DataType, where: str) -> pads.Expression:
        """A dataset filter for ``column`` in the window (row groups outside it are skipped)."""
        low, high = self.scalars_for(arrow_type, where)
        return (pads.field(column) >= low) & (pads.field(column) < high)


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


def _day_from(moment: dt.datetime) -> dt.date:
    """The first day whose midnight (UTC) is at or after ``moment``."""
    utc = _naive_utc(moment)
    return utc.date() if utc.time() == dt.time(0) else utc.date() + dt.timedelta(days=1)


def filter_to_window(table: pa.Table, column: str, window: Window, where: str) -> pa.Table:
    """The rows of ``table`` whose ``column`` is in the window (a source's rows, checked on our side too)."""
    if column not in table.column_names:
        return table
    inside = window.mask(table.column(column), where)
    return table if inside.true_count == table.num_rows else table.filter(inside)
