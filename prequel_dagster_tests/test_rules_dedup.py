"""Data rules (issue 14): deduplication across loads with its state in a real local lake (two-phase
commit, crashes, period expiry, conflicts, damage), the frequency filter's bounds and windows, and
the hashing of subjects."""

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from prequel_dagster.lake.lake_files import CorruptLakeFile
from prequel_dagster.rules import (
    RulesError,
    apply_rules,
    commit_state,
    compile_rules,
    explain_row,
    load_state,
    parse_data_rules,
    rules_state_dir,
)
from prequel_dagster.rules.hashing import subject_hashes
from prequel_dagster.rules.state import state_file
from prequel_dagster.stores import CommitConflict, LocalStore

T0 = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)
DIR = rules_state_dir("acme", "acme-events-app")


def dedup_rules(period: str = "P60D", fields=("device",), frequency: dict | None = None) -> dict:
    rules: dict = {"deduplication": {"period": period, "column_references": list(fields), "attribute_references": None}}
    if frequency is not None:
        rules["frequency_filter"] = frequency
    return rules


def events(devices, apps=None) -> pa.Table:
    columns = {"device": pa.array(devices, pa.string()), "n": pa.array(range(len(devices)))}
    if apps is not None:
        columns["app"] = pa.array(apps, pa.int64())
    return pa.table(columns)


def load(store, rules, table, now, *, commit=True):
    """One load: read the state, apply the rules, commit after 'delivery' (unless it crashes first)."""
    result = apply_rules(table, rules, state=load_state(store, DIR, parse_data_rules(rules)), now=now)
    if commit:
        commit_state(store, DIR, result.pending_state, now=now)
    return result


def delivered(result) -> list:
    return result.table.column("device").to_pylist()


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "lake")


def test_a_subject_goes_out_once_per_period_across_loads(store):
    rules = dedup_rules()
    first = load(store, rules, events(["a", "b", "a", "c", "b"]), T0)
    assert delivered(first) == ["a", "b", "c"]  # the first row of each subject, in row order
    assert first.table.column("n").to_pylist() == [0, 1, 3]
    assert first.counts == {"rows_in": 5, "dropped_by.deduplication": 2, "rows_out": 3}
    second = load(store, rules, events(["c", "d", "a", "d"]), T0 + dt.timedelta(days=1))
    assert delivered(second) == ["d"]
    assert second.counts == {"rows_in": 4, "dropped_by.deduplication": 3, "rows_out": 1}
    assert store.exists(f"{DIR}/0000000002.json") and DIR == "artifacts/acme/streams/acme-events-app/_rules_state"


def test_a_crash_before_the_commit_delivers_the_same_subjects_again(store):
    rules = dedup_rules()
    load(store, rules, events(["a"]), T0)
    crashed = load(store, rules, events(["a", "b", "c"]), T0 + dt.timedelta(hours=1), commit=False)
    assert delivered(crashed) == ["b", "c"]
    retried = load(store, rules, events(["a", "b", "c"]), T0 + dt.timedelta(hours=2))
    assert delivered(retried) == ["b", "c"]  # not lost: the uncommitted load left the state as it was
    after = load(store, rules, events(["a", "b", "c"]), T0 + dt.timedelta(hours=3))
    assert delivered(after) == []


def test_a_crash_between_the_data_file_and_the_manifest_leaves_the_old_state(store):
    rules = dedup_rules()
    load(store, rules, events(["a"]), T0)
    # what a commit that died after writing its data file leaves: a generation-2 file without a manifest
    store.write_bytes(f"{DIR}/0000000002-deadbeef0000.parquet", b"half written")
    state = load_state(store, DIR, parse_data_rules(rules))
    assert state.generation == 1 and state.subjects == 1
    result = load(store, rules, events(["a", "b"]), T0 + dt.timedelta(hours=1))
    assert delivered(result) == ["b"]
    assert not store.exists(f"{DIR}/0000000002-deadbeef0000.parquet")  # cleaned up by the next commit


