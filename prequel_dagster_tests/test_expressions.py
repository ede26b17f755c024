"""The expression language: vectorised results and errors that point at the column."""

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from prequel_dagster.language.expressions import ExpressionError, evaluate, parse_expression, referenced_columns

ROWS = pa.table(
    {
        "id": pa.array([1, 2, None], pa.int64()),
        "first": ["Ann", "bob", None],
        "last": ["Lee", "Ng", "Ode"],
        "amount": pa.array([decimal.Decimal("10.50"), decimal.Decimal("99.99"), None], pa.decimal128(12, 2)),
        "active": [True, False, None],
        "at": pa.array([dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)] * 3, pa.timestamp("us", "UTC")),
    }
)


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("string(id)", ["1", "2", None]),
        ('first + " " + last', ["Ann Lee", "bob Ng", None]),
        ('IF(active, "yes", "no")', ["yes", "no", "no"]),
        ("id * 2 + 1", [3, 5, None]),
        ("id / 2", [0.5, 1.0, None]),
        ("amount > 50", [False, True, None]),
        ("id == nil", [False, False, True]),
        ("id != nil && active", [True, False, False]),
        ('active ? "A" : "B"', ["A", "B", "B"]),
        ('first ?? "anon"', ["Ann", "bob", "anon"]),
        ("id in [2, 3]", [False, True, False]),
        ('CONCATENATE(last, "-", id)', ["Lee-1", "Ng-2", None]),
        ("LEFT(last, 2)", ["Le", "Ng", "Od"]),
        ("RIGHT(last, 1)", ["e", "g", "e"]),
        ("MID(last, 2, 2)", ["ee", "g", "de"]),
        ('SUBSTITUTE(last, "e", "3")', ["L33", "Ng", "Od3"]),
        ("PROPER(first)", ["Ann", "Bob", None]),
        ("upper(last)", ["LEE", "NG", "ODE"]),
        ("string(at)", ["2026-01-02T03:04:05.000000Z"] * 3),  # RFC 3339, lossless
        ('int("42") + 1', [43, 43, 43]),
    ],
)
def test_expressions_evaluate_over_whole_batches(expr, expected):
    assert evaluate(parse_expression(expr), ROWS).to_pylist() == expected


@pytest.mark.parametrize(
    "expr, message",
    [
        ("id +", "unexpected 'end of expression' at column 5"),
        ("(id", "expected ')' at column 4"),
        ('"open', "unterminated string starting at column 1"),
        ("id # 2", "unexpected character '#' at column 4"),
        ("nope(id)", "unknown function 'nope' at column 1"),
    ],
)
def test_parse_errors_point_at_the_column(expr, message):
    with pytest.raises(ExpressionError) as info:
        parse_expression(expr)
    assert message in str(info.value)


def test_type_and_column_errors_are_named():
    with pytest.raises(ExpressionError, match="unknown column 'missing' at column 1"):
        evaluate(parse_expression("missing + 1"), ROWS)
    with pytest.raises(ExpressionError, match="compares int64 with string"):
        evaluate(parse_expression('id == "1"'), ROWS)


def test_referenced_columns_feed_lineage():
    assert referenced_columns(parse_expression('IF(active, first + " " + last, string(id))')) == [
        "active",
        "first",
        "last",
        "id",
    ]
