"""Data rules (issue 14): the model of Narrative's ``data_rules``, every filter kind on every type it
applies to (nulls included), dotted paths, attributes, the exported projection, counts and
explanations."""

import datetime as dt
import decimal
import json

import pyarrow as pa
import pytest

from prequel_dagster.config.durations import parse_duration
from prequel_dagster.rules import RulesError, apply_rules, compile_rules, explain_row, parse_data_rules

NOW = dt.datetime(2024, 3, 31, 12, 0, tzinfo=dt.UTC)

# The response body of Narrative's "Create a data-stream" example (seed 002), its data_rules verbatim.
SEED_DATA_RULES = json.loads(
    """
{
  "column_sets": [{"dataset_id": 99999, "fields": [
    {"field": "col1", "filter": null, "exported": true},
    {"field": "col2", "filter": "include_all_values_including_nulls_filter", "exported": true},
    {"field": "col3", "filter": "include_only_if_not_null_filter", "exported": true},
    {"field": "col4", "filter": {"type": "include", "list": ["this", "that", "that too", "some more"]}, "exported": true},
    {"field": "col5", "filter": {"type": "exclude", "list": ["this", "that", "that too", "some more"]}, "exported": true},
    {"field": "col6", "filter": {"min": {"type": "inclusive", "value": "-100"}, "max": {"type": "inclusive", "value": "100"}},
     "exported": true},
    {"field": "col6", "filter": {"min": null, "max": {"type": "exclusive", "value": "timestamp01"}}, "exported": false},
    {"field": "col7", "filter": {"type": "include", "list": ["true"]}, "exported": true},
    {"field": "col8", "filter": {"recency": "P30D", "from": null, "to": {"type": "exclusive", "value": "timestamp01"}},
     "exported": true}
  ]}],
  "attributes": [
    {"attribute_id": 123, "fields": [
      {"field": "col1", "filter": null, "exported": true},
      {"field": "col2", "filter": "include_all_values_including_nulls_filter", "exported": true},
      {"field": "col3", "filter": "include_only_if_not_null_filter", "exported": true},
      {"field": "col4", "filter": {"type": "include", "list": ["this", "that", "that too", "some more"]}, "exported": true},
      {"field": "col5", "filter": {"type": "exclude", "list": ["this", "that", "that too", "some more"]}, "exported": true},
      {"field": "col6", "filter": {"min": {"type": "inclusive", "value": "-100"}, "max": {"type": "inclusive", "value": "100"}},
       "exported": true},
      {"field": "col6", "filter": {"min": null, "max": {"type": "exclusive", "value": "timestamp01"}}, "exported": false},
      {"field": "col7", "filter": {"type": "include", "list": ["true"]}, "exported": true},
      {"field": "col8", "filter": {"recency": "P30D", "from": null, "to": {"type": "exclusive", "value": "timestamp01"}},
       "exported": true},
      {"field": "col9", "filter": {"expressions": ["col9 > -90", "col9 < 90"]}, "exported": true}
    ], "optional": true},
    {"attribute_id": 321, "fields": [
      {"field": "col9", "filter": {"expressions": ["col9 > -90", "col9 < 90"]}, "exported": false}
    ], "optional": false}
  ],
  "deduplication": {"period": "P60D", "column_references": null,
                    "attribute_references": [{"attribute_id": 123, "column_names": ["col9", "col9.foo.bar"]}]},
  "frequency_filter": {"column_references": null,
                       "attribute_references": [{"attribute_id": 123, "column_names": ["col9.foo.bar"]}],
                       "min_inclusive": 2, "max_inclusive": 5}
}
"""
)


def one_filter(field: str, flt, *, exported: bool = True) -> dict:
    return {"column_sets": [{"dataset_id": 1, "fields": [{"field": field, "filter": flt, "exported": exported}]}]}


def kept(values: pa.Array, flt, *, now: dt.datetime = NOW) -> list[int]:
    """The indices of the rows ``flt`` keeps on a column ``x`` holding ``values``."""
    table = pa.table({"x": values, "i": pa.array(range(len(values)))})
    rules = one_filter("x", flt)
    rules["column_sets"][0]["fields"].append({"field": "i", "filter": None, "exported": True})
    return apply_rules(table, rules, now=now).table.column("i").to_pylist()


def rules_error(values: pa.Array, flt) -> str:
    with pytest.raises(RulesError) as caught:
        kept(values, flt)
    return str(caught.value)