def test_the_period_expires_and_expired_subjects_leave_the_state(store):
    rules = dedup_rules("P60D")
    load(store, rules, events(["a", "b"]), T0)
    assert delivered(load(store, rules, events(["a"]), T0 + dt.timedelta(days=59, hours=23))) == []
    load(store, rules, events(["c"]), T0 + dt.timedelta(days=30))
    again = load(store, rules, events(["a", "b", "c"]), T0 + dt.timedelta(days=60))
    assert delivered(again) == ["a", "b"]  # 60 days after a and b went out; c went out 30 days ago
    state = load_state(store, DIR, parse_data_rules(rules))
    assert state.subjects == 3
    load(store, rules, events([]), T0 + dt.timedelta(days=150))
    assert load_state(store, DIR, parse_data_rules(rules)).subjects == 0  # nothing within 60 days


def test_calendar_periods(store):
    rules = dedup_rules("P1M")
    load(store, rules, events(["a"]), dt.datetime(2024, 1, 31, tzinfo=dt.UTC))
    # measured back from now: 29 February minus a month is 29 January, 1 March minus a month 1 February
    assert delivered(load(store, rules, events(["a"]), dt.datetime(2024, 2, 29, tzinfo=dt.UTC))) == []
    assert delivered(load(store, rules, events(["a"]), dt.datetime(2024, 3, 1, tzinfo=dt.UTC))) == ["a"]


def test_batch_by_batch_within_one_load_with_one_commit(store):
    rules = compile_rules(dedup_rules())
    state = load_state(store, DIR, rules.rules)
    out = []
    for batch in (events(["a", "b"]), events(["b", "c"]), events(["a", "d", "c"])):
        result = apply_rules(batch, rules, state=state, now=T0)
        out += delivered(result)
        state = result.pending_state
    assert out == ["a", "b", "c", "d"]
    assert state.subjects == 4 and len(state.committed) == 0
    assert load_state(store, DIR, rules.rules).subjects == 0  # nothing committed yet
    commit_state(store, DIR, state, now=T0)
    assert load_state(store, DIR, rules.rules).subjects == 4


def test_subjects_combine_several_fields_and_null_is_a_value(store):
    rules = dedup_rules(fields=("device", "app"))
    table = events(["a", "a", "a", None, None, "b"], [1, 2, 1, 1, 1, None])
    assert load(store, rules, table, T0).table.column("n").to_pylist() == [0, 1, 3, 5]
    assert delivered(load(store, rules, events(["a", None], [3, 1]), T0)) == ["a"]


def test_subjects_hash_from_values_so_batches_of_other_arrow_types_agree(store):
    rules = dedup_rules(fields=("device", "app"))
    load(store, rules, events(["a", "b"], [1, 2]), T0)
    other_types = pa.table(
        {
            "device": pa.array(["b", "a", "c"], pa.large_string()).dictionary_encode(),
            "app": pa.array([2, 1, 1], pa.int16()),
            "n": pa.array([0, 1, 2]),
        }
    )
    assert load(store, rules, other_types, T0).table.column("n").to_pylist() == [2]
    # but values of different kinds are different subjects (1, 1.0 and "1")
    seed = 7
    one = [subject_hashes([pa.array([v])], seed, fields=["x"], where="w")[0] for v in (1, 1.0, "1", True, None)]
    assert len(set(one)) == 5


def test_dedup_on_dotted_paths_and_structs(store):
    rules = {
        "deduplication": {
            "period": "P60D",
            "column_references": None,
            "attribute_references": [{"attribute_id": 123, "column_names": ["col9", "col9.foo.bar"]}],
        }
    }
    table = pa.table(
        {
            "col9": pa.array(
                ['{"foo": {"bar": 1}}', '{"foo": {"bar": 1}}', '{"foo": {"bar": 2}}', '{"foo":{"bar":1}}']
            ),
            "n": pa.array(range(4)),
        }
    )
    assert load(store, rules, table, T0).table.column("n").to_pylist() == [0, 2, 3]  # text differs: 3 is new
    struct_rules = dedup_rules(fields=("s",))
    structs = pa.table(
        {"s": pa.array([{"a": 1, "b": "x"}, {"a": 1, "b": "x"}, {"a": 1, "b": None}, None]), "n": pa.array(range(4))}
    )
    assert apply_rules(structs, struct_rules, now=T0).table.column("n").to_pylist() == [0, 2, 3]
    with pytest.raises(
        RulesError, match=r"data_rules.deduplication: field 'l' is list<item: int64>, which cannot make a subject"
    ):
        apply_rules(pa.table({"l": pa.array([[1]])}), dedup_rules(fields=("l",)), now=T0)


