"""The frequency filter: keep subjects seen between ``min_inclusive`` and ``max_inclusive`` times.

A subject here is the combination of the frequency filter's fields (counted jointly, one hash per
row, as for deduplication), and what is counted is the deduplication result (Narrative evaluates
the frequency filter after deduplication):

- with ``deduplication``, the window is its period: the count of a frequency subject is the number
  of distinct deduplication subjects with that value accepted within the period, in earlier loads
  (the state keeps each one's frequency hash) and in this one. A row is judged when it arrives: one
  held back below ``min_inclusive`` is not sent later when the count grows (its subject may go out
  with a later row), and rows sent before a subject passed ``max_inclusive`` stay sent;
- without ``deduplication``, the window is the rows given to one :func:`apply_rules` call (the
  dataset's current records in that load): give the load's rows in one call for one window.
"""

import numpy as np

from ..config.data_rules import FrequencyFilter
from .state import RulesState, Subjects


def counts_in_rows(groups: np.ndarray) -> np.ndarray:
    """For each row, how many rows share its group."""
    if not len(groups):
        return np.zeros(0, np.int64)
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    return counts[inverse]


def within(counts: np.ndarray, rule: FrequencyFilter) -> np.ndarray:
    keep = counts >= rule.min_inclusive
    if rule.max_inclusive is not None:
        keep &= counts <= rule.max_inclusive
    return keep


def _occurrences(sorted_groups: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return np.searchsorted(sorted_groups, queries, side="right") - np.searchsorted(sorted_groups, queries, side="left")


def _window_groups(subjects: Subjects, cutoff: int) -> np.ndarray:
    """The sorted groups of the subjects accepted after ``cutoff`` (cached per table and cutoff)."""
    key = ("window", cutoff)
    if key not in subjects.cache:
        assert subjects.groups is not None
        subjects.cache[key] = np.sort(subjects.groups[subjects.since > cutoff])
    return subjects.cache[key]


def state_counts(state: RulesState, groups: np.ndarray, *, cutoff: int) -> np.ndarray:
    """For each of ``groups`` (sorted for speed), the subjects within the window in ``state``: committed
    ones not since replaced by a pending row, plus pending ones."""
    committed, pending = state.committed, state.pending
    counts = np.zeros(len(groups), np.int64)
    if len(committed) and committed.groups is not None:
        counts += _occurrences(_window_groups(committed, cutoff), groups)
        if len(pending):
            found, at = committed.find(pending.hashes)
            replaced = at[found][committed.since[at[found]] > cutoff]
            counts -= _occurrences(np.sort(committed.groups[replaced]), groups)
    if len(pending) and pending.groups is not None:
        counts += _occurrences(_window_groups(pending, cutoff), groups)
    return counts
