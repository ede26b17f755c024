"""Deduplication: a subject (the referenced fields' values, combined) goes out at most once per period.

Vectorised over a batch's subject hashes: one stable sort finds each subject's first row in the
batch (later rows of the same subject are duplicates), one binary search per distinct subject
finds it in the state. A subject is *blocked* when the state has it delivered within the period
(``since`` later than now minus the period); otherwise its first row is *accepted* and goes on to
the frequency filter. Accepted subjects are added to the state as pending, with ``since = now``
and whether they were delivered (a subject the frequency filter holds back is remembered as seen,
not delivered: it may still go out, and it counts towards its group, later in the period).
"""

from dataclasses import dataclass

import numpy as np

from .state import RulesState, Subjects


@dataclass(frozen=True)
class Candidates:
    """The distinct subjects of a batch, sorted by hash, with their first row and what the state says."""

    hashes: np.ndarray  # sorted, unique
    first_rows: np.ndarray  # position (in the hashes given) of each subject's first row
    blocked: np.ndarray  # delivered within the period
    counted: np.ndarray  # seen (not delivered) within the period: already counted in its group

    @property
    def accepted(self) -> np.ndarray:
        return ~self.blocked


def candidates(hashes: np.ndarray, state: RulesState, *, cutoff: int) -> Candidates:
    """Each distinct subject of ``hashes`` (a batch's rows, in order) against ``state``; ``cutoff`` is
    now minus the period, in epoch seconds: a state row with ``since <= cutoff`` has expired."""
    order = np.argsort(hashes, kind="stable")  # equal hashes keep row order: the first is the first row
    ordered = hashes[order]
    first = np.ones(len(ordered), np.bool_)
    first[1:] = ordered[1:] != ordered[:-1]
    distinct, first_rows = ordered[first], order[first]
    since = np.full(len(distinct), np.iinfo(np.int64).min, np.int64)
    delivered = np.zeros(len(distinct), np.bool_)
    for table in (state.committed, state.pending):  # pending last: it wins
        if len(table):
            found, at = table.find(distinct)
            since[found] = table.since[at[found]]
            delivered[found] = table.delivered[at[found]]
    recent = since > cutoff
    return Candidates(distinct, first_rows, recent & delivered, recent & ~delivered)


def record(
    state: RulesState,
    found: Candidates,
    *,
    delivered: np.ndarray,
    groups: np.ndarray | None,
    now: int,
) -> RulesState:
    """``state`` with the accepted subjects added as pending (``delivered`` and ``groups`` are per
    accepted subject, in hash order)."""
    accepted = found.accepted
    new = Subjects(
        found.hashes[accepted],
        np.full(int(accepted.sum()), now, np.int64),
        delivered,
        groups if state.pending.groups is not None else None,
    )
    if not len(new):
        return state
    return state.with_pending(state.pending.upsert(new))