# ---------------------------------------------------------------------------- frequency filter


def test_frequency_filter_without_dedup_counts_the_rows_given_within_bounds():
    table = events(["a", "b", "a", "c", "a", "b", "d", "a", "a", "a"])  # a: 6, b: 2, c: 1, d: 1
    two_to_five = {"frequency_filter": {"column_references": ["device"], "min_inclusive": 2, "max_inclusive": 5}}
    result = apply_rules(table, two_to_five, now=T0, explain=True)
    assert delivered(result) == ["b", "b"]
    assert result.counts == {"rows_in": 10, "dropped_by.frequency_filter": 8, "rows_out": 2}
    assert (
        result.explain(0).key == "frequency_filter" and result.explain(0).description == "device not seen 2 to 5 times"
    )
    exactly_one = {"frequency_filter": {"column_references": ["device"], "min_inclusive": 1, "max_inclusive": 1}}
    assert delivered(apply_rules(table, exactly_one, now=T0)) == ["c", "d"]
    at_least_six = {"frequency_filter": {"column_references": ["device"], "min_inclusive": 6, "max_inclusive": None}}
    assert delivered(apply_rules(table, at_least_six, now=T0)) == ["a"] * 6
    jointly = {"frequency_filter": {"column_references": ["device", "app"], "min_inclusive": 2, "max_inclusive": 2}}
    pairs = events(["a", "a", "a", "b"], [1, 1, 2, 1])
    assert apply_rules(pairs, jointly, now=T0).table.column("n").to_pylist() == [0, 1]


def test_frequency_filter_after_filters_counts_only_rows_the_filters_kept():
    table = events(["a", "a", "b", "b"], [1, 9, 1, 1])
    rules = {
        "column_sets": [
            {
                "dataset_id": 1,
                "fields": [{"field": "app", "filter": {"type": "include", "list": ["1"]}}, {"field": "device"}],
            }
        ],
        "frequency_filter": {"column_references": ["device"], "min_inclusive": 2, "max_inclusive": 5},
    }
    assert delivered(apply_rules(table, rules, now=T0)) == ["b", "b"]


def test_frequency_with_dedup_counts_distinct_subjects_over_the_period(store):
    # subject = (device, app), frequency on device: a device must be seen with 2 to 3 apps within 30 days
    rules = dedup_rules(
        "P30D", ("device", "app"), {"column_references": ["device"], "min_inclusive": 2, "max_inclusive": 3}
    )
    first = load(store, rules, events(["a", "a", "b", "c", "c", "c"], [1, 1, 1, 1, 2, 3]), T0)
    assert first.table.column("n").to_pylist() == [3, 4, 5]  # c has 3 apps; a and b have 1 (a's repeat is a duplicate)
    assert first.counts == {
        "rows_in": 6,
        "dropped_by.deduplication": 1,
        "dropped_by.frequency_filter": 2,
        "rows_out": 3,
    }
    # a second app for a: a reaches 2 (its first app, held back, is remembered as seen); b's same app again
    # still counts once; c's 4th app passes max_inclusive
    second = load(store, rules, events(["a", "b", "c", "a"], [2, 1, 4, 1]), T0 + dt.timedelta(days=1))
    assert second.table.column("n").to_pylist() == [0, 3]  # a/2, and a/1 which was seen but never sent
    assert second.counts["dropped_by.frequency_filter"] == 2  # b/1 (1 app), c/4 (4 apps)
    third = load(store, rules, events(["a", "a"], [1, 2]), T0 + dt.timedelta(days=2))
    assert third.counts == {
        "rows_in": 2,
        "dropped_by.deduplication": 2,
        "dropped_by.frequency_filter": 0,
        "rows_out": 0,
    }
    # after the period, counting starts again from this load's subjects
    later = load(store, rules, events(["a", "a", "b"], [1, 2, 1]), T0 + dt.timedelta(days=40))
    assert later.table.column("n").to_pylist() == [0, 1]


