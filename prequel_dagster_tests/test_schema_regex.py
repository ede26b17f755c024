"""record_schema regular expressions run in linear time on every path (RE2), whatever the tenant's value."""

import threading

import pyarrow as pa

from prequel_dagster.language.linear_regex import search, unsupported
from prequel_dagster.transform.schema import needs_json_schema_library, validate_records

EVIL = "^(a+)+$"  # exponential for a backtracking engine on "aaaa...!"


def within(seconds: float, fn) -> bool:
    """Whether ``fn`` finishes within ``seconds`` (generous: backtracking needs minutes here)."""
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def test_nested_and_pattern_property_regexes_do_not_backtrack():
    schema = {
        "type": "object",
        "properties": {
            "profile": {
                "type": "object",
                "properties": {"handle": {"type": "string", "pattern": EVIL}},
                "patternProperties": {EVIL: {"type": "string"}},
                "additionalProperties": False,
            }
        },
    }
    assert needs_json_schema_library(schema)  # the per-record path, not the vectorised one
    value = "a" * 40 + "!"  # Python's re: about 2**40 steps
    table = pa.table(
        {"profile": pa.array([{"handle": value}, {"handle": "aaa"}], pa.struct([("handle", pa.string())]))}
    )
    out = {}
    assert within(60, lambda: out.update(result=validate_records(table, schema)))
    violations = out["result"].violations.to_pylist()
    assert "does not match" in violations[0] and violations[1] is None


def test_search_is_unanchored_like_re_search_and_unsupported_syntax_is_named():
    assert search("b+", "abbc") and not search("^b", "abc")
    assert unsupported(r"(a)\1") and unsupported("(?=a)") and unsupported("a+") is None