# ---------------------------------------------------------------------------- the model


def test_the_seeds_data_rules_parse_field_for_field():
    rules = parse_data_rules(SEED_DATA_RULES)
    fields = rules.column_sets[0].fields
    assert fields[0].filter is None and fields[1].filter == "include_all_values_including_nulls_filter"
    assert fields[3].filter.type == "include" and fields[3].filter.list[2] == "that too"
    assert fields[5].filter.min.value == "-100" and fields[5].filter.max.type == "inclusive"
    assert fields[6].filter.min is None and fields[6].exported is False
    assert fields[8].filter.recency == "P30D" and fields[8].filter.from_ is None
    assert rules.attributes[1].optional is False and rules.attributes[1].fields[0].filter.expressions == [
        "col9 > -90",
        "col9 < 90",
    ]
    assert rules.deduplication.referenced_fields() == ["col9", "col9.foo.bar"]
    assert rules.frequency_filter.min_inclusive == 2 and rules.frequency_filter.max_inclusive == 5
    assert compile_rules(rules).exported == tuple(f"col{i}" for i in range(1, 10))
    # The request body of the same page: a column set without filters, everything else null.
    request = parse_data_rules(
        {
            "column_sets": [
                {
                    "dataset_id": 91,
                    "fields": [
                        {"field": "id", "filter": None, "exported": True},
                        {"field": "audience", "filter": None, "exported": True},
                    ],
                }
            ],
            "attributes": None,
            "deduplication": None,
            "frequency_filter": None,
        }
    )
    assert compile_rules(request).checks == ()


def test_the_seeds_placeholder_bound_is_refused_when_applied_naming_the_path_and_the_type():
    table = pa.table({"col6": pa.array([1, 2], pa.int64())})
    rules = {
        "column_sets": [
            SEED_DATA_RULES["column_sets"][0] | {"fields": SEED_DATA_RULES["column_sets"][0]["fields"][6:7]}
        ]
    }
    with pytest.raises(RulesError) as caught:
        apply_rules(table, rules, now=NOW)
    message = str(caught.value)
    assert "data_rules.column_sets[0].fields[0].filter.max.value" in message
    assert "'timestamp01' is not a valid int64 value" in message and 'write a number such as "100"' in message


def test_bad_rules_are_reported_together_each_with_its_path_and_fix():
    bad = {
        "column_sets": [
            {
                "dataset_id": 1,
                "fields": [
                    {"field": "a", "filter": {"type": "inclde", "list": ["x"]}},
                    {"field": "b", "filter": "include_everything"},
                    {"field": "c", "filter": {"min": None, "max": None}},
                    {"field": "d", "filter": {"between": [1, 2]}},
                    {"field": "e", "filter": {"recency": "30D"}},
                    {"field": "f", "filter": {"expressions": ["x >"]}},
                    {"field": "g", "exported": True, "export": True},
                    {"field": "h", "filter": {"min": {"type": "incl", "value": "1"}}},
                    {"field": "", "filter": None},
                    {"field": "i", "filter": {"type": "include", "list": []}},
                ],
            }
        ],
        "deduplication": {"period": "P1D", "column_references": []},
        "frequency_filter": {"column_references": ["a"], "min_inclusive": 5, "max_inclusive": 2},
        "auth": 1,
    }
    with pytest.raises(RulesError) as caught:
        parse_data_rules(bad)
    message = str(caught.value)
    expected = [
        "data_rules.column_sets[0].fields[0].filter.type: input should be 'include' or 'exclude'",
        "data_rules.column_sets[0].fields[1].filter: 'include_everything' is not a filter; a filter is one of null,",
        "data_rules.column_sets[0].fields[2].filter: a range needs 'min', 'max' or both",
        "data_rules.column_sets[0].fields[3].filter: not a filter; a filter is one of",
        "data_rules.column_sets[0].fields[4].filter.recency: '30D' is not an ISO-8601 duration; write e.g. \"P30D\"",
        "data_rules.column_sets[0].fields[5].filter.expressions[0]: unexpected 'end of expression' at column 4",
        "data_rules.column_sets[0].fields[6].export: unknown key; remove it (the keys here are: field, filter, exported)",
        "data_rules.column_sets[0].fields[7].filter.min.type: input should be 'inclusive' or 'exclusive'",
        "data_rules.column_sets[0].fields[8].field: '' is not a field",
        "data_rules.column_sets[0].fields[9].filter.list: list should have at least 1 item",
        "data_rules.deduplication: name the fields that make a subject",
        "data_rules.frequency_filter: max_inclusive (2) is below min_inclusive (5); swap them",
        "data_rules.auth: unknown key; remove it (the keys here are: column_sets, attributes, deduplication, "
        "frequency_filter)",
    ]
    for line in expected:
        assert line.lower() in message.lower(), (line, message)
    assert message.startswith(f"{len(expected)} data_rules problems:")
    with pytest.raises(RulesError, match=r"data_rules.deduplication.period: 'P0D' is a zero duration"):
        parse_data_rules({"deduplication": {"period": "P0D", "column_references": ["x"]}})


