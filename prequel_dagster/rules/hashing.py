"""Subject hashes: the values of a few fields, combined, as one 64-bit number per row, in numpy.

Deduplication and the frequency filter only ever ask "same subject?", so a subject is stored and
compared as a keyed 64-bit hash (8 bytes, whatever the values' width). The cost is the chance that
two different subjects share a hash: about n²/2⁶⁵ for n subjects in the state (10⁻⁷ at 2 million,
10⁻⁵ at 20 million); a collision makes the later subject look already delivered. The key (``seed``)
is random per stream and kept with the state in the lake, so collisions cannot be aimed at from
the data (the hash is not a cryptographic one: it is splitmix64's finaliser over 8-byte words).

Every type is hashed from its value, not its Arrow layout, so batches that differ only in layout
agree: int8..int64 alike, string and large_string alike, timestamps by instant in microseconds
(zone and unit do not matter), dictionaries by value. Types are not mixed: the integer 1, the
float 1.0 and the text "1" are three subjects, as Narrative says of "differently formatted" values.
A null is a value of its own (as SQL's GROUP BY treats it); filter it out first if it is no subject.
Struct values hash from their fields; lists and maps are refused (reference a leaf instead).
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ..config.data_rules import RulesError
from .fields import plain

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_BYTE_MASKS = np.array([0, *[(1 << (8 * k)) - 1 for k in range(1, 8)], _MASK64], dtype=np.uint64)

# Families keep values of different kinds apart (1 != 1.0 != "1").
_NULL, _BOOL, _INT, _FLOAT, _TEXT, _BYTES, _TIME, _DATE, _DECIMAL, _STRUCT, _OTHER = range(1, 12)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection of uint64 that spreads every input bit (wraps, in place)."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def _mix_int(value: int) -> int:
    return int(_mix(np.array([value & _MASK64], dtype=np.uint64))[0])


def _key(seed: int, *parts: int) -> np.uint64:
    h = seed & _MASK64
    for part in parts:
        h = _mix_int(h ^ ((part * _GOLDEN) & _MASK64))
    return np.uint64(h)


def column_key(seed: int) -> np.uint64:
    """The key :func:`column_hashes` takes for the subjects of a state with key ``seed``."""
    return _key(seed, 0xC01)


def combine(hashes: Sequence[np.ndarray], seed: int) -> np.ndarray:
    """One uint64 per row from the column hashes of the fields of a subject, in order."""
    acc = np.full(len(hashes[0]) if hashes else 0, _key(seed, 0x5EED), dtype=np.uint64)
    for i, h in enumerate(hashes):
        acc *= np.uint64(_GOLDEN)
        acc += h ^ _key(seed, i + 1)
        _mix(acc)
    return acc


def subject_hashes(columns: Sequence[pa.Array], seed: int, *, fields: Sequence[str], where: str) -> np.ndarray:
    """One uint64 per row for the combination of ``columns`` (equal values, equal hash)."""
    key = column_key(seed)
    return combine([column_hashes(v, key, field=f, where=where) for v, f in zip(columns, fields)], seed)


def column_hashes(values: pa.Array, key: np.uint64, *, field: str, where: str) -> np.ndarray:
    """One uint64 per value of one column, nulls included."""
    values = plain(values)
    t = values.type
    n = len(values)
    if pa.types.is_null(t):
        return np.full(n, _key(int(key), _NULL), dtype=np.uint64)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        h = text_hashes(values, _key(int(key), _TEXT))
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        h = text_hashes(values.cast(pa.large_binary()), _key(int(key), _BYTES))
    elif pa.types.is_boolean(t):
        h = _fixed(pc.fill_null(values, False).cast(pa.uint8()).to_numpy().astype(np.uint64), key, _BOOL)
    elif pa.types.is_integer(t):
        raw = pc.fill_null(values, 0).to_numpy()
        h = _fixed(raw.view(np.uint64) if raw.dtype == np.uint64 else raw.astype(np.int64).view(np.uint64), key, _INT)
    elif pa.types.is_floating(t):
        raw = pc.fill_null(values.cast(pa.float64()), 0.0).to_numpy() + 0.0  # -0.0 == 0.0
        raw[np.isnan(raw)] = np.nan  # one NaN
        h = _fixed(raw.view(np.uint64), key, _FLOAT)
    elif pa.types.is_timestamp(t):
        micros = pc.cast(values, pa.timestamp("us", t.tz), safe=False).cast(pa.int64())
        h = _fixed(pc.fill_null(micros, 0).to_numpy().view(np.uint64), key, _TIME)
    elif pa.types.is_date(t):
        days = values.cast(pa.date32()).cast(pa.int32()).cast(pa.int64())
        h = _fixed(pc.fill_null(days, 0).to_numpy().view(np.uint64), key, _DATE)
    elif pa.types.is_decimal(t):
        h = text_hashes(values.cast(pa.string()), _key(int(key), _DECIMAL))
    elif pa.types.is_time(t) or pa.types.is_duration(t):
        h = _fixed(pc.fill_null(values.cast(pa.int64()), 0).to_numpy().view(np.uint64), key, _OTHER)
    elif pa.types.is_struct(t):
        parts = [values.field(j) for j in range(t.num_fields)]
        names = [f"{field}.{t.field(j).name}" for j in range(t.num_fields)]
        h = subject_hashes(parts, int(_key(int(key), _STRUCT)), fields=names, where=where)
    else:
        raise RulesError(
            f"{where}: field '{field}' is {t}, which cannot make a subject; reference a leaf (col.key) instead"
        )
    if values.null_count:
        h[values.is_null().to_numpy(zero_copy_only=False)] = _key(int(key), _NULL)
    return h


def _fixed(raw: np.ndarray, key: np.uint64, family: int) -> np.ndarray:
    return _mix(raw ^ _key(int(key), family))


def text_hashes(values: pa.Array, key: np.uint64) -> np.ndarray:
    """Hashes of variable-length values (string or binary): each value's bytes in 8-byte words, each
    word mixed with its position and the key, summed, and finished with the length. The loop runs
    once per word of the longest value, over the values still that long (so its total work is the
    number of words)."""
    n = len(values)
    wide = pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type)
    raw_offsets = np.frombuffer(values.buffers()[1], dtype=np.int64 if wide else np.int32)
    offsets: npt.NDArray[np.int64] = raw_offsets[values.offset : values.offset + n + 1].astype(np.int64)
    data = values.buffers()[2]
    lo, hi = (int(offsets[0]), int(offsets[-1])) if n else (0, 0)
    padded = np.zeros(hi - lo + 8, dtype=np.uint8)  # every 8-byte read stays inside
    if data is not None and hi > lo:
        padded[: hi - lo] = np.frombuffer(data, dtype=np.uint8, count=hi - lo, offset=lo)
    words_at = np.ndarray(shape=(hi - lo + 1,), dtype="<u8", buffer=padded, strides=(1,))  # a word at every byte
    starts, ends = offsets[:-1] - lo, offsets[1:] - lo
    lengths = ends - starts
    word_counts = (lengths + 7) // 8
    h = np.zeros(n, dtype=np.uint64)
    rows: np.ndarray | None = None  # None: all rows
    k = 0
    while True:
        position_key = _key(int(key), k + 1)
        if rows is None:
            at = starts + 8 * k
            words = words_at[at] & _BYTE_MASKS[np.minimum(ends - at, 8)]
            h += _mix(words ^ position_key)
        else:
            at = starts[rows] + 8 * k
            words = words_at[at] & _BYTE_MASKS[np.minimum(ends[rows] - at, 8)]
            h[rows] += _mix(words ^ position_key)
        k += 1
        longer = word_counts > k
        if rows is None:
            if n and longer.all():
                continue
            rows = np.flatnonzero(longer)
        else:
            rows = rows[longer[rows]]
        if not rows.size:
            break
    h ^= _mix(lengths.astype(np.uint64) ^ key)
    return _mix(h)
