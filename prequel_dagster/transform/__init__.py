"""Transform: expressions compiled to Arrow compute, stream mappings, record_schema checks."""

from ..language.expressions import ExpressionError, evaluate, parse_expression, referenced_columns
from .mapping import StreamMapper
from .schema import validate_records

__all__ = ["ExpressionError", "StreamMapper", "evaluate", "parse_expression", "referenced_columns", "validate_records"]