def test_yaml_scalars_are_taken_where_the_seed_writes_strings():
    rules = parse_data_rules(
        one_filter("x", {"type": "include", "list": [True, 5, 2.5, "s"]})
        | {"deduplication": {"period": "P1D", "column_references": ["x", {"column_names": ["y"]}]}}
    )
    assert rules.column_sets[0].fields[0].filter.list == ["true", "5", "2.5", "s"]
    assert rules.deduplication.referenced_fields() == ["x", "y"]
    assert rules.column_sets[0].fields[0].exported is True


@pytest.mark.parametrize(
    ("text", "months", "fixed"),
    [
        ("P30D", 0, dt.timedelta(days=30)),
        ("PT12H", 0, dt.timedelta(hours=12)),
        ("P2W", 0, dt.timedelta(weeks=2)),
        ("P1M", 1, dt.timedelta(0)),
        ("P1Y2M3DT4H5M6.5S", 14, dt.timedelta(days=3, hours=4, minutes=5, seconds=6.5)),
        ("p30d", 0, dt.timedelta(days=30)),
    ],
)
def test_iso_durations(text, months, fixed):
    duration = parse_duration(text)
    assert (duration.months, duration.fixed) == (months, fixed)


def test_calendar_months_clamp_the_day():
    assert parse_duration("P1M").before(NOW) == dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC)
    assert parse_duration("P1Y").before(dt.datetime(2024, 2, 29, tzinfo=dt.UTC)) == dt.datetime(
        2023, 2, 28, tzinfo=dt.UTC
    )
    for bad in ("P", "PT", "P1DT", "30D", "P1H", "", "P-1D", "P0D"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# ---------------------------------------------------------------------------- named filters and nulls


def test_null_and_include_all_keep_every_row_and_not_null_drops_nulls():
    values = pa.array(["a", None, "", "b"])
    assert kept(values, None) == [0, 1, 2, 3]
    assert kept(values, "include_all_values_including_nulls_filter") == [0, 1, 2, 3]
    assert kept(values, "include_only_if_not_null_filter") == [0, 2, 3]
    assert kept(pa.array([1.0, float("nan"), None]), "include_only_if_not_null_filter") == [0, 1]


# ---------------------------------------------------------------------------- include / exclude lists


@pytest.mark.parametrize(
    ("values", "items", "included"),
    [
        (pa.array(["this", "that", None, "other", "that too"]), ["this", "that too"], [0, 4]),
        (pa.array(["this", "that", None, "other", "that too"], pa.large_string()), ["this", "that too"], [0, 4]),
        (pa.array(["this", "that", None, "other", "this"]).dictionary_encode(), ["this"], [0, 4]),
        (pa.array([1, -5, None, 7, 1], pa.int8()), ["1", "7"], [0, 3, 4]),
        (pa.array([10**12, 3, None, -1, 0], pa.int64()), ["-1", "1000000000000"], [0, 3]),
        (pa.array([1, 2, None, 3, 4], pa.uint16()), ["2", "4"], [1, 4]),
        (pa.array([1.5, 2.0, None, 3.25, float("nan")]), ["2", "3.25"], [1, 3]),
        (
            pa.array(
                [decimal.Decimal("1.50"), decimal.Decimal("2.00"), None, decimal.Decimal("3.10"), decimal.Decimal("0")]
            ),
            ["1.5", "0"],
            [0, 4],
        ),
        (pa.array([True, False, None, True, False]), ["true"], [0, 3]),
        (pa.array([True, False, None, True, False]), ["FALSE"], [1, 4]),
        (
            pa.array(
                [
                    dt.datetime(2021, 12, 10, 12),
                    dt.datetime(2021, 12, 10),
                    None,
                    dt.datetime(2020, 1, 1),
                    dt.datetime(2021, 12, 10, 12),
                ],
                pa.timestamp("us", "UTC"),
            ),
            ["2021-12-10 12:00:00", "2020-01-01T00:00:00Z"],
            [0, 3, 4],
        ),
        (
            pa.array([dt.datetime(2021, 12, 10, 12), None, dt.datetime(2021, 12, 10, 10)], pa.timestamp("ms")),
            ["2021-12-10T12:00:00+02:00"],  # 10:00 UTC, against a column without a zone (UTC)
            [2],
        ),
        (pa.array([dt.date(2021, 12, 10), None, dt.date(2021, 1, 1)], pa.date32()), ["2021-01-01"], [2]),
        (pa.array([b"ab", None, b"cd"]), ["cd"], [2]),
        (pa.nulls(3), ["x"], []),
    ],
)
def test_include_and_exclude_lists_by_type(values, items, included):
    everything = list(range(len(values)))
    nulls = [i for i, v in enumerate(values.to_pylist()) if v is None]
    assert kept(values, {"type": "include", "list": items}) == included  # a null is in no list
    excluded = kept(values, {"type": "exclude", "list": items})
    assert excluded == [i for i in everything if i not in included]  # a null is not excluded ...
    assert all(i in excluded for i in nulls)
    both = {"column_sets": [{"dataset_id": 1, "fields": [
        {"field": "x", "filter": {"type": "exclude", "list": items}},
        {"field": "x", "filter": "include_only_if_not_null_filter"},  # ... unless asked (a field may repeat)
        {"field": "i", "filter": None},
    ]}]}  # fmt: skip
    table = pa.table({"x": values, "i": pa.array(everything)})
    assert apply_rules(table, both, now=NOW).table.column("i").to_pylist() == [i for i in excluded if i not in nulls]


@pytest.mark.parametrize(
    ("values", "good", "bad", "problem"),
    [
        (pa.array([1, 2]), "1", "1.5", "'1.5' is not a valid int64 value (field 'x' is int64); write a number"),
        (pa.array([1.0]), "1e3", "one", "'one' is not a valid double value"),
        (
            pa.array([True]),
            "True",
            "yes",
            "'yes' is not a valid bool value (field 'x' is bool); write \"true\" or \"false\"",
        ),
        (
            pa.array([dt.datetime(2021, 1, 1)]),
            "2021-01-01",
            "timestamp01",
            "'timestamp01' is not a valid timestamp[us] value",
        ),
        (pa.array([dt.date(2021, 1, 1)]), "2021-01-01", "01/02/2021", 'write an ISO-8601 date such as "2021-12-10"'),
    ],
)
def test_list_items_that_do_not_parse_name_the_item(values, good, bad, problem):
    message = rules_error(values, {"type": "include", "list": [good, bad]})
    assert message.startswith("data_rules.column_sets[0].fields[0].filter.list[1]: ") and problem in message


def test_lists_on_nested_values_are_refused():
    message = rules_error(pa.array([[1]]), {"type": "include", "list": ["1"]})
    assert "field 'x' is list<item: int64>, which a list or range cannot be compared with" in message


# ---------------------------------------------------------------------------- ranges


def bounds(low=None, high=None, *, low_type="inclusive", high_type="inclusive") -> dict:
    return {
        "min": None if low is None else {"type": low_type, "value": low},
        "max": None if high is None else {"type": high_type, "value": high},
    }


@pytest.mark.parametrize(
    ("values", "low", "high"),
    [
        (pa.array([-101, -100, 0, None, 100, 101], pa.int32()), "-100", "100"),
        (pa.array([-100.5, -100.0, 0.0, None, 100.0, 100.25]), "-100", "100"),
        (
            pa.array(
                [None if v is None else decimal.Decimal(v) for v in ("-100.01", "-100", "0", None, "100.00", "100.01")],
                pa.decimal128(6, 2),
            ),
            "-100",
            "100",
        ),
        (pa.array(["a", "b", "c", None, "d", "e"]), "b", "d"),
        (
            pa.array(
                [
                    dt.datetime(2021, 12, 9, 23),
                    dt.datetime(2021, 12, 10),
                    dt.datetime(2021, 12, 11),
                    None,
                    dt.datetime(2021, 12, 12),
                    dt.datetime(2021, 12, 13),
                ],
                pa.timestamp("s", "UTC"),
            ),
            "2021-12-10",
            "2021-12-12T00:00:00Z",
        ),
        (
            pa.array([None if d is None else dt.date(2021, 12, d) for d in (9, 10, 11, None, 12, 13)]),
            "2021-12-10",
            "2021-12-12",
        ),
    ],
)
def test_ranges_by_type_with_inclusive_and_exclusive_bounds(values, low, high):
    # values: [below, low, inside, null, high, above]
    assert kept(values, bounds(low, high)) == [1, 2, 4]
    assert kept(values, bounds(low, high, low_type="exclusive")) == [2, 4]
    assert kept(values, bounds(low, high, high_type="exclusive")) == [1, 2]
    assert kept(values, bounds(low, None)) == [1, 2, 4, 5]  # an open side; the null is never in range
    assert kept(values, bounds(None, high, high_type="exclusive")) == [0, 1, 2]


def test_a_range_on_a_boolean_or_a_struct_is_refused():
    assert "which has no order; use an include/exclude list" in rules_error(pa.array([True]), bounds("false"))
    assert "filter a leaf (col.key)" in rules_error(pa.array([{"a": 1}]), bounds("1"))
    message = rules_error(pa.array([1, 2]), bounds("-1", "ten"))
    assert "data_rules.column_sets[0].fields[0].filter.max.value: 'ten' is not a valid int64 value" in message


# ---------------------------------------------------------------------------- recency


def test_recency_keeps_values_within_the_duration_before_now():
    values = pa.array(
        [
            NOW - dt.timedelta(days=31),
            NOW - dt.timedelta(days=30),
            NOW - dt.timedelta(days=1),
            None,
            NOW + dt.timedelta(days=1),
        ],
        pa.timestamp("us", "UTC"),
    )
    assert kept(values, {"recency": "P30D"}) == [1, 2, 4]  # from now minus 30 days on; no upper limit
    assert kept(values, {"recency": "PT36H"}) == [2, 4]
    assert kept(values, {"recency": "P1M"}) == [0, 1, 2, 4]  # 29 Feb 12:00
    to_now = {"recency": "P30D", "from": None, "to": {"type": "exclusive", "value": NOW.isoformat()}}
    assert kept(values, to_now) == [1, 2]
    window = {
        "from": {"type": "exclusive", "value": "2024-03-01 12:00:00"},
        "to": {"type": "inclusive", "value": "2024-03-30T12:00:00Z"},
    }
    assert kept(values, window) == [2]


def test_recency_on_zoneless_timestamps_dates_and_other_types():
    naive = pa.array([dt.datetime(2024, 3, 1, 11), dt.datetime(2024, 3, 1, 12), None], pa.timestamp("ns"))
    assert kept(naive, {"recency": "P30D"}) == [1]  # now is 2024-03-31 12:00 UTC
    dates = pa.array([dt.date(2024, 2, 29), dt.date(2024, 3, 1), None, dt.date(2024, 4, 1)])
    assert kept(dates, {"recency": "P30D"}) == [1, 3]
    assert kept(dates, {"from": {"type": "inclusive", "value": "2024-03-01"}, "to": None}) == [1, 3]
    message = rules_error(pa.array(["2024-03-30"]), {"recency": "P30D"})
    assert "data_rules.column_sets[0].fields[0].filter: a recency filter needs a timestamp or date field" in message
    assert kept(pa.array([1, 2]), "include_all_values_including_nulls_filter") == [0, 1]
    # a naive `now` is UTC
    assert kept(naive, {"recency": "P30D"}, now=NOW.replace(tzinfo=None)) == [1]


# ---------------------------------------------------------------------------- expressions


def test_expressions_all_hold_and_a_null_result_drops_the_row():
    table = pa.table({"col9": pa.array([-91, -90, 0, None, 89, 90]), "i": pa.array(range(6))})
    rules = one_filter("col9", {"expressions": ["col9 > -90", "col9 < 90"]})
    rules["column_sets"][0]["fields"].append({"field": "i"})
    assert apply_rules(table, rules, now=NOW).table.column("i").to_pylist() == [2, 4]
    with pytest.raises(RulesError) as caught:
        apply_rules(table, one_filter("col9", {"expressions": ["col9 > -90", "i % 2 == 0"]}), now=NOW)
    assert "data_rules.column_sets[0].fields[0].filter.expressions[1]: unexpected character '%' at column 3" in str(
        caught.value
    )


def test_expressions_reach_dotted_paths_and_bad_ones_name_the_expression():
    table = pa.table({"geo": pa.array([{"lat": 10.0}, {"lat": 95.0}, None]), "i": pa.array(range(3))})
    rules = one_filter("geo.lat", {"expressions": ["`geo.lat` < 90", "i >= 0"]}, exported=False)
    rules["column_sets"][0]["fields"].append({"field": "i"})
    assert apply_rules(table, rules, now=NOW).table.column("i").to_pylist() == [0]
    for expression, problem in (
        ("nope > 1", "expressions[0]: unknown column 'nope' at column 1"),
        ("i + 1", "expressions[0]: 'i + 1' gives int64, not true/false"),
        ('i > "a"', "expressions[0]: '>' at column 3 compares int64 with string"),
    ):
        with pytest.raises(RulesError) as caught:
            apply_rules(table, one_filter("i", {"expressions": [expression]}), now=NOW)
        assert f"data_rules.column_sets[0].fields[0].filter.{problem}" in str(caught.value)


# ---------------------------------------------------------------------------- dotted paths


def test_dotted_paths_into_struct_and_json_text_columns():
    table = pa.table(
        {
            "s": pa.array([{"foo": {"bar": 1}}, {"foo": None}, None, {"foo": {"bar": 3}}]),
            "j": pa.array(['{"foo": {"bar": 1}}', '{"foo": {}}', None, '{"foo":\n {"bar": 3, "baz": "x"}}']),
            "odd": pa.array(['{"foo": 1}', "not json", "[1, 2]", '{"foo": "x"}']),
            "a.b": pa.array([5, 6, 7, 8]),
        }
    )
    for field in ("s.foo.bar", "j.foo.bar"):
        result = apply_rules(table, one_filter(field, {"type": "include", "list": ["1", "3"]}), now=NOW)
        assert result.table.column_names == [field] and result.table.column(field).to_pylist() == [1, 3]
    assert (
        apply_rules(table, one_filter("j.missing", "include_only_if_not_null_filter"), now=NOW).counts["rows_out"] == 0
    )
    # text that is not one JSON object gives null there; a key whose type changes is read as text
    odd = apply_rules(table, one_filter("odd.foo", None), now=NOW).table.column("odd.foo").to_pylist()
    assert odd == ["1", None, None, "x"]
    assert (
        apply_rules(table, one_filter("a.b", {"min": {"type": "inclusive", "value": "7"}}), now=NOW).counts["rows_out"]
        == 2
    )
    for field, problem in (
        ("s.foo.nope", "'s.foo.nope': the struct s.foo has no field 'nope' (its fields: bar)"),
        ("a.b.c", "'a.b.c': a.b is int64, not an object to take 'c' from"),
        ("zz", "unknown field 'zz'; the columns are: s, j, odd, a.b"),
    ):
        with pytest.raises(RulesError) as caught:
            apply_rules(table, one_filter(field, "include_only_if_not_null_filter"), now=NOW)
        assert f"data_rules.column_sets[0].fields[0].filter: {problem}" in str(caught.value)


# ---------------------------------------------------------------------------- attributes, projection, counts


def attribute_table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 4, 5]),
            "col9": pa.array([10, None, 95, None, -5]),
            "age": pa.array([None, 30, 40, None, 50]),
        }
    )


