"""The subjects a stream has delivered (and, with a frequency filter, seen) within its deduplication
period: kept in the lake, read at the start of a load, committed after its delivery.

One row per subject, sorted by hash: ``hash`` (uint64, see ``hashing``), ``since`` (epoch seconds
of the load that last accepted it), ``delivered`` and, with a frequency filter, ``group`` (the hash
of the frequency filter's fields). Subjects older than the period are dropped at each commit, so
the state holds one period's subjects: about 6 bytes each on disk (Parquet, zstd; sorted hashes
delta-encoded), 14 with a frequency filter (its group hashes do not sort), measured at a million
subjects (``benchmarks/run.py rules`` prints the figure), and 17 to 25 bytes each in memory.

Two-phase: :func:`apply_rules` returns the state with the load's subjects added as *pending*;
:func:`commit_state` writes it after the load's delivery is committed. A crash before that leaves
the last committed state, so the next load delivers the same subjects again (at least once, never
lost). Files, under ``artifacts/<provider_id>/streams/<stream_id>/_rules_state/``:

```
<gen>-<token>.parquet    the subjects of generation gen (written first, any number of attempts)
<gen>.json               the commit point (created only if absent): names the data file, the key
                         (seed) of the hashes and the rules' fingerprint
```

A data file no manifest names is never read. Changing the fields a subject is made of (the
``deduplication`` or ``frequency_filter`` references) starts an empty state: old hashes mean nothing
for new subjects (``RulesState.reset_reason`` says so).
"""

import datetime as dt
import hashlib
import io
import json
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..config.data_rules import DataRules
from ..config.durations import Duration, parse_duration
from ..lake.lake_files import corrupt, read_json_object
from ..lake.layout import SEQ_WIDTH, parse_manifest_seq, seq_name, stream_dir
from ..stores import CommitConflict, Store

HASH_VERSION = 1
STATE_FOLDER = "_rules_state"


def rules_state_dir(provider_id: str, stream_id: str) -> str:
    """Where a stream's data-rules state lives in its datalake."""
    return f"{stream_dir(provider_id, stream_id)}/{STATE_FOLDER}"