def test_frequency_counts_across_batches_of_one_load(store):
    rules = compile_rules(dedup_rules("P30D", ("device", "app"), {"column_references": ["device"], "min_inclusive": 2}))
    state = load_state(store, DIR, rules.rules)
    one = apply_rules(events(["a"], [1]), rules, state=state, now=T0)
    two = apply_rules(events(["a", "a"], [1, 2]), rules, state=one.pending_state, now=T0)
    assert one.counts["rows_out"] == 0 and two.table.column("n").to_pylist() == [0, 1]
    commit_state(store, DIR, two.pending_state, now=T0)
    assert apply_rules(
        events(["a", "b"], [3, 1]), rules, state=load_state(store, DIR, rules.rules), now=T0
    ).table.column("n").to_pylist() == [0]


def test_counts_add_up_and_explain_names_dedup_and_frequency(store):
    rules = dedup_rules("P30D", ("device",), {"column_references": ["app"], "min_inclusive": 2, "max_inclusive": 2})
    rules["column_sets"] = [
        {"dataset_id": 1, "fields": [{"field": "device", "filter": {"type": "exclude", "list": ["x"]}}]}
    ]
    table = events(["a", "x", "a", "b", "c", "d"], [1, 1, 1, 1, 2, 3])
    result = apply_rules(table, rules, now=T0, explain=True)
    assert result.counts == {
        "rows_in": 6,
        "dropped_by.column_sets[0].fields[0]": 1,
        "dropped_by.deduplication": 1,
        "dropped_by.frequency_filter": 2,
        "rows_out": 2,
    }
    assert sum(v for k, v in result.counts.items() if k.startswith("dropped_by.")) + result.counts["rows_out"] == 6
    assert result.dropped_by.to_pylist() == [
        None,
        "column_sets[0].fields[0]",
        "deduplication",
        None,
        "frequency_filter",
        "frequency_filter",
    ]
    assert explain_row(table, rules, 2, now=T0).description == "device delivered within P30D, or earlier in this batch"
    assert result.table.column_names == ["device"]


# ---------------------------------------------------------------------------- the state in the lake


def test_state_costs_at_most_32_bytes_per_subject_on_disk(store):
    rules = dedup_rules("P30D", ("device", "app"), {"column_references": ["device"], "min_inclusive": 1})
    rng = np.random.default_rng(3)
    n = 200_000
    table = pa.table(
        {
            "device": pa.array([f"device-{i:09d}" for i in rng.permutation(n)]),
            "app": pa.array(rng.integers(0, 50, n)),
        }
    )
    load(store, rules, table, T0)
    path = state_file(store, DIR)
    subjects = load_state(store, DIR, parse_data_rules(rules)).subjects
    assert subjects == n
    assert store.size(path) / subjects <= 32


def test_two_loads_committing_from_the_same_state_conflict_and_the_loser_loses_nothing(store):
    rules = dedup_rules()
    load(store, rules, events(["a"]), T0)
    state = load_state(store, DIR, parse_data_rules(rules))
    one = apply_rules(events(["b"]), rules, state=state, now=T0)
    two = apply_rules(events(["c"]), rules, state=state, now=T0)
    commit_state(store, DIR, one.pending_state, now=T0)
    with pytest.raises(CommitConflict, match=r"another load committed the data-rules state .* rerun this load"):
        commit_state(store, DIR, two.pending_state, now=T0)
    assert load_state(store, DIR, parse_data_rules(rules)).subjects == 2  # a and b; c goes out again on rerun
    assert delivered(load(store, rules, events(["c", "b"]), T0)) == ["c"]


def test_old_generations_are_removed(store):
    rules = dedup_rules()
    for hour in range(5):
        load(store, rules, events([f"d{hour}"]), T0 + dt.timedelta(hours=hour))
    names = store.list_names(DIR)
    assert [n for n in names if n.endswith(".json")] == ["0000000004.json", "0000000005.json"]
    assert len([n for n in names if n.endswith(".parquet")]) == 2