def test_optional_attributes_filter_only_rows_that_have_them():
    rules = {
        "column_sets": [{"dataset_id": 1, "fields": [{"field": "id"}]}],
        "attributes": [
            {
                "attribute_id": 123,
                "fields": [{"field": "col9", "filter": {"expressions": ["col9 > -90", "col9 < 90"]}}],
                "optional": True,
            }
        ],
    }
    result = apply_rules(attribute_table(), rules, now=NOW)
    assert result.table.column("id").to_pylist() == [1, 2, 4, 5]  # 3 has col9 = 95; 2 and 4 lack the attribute
    assert result.counts == {"rows_in": 5, "dropped_by.attributes[0].fields[0]": 1, "rows_out": 4}


def test_required_attributes_drop_rows_without_them_and_count_them():
    rules = {
        "attributes": [
            {
                "attribute_id": 321,
                "fields": [{"field": "col9", "filter": {"expressions": ["col9 < 90"]}, "exported": False}],
                "optional": False,
            },
            {"attribute_id": 7, "fields": [{"field": "age"}, {"field": "col9"}], "optional": False},
        ]
    }
    result = apply_rules(attribute_table(), rules, now=NOW, explain=True)
    assert result.counts == {
        "rows_in": 5,
        "dropped_by.attributes[0]": 2,
        "dropped_by.attributes[0].fields[0]": 1,
        "dropped_by.attributes[1]": 0,
        "rows_out": 2,
    }
    assert result.table.column_names == ["age", "col9"]  # exported fields only, first-listed order
    assert result.dropped_by.to_pylist() == [None, "attributes[0]", "attributes[0].fields[0]", "attributes[0]", None]
    assert result.explain(1).description == "attribute 321 missing (optional: false; none of col9 has a value)"


