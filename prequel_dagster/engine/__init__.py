"""The engine: Extract and Load, runnable and tested without Dagster."""

from .extract import ExtractResult, run_extract
from .load import LoadCounts, LoadResult, run_load

__all__ = ["ExtractResult", "LoadCounts", "LoadResult", "run_extract", "run_load"]
