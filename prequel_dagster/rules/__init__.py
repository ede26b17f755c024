"""Narrative-style data rules for a stream (issue 14): which fields are delivered, which rows qualify
(filters), at most once per period per subject (deduplication) and only subjects seen a number of
times (frequency filter). Pure Arrow/numpy over record batches; the state of deduplication lives in
the datalake. ``model`` the shapes, ``filters`` the masks, ``hashing``/``dedup``/``frequency``/``state``
the subjects, ``engine`` the order they run in.
"""

from ..config.data_rules import DataRules, RulesError, parse_data_rules
from .engine import CompiledRules, RuleInfo, RulesResult, apply_rules, compile_rules, explain_row
from .state import RulesState, commit_state, empty_state, load_state, rules_state_dir

__all__ = [
    "CompiledRules",
    "DataRules",
    "RuleInfo",
    "RulesError",
    "RulesResult",
    "RulesState",
    "apply_rules",
    "commit_state",
    "compile_rules",
    "empty_state",
    "explain_row",
    "load_state",
    "parse_data_rules",
    "rules_state_dir",
]