def test_exported_fields_once_each_and_all_columns_when_none_is_exported():
    table = attribute_table()
    rules = {"column_sets": [{"dataset_id": 1, "fields": [
        {"field": "age", "exported": False, "filter": "include_only_if_not_null_filter"},
        {"field": "id", "exported": True},
        {"field": "age", "exported": True},
        {"field": "id", "exported": False, "filter": {"type": "exclude", "list": ["5"]}},
    ]}]}  # fmt: skip
    result = apply_rules(table, rules, now=NOW)
    assert result.table.to_pydict() == {"id": [2, 3], "age": [30, 40]}
    only_rows = {
        "column_sets": [
            {
                "dataset_id": 1,
                "fields": [{"field": "id", "exported": False, "filter": {"type": "include", "list": ["1"]}}],
            }
        ]
    }
    assert apply_rules(table, only_rows, now=NOW).table.column_names == table.column_names
    assert apply_rules(table, {}, now=NOW).table.equals(table)


def test_counts_add_up_and_each_dropped_row_is_charged_to_the_first_rule_that_drops_it():
    table = pa.table(
        {
            "col3": pa.array(["x", None, "y", "z", "w", "v"]),
            "col4": pa.array(["this", "this", "no", "that", "this", None]),
            "col6": pa.array([0, 0, 0, 500, 50, 5]),
            "col7": pa.array([True, True, True, True, False, True]),
        }
    )
    fields = [f for f in SEED_DATA_RULES["column_sets"][0]["fields"] if f["field"] in ("col3", "col4", "col7")]
    fields.append(SEED_DATA_RULES["column_sets"][0]["fields"][5])
    rules = {"column_sets": [{"dataset_id": 1, "fields": fields}]}
    result = apply_rules(table, rules, now=NOW, explain=True)
    assert result.counts == {
        "rows_in": 6,
        "dropped_by.column_sets[0].fields[0]": 1,
        "dropped_by.column_sets[0].fields[1]": 2,
        "dropped_by.column_sets[0].fields[2]": 1,
        "dropped_by.column_sets[0].fields[3]": 1,
        "rows_out": 1,
    }
    drops = sum(v for k, v in result.counts.items() if k.startswith("dropped_by."))
    assert result.counts["rows_in"] == drops + result.counts["rows_out"]
    assert result.dropped_by.to_pylist() == [
        None,
        "column_sets[0].fields[0]",
        "column_sets[0].fields[1]",
        "column_sets[0].fields[3]",
        "column_sets[0].fields[2]",
        "column_sets[0].fields[1]",
    ]
    assert explain_row(table, rules, 3, now=NOW).description == "col6: >= -100 and <= 100"
    assert explain_row(table, rules, 0, now=NOW) is None
    assert result.kept.to_pylist() == [True, False, False, False, False, False]
    with pytest.raises(ValueError, match="explain=True"):
        apply_rules(table, rules, now=NOW).explain(0)


def test_chunked_tables_and_empty_tables():
    table = pa.concat_tables([attribute_table(), attribute_table()])
    assert table.column("id").num_chunks == 2
    result = apply_rules(table, one_filter("age", "include_only_if_not_null_filter"), now=NOW)
    assert result.table.column("age").to_pylist() == [30, 40, 50, 30, 40, 50]
    empty = apply_rules(attribute_table().slice(0, 0), one_filter("age", {"type": "include", "list": ["1"]}), now=NOW)
    assert empty.counts == {"rows_in": 0, "dropped_by.column_sets[0].fields[0]": 0, "rows_out": 0}