def test_a_changed_subject_starts_afresh_and_says_why(store):
    load(store, dedup_rules(fields=("device",)), events(["a"], [1]), T0)
    changed = parse_data_rules(dedup_rules(fields=("device", "app")))
    state = load_state(store, DIR, changed)
    assert state.subjects == 0 and "deduplication starts afresh" in state.reset_reason
    result = apply_rules(events(["a"], [1]), changed, state=state, now=T0)
    assert delivered(result) == ["a"]
    commit_state(store, DIR, result.pending_state, now=T0)
    assert load_state(store, DIR, changed).generation == 2 and load_state(store, DIR, changed).reset_reason is None
    # the period alone is no change of subject
    assert load_state(store, DIR, parse_data_rules(dedup_rules("P1D", ("device", "app")))).subjects == 1


def test_a_state_loaded_for_other_rules_is_refused(store):
    state = load_state(store, DIR, parse_data_rules(dedup_rules(fields=("device",))))
    with pytest.raises(RulesError, match="the state was loaded for other subject fields"):
        apply_rules(events(["a"], [1]), dedup_rules(fields=("app",)), state=state, now=T0)


def test_damaged_state_files_are_named_with_the_fix(store):
    rules = dedup_rules()
    load(store, rules, events(["a"]), T0)
    manifest_path = f"{DIR}/0000000001.json"
    manifest = json.loads(store.read_bytes(manifest_path))
    store.delete(f"{DIR}/{manifest['data_file']}")
    with pytest.raises(CorruptLakeFile, match=r"data-rules state file .* cannot be read.*Delete the folder"):
        load_state(store, DIR, parse_data_rules(rules))
    store.write_bytes(manifest_path, b"{not json")
    with pytest.raises(CorruptLakeFile, match=r"manifest .*0000000001.json is damaged: it is not valid JSON"):
        load_state(store, DIR, parse_data_rules(rules))


def test_rules_without_dedup_need_no_state(store):
    rules = parse_data_rules({"frequency_filter": {"column_references": ["device"], "min_inclusive": 1}})
    state = load_state(store, DIR, rules)
    result = apply_rules(events(["a"]), rules, state=state, now=T0)
    assert commit_state(store, DIR, result.pending_state, now=T0) is result.pending_state
    assert store.list_names(DIR) == []


def test_text_hashes_tell_apart_lengths_word_boundaries_and_slices():
    values = ["", "a", "ab", "ab\x00", "abcdefgh", "abcdefgh\x00", "abcdefghi", "é" * 20, "x" * 1000, None]
    hashes = subject_hashes([pa.array(values)], 1, fields=["x"], where="w")
    assert len(set(hashes.tolist())) == len(values)
    sliced = subject_hashes([pa.array(["zz", *values]).slice(1)], 1, fields=["x"], where="w")
    assert sliced.tolist() == hashes.tolist()
    assert subject_hashes([pa.array(values)], 2, fields=["x"], where="w").tolist() != hashes.tolist()  # keyed
    empty = subject_hashes([pa.array([], pa.string()), pa.array([], pa.int64())], 1, fields=["x", "y"], where="w")
    assert empty.tolist() == []
    swapped = subject_hashes([pa.array(["a"]), pa.array(["b"])], 1, fields=["x", "y"], where="w")
    assert (
        swapped.tolist() != subject_hashes([pa.array(["b"]), pa.array(["a"])], 1, fields=["x", "y"], where="w").tolist()
    )


def test_rows_whose_subject_fields_are_all_null_have_no_subject_and_are_kept(store):
    """A missing or mistyped field, or a provider that does not fill the attribute: such rows are not
    one subject (which would keep one of them per period); they are neither deduplicated nor counted."""
    rules = dedup_rules(fields=("device", "app"))
    table = events(["a", None, None, "a", None], [1, None, None, 1, None])
    assert load(store, rules, table, T0).table.column("n").to_pylist() == [0, 1, 2, 4]
    assert load(store, rules, events([None, "a"], [None, 1]), T0).table.column("n").to_pylist() == [0]