@dataclass(frozen=True)
class Subjects:
    """Subjects sorted by ``hashes`` (unique); ``groups`` only with a frequency filter."""

    hashes: np.ndarray
    since: np.ndarray
    delivered: np.ndarray
    groups: np.ndarray | None
    cache: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)  # derived arrays

    @classmethod
    def empty(cls, with_groups: bool) -> "Subjects":
        return cls(
            np.empty(0, np.uint64),
            np.empty(0, np.int64),
            np.empty(0, np.bool_),
            np.empty(0, np.uint64) if with_groups else None,
        )

    def __len__(self) -> int:
        return len(self.hashes)

    def take(self, index: np.ndarray) -> "Subjects":
        return Subjects(
            self.hashes[index],
            self.since[index],
            self.delivered[index],
            None if self.groups is None else self.groups[index],
        )

    def find(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``hashes`` (sorted for speed): whether it is here, and its position if so."""
        at = np.searchsorted(self.hashes, hashes)
        clipped = np.minimum(at, max(len(self.hashes) - 1, 0))
        found = (at < len(self.hashes)) & (self.hashes[clipped] == hashes) if len(self.hashes) else at < 0
        return found, clipped

    def upsert(self, new: "Subjects") -> "Subjects":
        """These subjects with ``new`` added; a subject in both takes ``new``'s row."""
        if not len(self):
            return new
        replaced, _ = new.find(self.hashes) if len(new) else (np.zeros(len(self), np.bool_), None)
        kept = self.take(np.flatnonzero(~replaced)) if replaced.any() else self
        hashes = np.concatenate([kept.hashes, new.hashes])
        order = np.argsort(hashes, kind="stable")  # two sorted runs: a merge
        return Subjects(
            hashes[order],
            np.concatenate([kept.since, new.since])[order],
            np.concatenate([kept.delivered, new.delivered])[order],
            None if kept.groups is None or new.groups is None else np.concatenate([kept.groups, new.groups])[order],
        )


@dataclass(frozen=True)
class RulesState:
    """A stream's subjects: ``committed`` (read from the lake) and ``pending`` (this load's, not yet
    committed; they win over committed rows of the same subject)."""

    seed: int
    fingerprint: str
    period: Duration | None
    committed: Subjects
    pending: Subjects
    generation: int | None = None  # the committed generation read (None: none yet)
    reset_reason: str | None = None

    @property
    def subjects(self) -> int:
        """Subjects once committed (pending ones of subjects already committed counted once)."""
        if not len(self.pending):
            return len(self.committed)
        found, _ = self.committed.find(self.pending.hashes)
        return len(self.committed) + int((~found).sum())

    def with_pending(self, pending: Subjects) -> "RulesState":
        return replace(self, pending=pending)

    def merged(self, now: dt.datetime) -> Subjects:
        """Committed and pending subjects as one table, without those older than the period at ``now``."""
        subjects = self.committed.upsert(self.pending)
        if self.period is None or not len(subjects):
            return subjects
        cutoff = epoch_seconds(self.period.before(aware(now)))
        return subjects.take(np.flatnonzero(subjects.since > cutoff))


def aware(now: dt.datetime) -> dt.datetime:
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def epoch_seconds(moment: dt.datetime) -> int:
    return int(aware(moment).timestamp())


def fingerprint(rules: DataRules) -> str:
    """What a subject is made of: a state built for other fields (or another hash) is not reused."""
    dedup, frequency = rules.deduplication, rules.frequency_filter
    shape = {
        "hash": HASH_VERSION,
        "subject": dedup.referenced_fields() if dedup else None,
        "group": frequency.referenced_fields() if dedup and frequency else None,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def empty_state(rules: DataRules, *, reset_reason: str | None = None, seed: int | None = None) -> RulesState:
    """A state with no subjects (a stream's first load, or after its subject fields changed)."""
    with_groups = rules.deduplication is not None and rules.frequency_filter is not None
    return RulesState(
        seed=secrets.randbits(64) if seed is None else seed,
        fingerprint=fingerprint(rules),
        period=parse_duration(rules.deduplication.period) if rules.deduplication else None,
        committed=Subjects.empty(with_groups),
        pending=Subjects.empty(with_groups),
        reset_reason=reset_reason,
    )


# ---------------------------------------------------------------------------- in the lake

_FIX = "Delete the folder to start deduplication afresh (subjects delivered within the period may go out again)."


def latest_generation(store: Store, directory: str) -> int | None:
    gens = [g for g in (parse_manifest_seq(n) for n in store.list_names(directory)) if g is not None]
    return max(gens) if gens else None


def load_state(store: Store, directory: str, rules: DataRules) -> RulesState:
    """The last committed state in ``directory`` (see :func:`rules_state_dir`), or an empty one."""
    generation = latest_generation(store, directory) if rules.deduplication else None
    if generation is None:
        return empty_state(rules)
    path = f"{directory}/{seq_name(generation)}"
    manifest = read_json_object(
        store,
        path,
        what="The data-rules state manifest",
        keys={"generation": int, "data_file": str, "seed": int, "fingerprint": str, "subjects": int},
        fix=_FIX,
    )
    if manifest["fingerprint"] != fingerprint(rules):
        reason = (
            f"the subject fields of deduplication or frequency_filter changed since generation {generation}: "
            "deduplication starts afresh"
        )
        state = empty_state(rules, reset_reason=reason, seed=manifest["seed"])
        return replace(state, generation=generation)
    data_path = f"{directory}/{manifest['data_file']}"
    try:
        table = pq.read_table(io.BytesIO(store.read_bytes(data_path)))
    except (FileNotFoundError, OSError, pa.ArrowInvalid) as exc:
        raise corrupt(store, data_path, "The data-rules state file", f"it cannot be read ({exc})", _FIX) from None
    if table.num_rows != manifest["subjects"]:
        raise corrupt(
            store,
            data_path,
            "The data-rules state file",
            f"it has {table.num_rows} subjects, not {manifest['subjects']}",
            _FIX,
        )
    committed = Subjects(
        table.column("hash").to_numpy(),
        table.column("since").to_numpy(),
        table.column("delivered").to_numpy(zero_copy_only=False),
        table.column("group").to_numpy() if "group" in table.column_names else None,
    )
    with_groups = committed.groups is not None
    return RulesState(
        seed=manifest["seed"],
        fingerprint=manifest["fingerprint"],
        period=parse_duration(rules.deduplication.period) if rules.deduplication else None,
        committed=committed,
        pending=Subjects.empty(with_groups),
        generation=generation,
    )


def commit_state(store: Store, directory: str, state: RulesState, *, now: dt.datetime | None = None) -> RulesState:
    """Write ``state`` (committed + pending, expired subjects dropped) as the next generation.

    Call it after the load's delivery is committed. Raises :class:`CommitConflict` when another
    load committed a generation since this state was read (rerun the load: nothing is lost)."""
    if state.period is None:
        return state  # no deduplication: nothing to keep
    manifest, subjects = _write_generation(store, directory, state, aware(now or dt.datetime.now(dt.UTC)))
    generation, data_file = manifest["generation"], manifest["data_file"]
    try:
        store.create_exclusive(f"{directory}/{seq_name(generation)}", json.dumps(manifest).encode())
    except CommitConflict:
        store.delete(f"{directory}/{data_file}")
        raise CommitConflict(
            f"another load committed the data-rules state {store.uri(directory)} (generation {generation}) "
            "first; rerun this load (its rows go out again, none are lost)"
        ) from None
    _remove_old(store, directory, generation, keep={data_file})
    return RulesState(
        seed=state.seed,
        fingerprint=state.fingerprint,
        period=state.period,
        committed=subjects,
        pending=Subjects.empty(subjects.groups is not None),
        generation=generation,
    )


def prepare_state(store: Store, directory: str, state: RulesState, now: dt.datetime) -> dict[str, Any] | None:
    """Two-phase commit, first half: write the next generation's data file (not its manifest) and
    return the manifest for the caller's own commit to name (None: no deduplication, nothing to keep)."""
    if state.period is None:
        return None
    manifest, _ = _write_generation(store, directory, state, now)
    return manifest


def finish_state(store: Store, directory: str, manifest: dict[str, Any]) -> bool:
    """Two-phase commit, second half: commit the generation :func:`prepare_state` wrote (False: it was
    committed already, or another load committed a newer one)."""
    generation = manifest["generation"]
    newest = latest_generation(store, directory)
    if newest is not None and newest >= generation:
        return False
    try:
        store.create_exclusive(f"{directory}/{seq_name(generation)}", json.dumps(manifest).encode())
    except CommitConflict:
        return False
    _remove_old(store, directory, generation, keep={manifest["data_file"]})
    return True


def _write_generation(
    store: Store, directory: str, state: RulesState, now: dt.datetime
) -> tuple[dict[str, Any], Subjects]:
    """The next generation's data file, written; its manifest (not yet committed) and its subjects."""
    subjects = state.merged(now)
    generation = (state.generation or 0) + 1
    data_file = seq_name(generation, f"-{secrets.token_hex(6)}.parquet")
    store.write_bytes(f"{directory}/{data_file}", _parquet(subjects))
    manifest = {
        "format": 1,
        "generation": generation,
        "data_file": data_file,
        "seed": state.seed,
        "fingerprint": state.fingerprint,
        "subjects": len(subjects),
        "committed_at": now.isoformat(),
    }
    return manifest, subjects


def state_file(store: Store, directory: str) -> str | None:
    """The data file of the latest committed generation (for sizes and tests)."""
    generation = latest_generation(store, directory)
    if generation is None:
        return None
    manifest = json.loads(store.read_bytes(f"{directory}/{seq_name(generation)}"))
    return f"{directory}/{manifest['data_file']}"


def _parquet(subjects: Subjects) -> bytes:
    columns: dict[str, pa.Array] = {
        "hash": pa.array(subjects.hashes, pa.uint64()),
        "since": pa.array(subjects.since, pa.int64()),
        "delivered": pa.array(subjects.delivered, pa.bool_()),
    }
    if subjects.groups is not None:
        columns["group"] = pa.array(subjects.groups, pa.uint64())
    sink = io.BytesIO()
    pq.write_table(
        pa.table(columns),
        sink,
        compression="zstd",
        use_dictionary=["since"],
        column_encoding={"hash": "DELTA_BINARY_PACKED"},  # sorted: the gaps are narrower than the values
        write_statistics=False,
    )
    return sink.getvalue()


def _remove_old(store: Store, directory: str, generation: int, *, keep: set[str]) -> None:
    """Drop generations before the previous one, and data files no manifest names (failed attempts)."""
    names = store.list_names(directory)
    named = set(keep)
    previous = f"{directory}/{seq_name(generation - 1)}"
    if generation > 1 and store.exists(previous):
        try:
            named.add(json.loads(store.read_bytes(previous))["data_file"])
        except (ValueError, KeyError, TypeError):
            pass
    for name in names:
        head = name[:SEQ_WIDTH]
        if not head.isdigit():
            continue
        gen = int(head)
        manifest = parse_manifest_seq(name) is not None
        if gen < generation - 1 or (not manifest and gen <= generation and name not in named):
            store.delete(f"{directory}/{name}")
