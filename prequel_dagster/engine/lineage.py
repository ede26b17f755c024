"""Per-record lineage: one record's extract, transform, schema check and load, read back from the lake's state."""

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..config.models import Destination, PrequelConfig, Stream
from ..delivery.requests import RequestTemplates
from ..lake import layout
from ..lake.commits import OP_COLUMN, DatasetLog
from ..lake.data_files import SEQ_COLUMN
from ..lake.deliveries import StreamState
from ..lake.lake_files import read_json_object
from ..language.expressions import ExpressionError
from ..stores import Store, open_datalake
from ..transform.encoding import encode_records
from ..transform.mapping import StreamMapper
from ..transform.schema import converted_table, validate_records
from .sample import INTERNAL_COLUMNS, column_descriptor, json_rows, rfc3339

MAPPING_ERROR = "MAPPING_ERROR"
"""A stream mapping that fails on the record (or reads a column the dataset lacks)."""
SCHEMA_VIOLATION = "RECORD_SCHEMA_VIOLATION"
"""The mapped record does not satisfy the destination's ``record_schema``."""
NOT_SENDABLE = "NOT_SENDABLE"
"""A value the destination's request template cannot carry."""
DESTINATION_REJECTED = "DESTINATION_REJECTED"
"""The destination refused the batch holding the record (or kept failing)."""


@dataclass(frozen=True)
class _Version:
    """The version of the record shown: its commit, when it was committed and superseded, its values."""

    record_id: str  # the key as text, as delivery ids and dead letters spell it
    seq: int
    committed_at: dt.datetime
    superseded_at: dt.datetime | None  # when the record's next version was committed
    is_deleted: bool
    row: pa.Table  # one row: the source columns


@dataclass
class _LoadOf:
    """What the stream's delivery state says about one commit."""

    delivered: bool = False
    finished_at: dt.datetime | None = None  # the finish of the load that covered the commit (None: unknown)
    own_loads: set[str] = field(default_factory=set)  # loads that sent (or are sending) the commit
    other_loads: set[str] = field(default_factory=set)  # loads of the commits just before it


@dataclass(frozen=True)
class _DeadLetter:
    reason: str
    written_at: dt.datetime | None
    load_id: str | None


def record_lineage(
    config: PrequelConfig,
    dataset_id: str,
    record_id: str,
    *,
    as_of: dt.datetime | None = None,
    storage: Store | None = None,
) -> dict[str, Any] | None:
    """The lineage of one record (its primary key value as text) as it stood at ``as_of`` (now by default);
    None when the record had not been extracted by then.

    ``extract`` is the newest version committed at or before ``as_of``; each stream of the dataset then
    shows what its mappings make of that version (``transform``), the destination's ``record_schema``
    verdict (``validate_schema``) and its delivery (``load``): when the load that covered the version's
    commit finished, the record as it went on the wire, and the reason if the record sits in the
    stream's dead letter. The first stream's steps are also at the top level (Prequel's shape).
    Transform and validation are computed now with the current configuration; their times are those
    of the load that ran them. A record id that is not a value of the key's type is a ValueError.
    """
    dataset = config.dataset(dataset_id)
    chain = config.chain(dataset.id)
    storage = storage or open_datalake(chain.datalake, config)
    lake = DatasetLog(storage, chain.provider.id, dataset.id)
    schema = lake.schema() if lake.latest() is not None else None
    if schema is None:
        return None
    key = dataset.primary_key
    value = parse_record_id(record_id, key, schema.field(key).type)
    cutoff = _utc(as_of) if as_of is not None else None
    version = _version(lake, schema, key, value, cutoff)
    if version is None:
        return None
    streams = [
        _stream_lineage(config, stream, storage, chain.provider.id, schema, version, cutoff)
        for stream in config.streams_of_dataset(dataset.id)
    ]
    first = streams[0] if streams else _stream_steps(version.is_deleted)
    return {
        "record_id": version.record_id,
        "dataset_id": dataset.id,
        "as_of": rfc3339(cutoff) if cutoff is not None else None,
        "extract": {
            "last_extracted_at": rfc3339(version.committed_at),
            "data": json_rows(version.row)[0],
            "error": None,
            "is_deleted": version.is_deleted,
        },
        "transform": first["transform"],
        "validate_schema": first["validate_schema"],
        "load": first["load"],
        "streams": streams,
    }


