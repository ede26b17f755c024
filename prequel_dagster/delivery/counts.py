"""Prequel's Load counters, updated from the loading thread and the sender threads alike."""

import threading
from dataclasses import dataclass, field


@dataclass
class LoadCounts:
    """Prequel's Load counters plus what the wire saw."""

    records_processed: int = 0
    records_transformed: int = 0
    records_valid: int = 0
    records_loaded: int = 0
    records_errored: int = 0
    records_deleted_sent: int = 0
    records_not_found: int = 0
    batches_sent: int = 0
    batches_rejected: int = 0
    batches_split: int = 0
    batches_skipped_already_acked: int = 0
    requests: int = 0
    retries: int = 0
    bytes_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        """Add to counters from any thread: every update of a load's counts goes through here."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if not name.startswith("_")}