def parse_record_id(record_id: str, key: str, key_type: pa.DataType) -> pa.Scalar:
    """The record id as a value of the primary key's type; ValueError naming the key and type if it is not one."""
    try:
        return pa.array([record_id], pa.string()).cast(key_type)[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        kind = column_descriptor(pa.field(key, key_type))["database_type_name"]
        raise ValueError(f"record id {record_id!r} is not a value of the primary key column '{key}' ({kind})") from None


# ---------------------------------------------------------------------------------------------- extract


def _version(
    lake: DatasetLog, schema: pa.Schema, key: str, value: pa.Scalar, cutoff: dt.datetime | None
) -> _Version | None:
    """The newest version of the record committed at or before ``cutoff`` (the newest of all without)."""
    columns = [f.name for f in schema if f.name not in INTERNAL_COLUMNS]
    wanted = pads.field(key).isin(pa.array([value.as_py()], value.type))
    parts = [b for b in lake.scan(columns=[*columns, OP_COLUMN, SEQ_COLUMN], filter=wanted, prune=[key]) if b.num_rows]
    if not parts:
        return None
    history = pa.Table.from_batches(parts)
    history = history.take(pc.sort_indices(history, sort_keys=[(SEQ_COLUMN, "ascending")]))  # stable
    seqs: list[int] = history.column(SEQ_COLUMN).to_pylist()  # one record's versions: few
    commits = sorted(set(seqs))
    times = _CommitTimes(lake)
    shown = commits[-1] if cutoff is None else times.last_at_or_before(commits, cutoff)
    if shown is None:
        return None
    at = len(seqs) - 1 - seqs[::-1].index(shown)  # the last version within that commit
    row = history.slice(at, 1)
    later = [s for s in commits if s > shown]
    return _Version(
        record_id=pa.array([value.as_py()], value.type).cast(pa.string())[0].as_py(),
        seq=shown,
        committed_at=times.at(shown),
        superseded_at=times.at(later[0]) if later else None,
        is_deleted=row.column(OP_COLUMN)[0].as_py() == "delete",
        row=row.select(columns),
    )


class _CommitTimes:
    """Commit times read from the manifests, only those asked for (seqs commit in time order)."""

    def __init__(self, lake: DatasetLog):
        self.lake = lake
        self.known: dict[int, dt.datetime] = {}

    def at(self, seq: int) -> dt.datetime:
        if seq not in self.known:
            path = f"{layout.commits_dir(self.lake.directory)}/{layout.seq_name(seq)}"
            data = read_json_object(
                self.lake.storage,
                path,
                what="commit manifest",
                keys={"committed_at": str},
                fix="Restore it from a backup.",
            )
            self.known[seq] = _utc(dt.datetime.fromisoformat(data["committed_at"]))
        return self.known[seq]

    def last_at_or_before(self, seqs: list[int], cutoff: dt.datetime) -> int | None:
        """The last of the ascending ``seqs`` committed at or before ``cutoff`` (binary search)."""
        low, high = 0, len(seqs)
        while low < high:
            middle = (low + high) // 2
            if self.at(seqs[middle]) <= cutoff:
                low = middle + 1
            else:
                high = middle
        return seqs[low - 1] if low else None


# ---------------------------------------------------------------------------------------------- streams


def _stream_steps(is_deleted: bool) -> dict[str, Any]:
    """The steps of a stream that has not handled the record."""
    return {
        "transform": {"last_transformed_at": None, "data": None, "error": None, "is_deleted": is_deleted},
        "validate_schema": {"last_validated_at": None, "error": None, "is_deleted": is_deleted},
        "load": {"last_loaded_at": None, "data": None, "error": None, "is_deleted": is_deleted},
    }


def _stream_lineage(
    config: PrequelConfig,
    stream: Stream,
    storage: Store,
    provider_id: str,
    schema: pa.Schema,
    version: _Version,
    cutoff: dt.datetime | None,
) -> dict[str, Any]:
    destination = config.destination(stream.destination_id)
    state = StreamState(storage, provider_id, stream.id)
    load = _load_of(state, version.seq, cutoff)
    dead = _dead_letter(state, version, load, cutoff)
    rejected_by_its_load = dead is not None and dead.load_id in load.own_loads
    ran_at = load.finished_at if load.delivered else None
    if ran_at is None and dead is not None:
        ran_at = dead.written_at
    steps = _stream_steps(version.is_deleted)
    mapped_json, transform_error, violation, wire = _transform(stream, destination, schema, version)
    steps["transform"].update(last_transformed_at=_text(ran_at), data=mapped_json, error=transform_error)
    if transform_error is None:
        steps["validate_schema"].update(
            last_validated_at=_text(ran_at), error=_error(SCHEMA_VIOLATION, violation) if violation else None
        )
    if load.delivered and not rejected_by_its_load:
        steps["load"].update(last_loaded_at=_text(load.finished_at), data=wire)
    if dead is not None:
        steps["load"]["error"] = _error(_code_of(dead.reason), dead.reason)
    return {"stream_id": stream.id, "destination_id": destination.id, **steps}


def _transform(
    stream: Stream, destination: Destination, schema: pa.Schema, version: _Version
) -> tuple[dict[str, Any] | None, dict[str, str] | None, str | None, Any]:
    """The mapped record (JSON-ready), the mapping error, the ``record_schema`` violation, and the
    record as a load puts it on the wire (None when it is invalid)."""
    mapper = StreamMapper(stream)
    problems = mapper.check_columns(schema.names)
    if problems:
        return None, _error(MAPPING_ERROR, "; ".join(problems)), None, None
    try:
        mapped = mapper.apply(version.row)
    except ExpressionError as exc:
        return None, _error(MAPPING_ERROR, str(exc)), None, None
    record_schema = destination.record_schema
    templates = RequestTemplates.of(destination, reveal=False)
    checked = validate_records(mapped, record_schema, templates.header_checks(mapped))
    violation = checked.violations[0].as_py()
    shown = json_rows(converted_table(mapped, record_schema))[0]
    if violation is not None:
        return shown, None, violation, None
    # as the load encodes it (see engine.load._Load)
    required = set(record_schema.get("required", []))
    raw_json = {n for n, p in record_schema.get("properties", {}).items() if p.get("type") in ("object", "array")}
    text = encode_records(checked.valid, required=required, raw_json_fields=raw_json)[0].as_py()
    return shown, None, None, orjson.loads(text[:-1])


# ---------------------------------------------------------------------------------------------- delivery state


def _load_of(state: StreamState, seq: int, cutoff: dt.datetime | None) -> _LoadOf:
    """Whether commit ``seq`` was delivered (by ``cutoff``), by which load and when; the markers are
    found by binary search on their ``through_commit`` (they cover consecutive ranges)."""
    storage = state.storage
    folder = f"{state.directory}/_deliveries"
    markers = sorted(s for s in (layout.parse_manifest_seq(n) for n in storage.list_names(folder)) if s is not None)
    read: dict[int, dict[str, Any]] = {}

    def marker(i: int) -> dict[str, Any]:
        if i not in read:
            read[i] = read_json_object(
                storage,
                f"{folder}/{layout.seq_name(markers[i])}",
                what="delivery marker",
                keys={"through_commit": int},
                fix="Restore it, or move it aside: the stream then delivers again from the marker before it.",
            )
        return read[i]

    low, high = 0, len(markers)
    while low < high:
        middle = (low + high) // 2
        if marker(middle)["through_commit"] >= seq:
            high = middle
        else:
            low = middle + 1
    out = _LoadOf()
    if low > 0 and marker(low - 1).get("load_id"):
        out.other_loads.add(marker(low - 1)["load_id"])
    if low < len(markers):
        found = marker(low)
        finished = _parse_time(found.get("finished_at"))
        from_commit = found.get("from_commit")
        covers = not isinstance(from_commit, int) or from_commit < seq  # else its marker was removed (retention)
        if covers and found.get("load_id"):
            out.own_loads.add(found["load_id"])
        if cutoff is None or finished is None or finished <= cutoff:
            out.delivered = True
            out.finished_at = finished if covers else None
    plan = state.open_plan()
    if plan is not None:
        (out.own_loads if plan.from_commit < seq <= plan.to_commit else out.other_loads).add(plan.load_id)
    return out


def _dead_letter(
    state: StreamState, version: _Version, load: _LoadOf, cutoff: dt.datetime | None
) -> _DeadLetter | None:
    """The newest dead-letter entry of this version of the record: written by the load that sent it,
    or (a redelivery) while it was the record's latest version; only entries written by ``cutoff``."""
    storage = state.storage
    selector = pafs.FileSelector(storage.full_path(f"{state.directory}/dead_letter"), allow_not_found=True)
    found: list[_DeadLetter] = []
    for info in storage.fs.get_file_info(selector):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        written = _utc(info.mtime) if info.mtime is not None else None
        if cutoff is not None and written is not None and written > cutoff:
            continue
        rows = pq.read_table(
            info.path, filesystem=storage.fs, filters=[("record_id", "==", version.record_id)]
        ).to_pylist()  # this record's entries only: few
        for row in rows:
            load_id = row.get("load_id")
            if load_id in load.own_loads:
                pass
            elif load_id in load.other_loads or written is None:
                continue
            elif written < version.committed_at or (
                version.superseded_at is not None and written >= version.superseded_at
            ):
                continue
            found.append(_DeadLetter(row.get("reason") or "", written, load_id))
    if not found:
        return None
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    return max(found, key=lambda d: d.written_at or epoch)


# ---------------------------------------------------------------------------------------------- helpers


def _code_of(reason: str) -> str:
    """An error code for a dead letter's reason (the load writes them with these prefixes)."""
    if reason.startswith("record_schema:"):
        return SCHEMA_VIOLATION
    if reason.startswith("mapping:"):
        return MAPPING_ERROR
    if reason.startswith("not sent:"):
        return NOT_SENDABLE
    return DESTINATION_REJECTED


def _error(code: str, trace: str) -> dict[str, str]:
    return {"error_code": code, "error_trace": trace}


def _utc(value: dt.datetime) -> dt.datetime:
    """Aware, in UTC (a zone-less value is taken as UTC)."""
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _parse_time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return _utc(dt.datetime.fromisoformat(text))
    except ValueError:
        return None


def _text(value: dt.datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None
