"""Overlap reading with writing: a reader runs on its own thread, a few batches ahead of the consumer."""

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Yield ``items`` in order while the next ``depth`` are produced on a background thread.

    Memory stays bounded by ``depth`` items. An error in the reader is raised to the consumer; a
    consumer that stops early stops the reader (its iterator is closed on the reader's thread).
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((_DONE, None))
        except BaseException as exc:  # handed to the consumer
            slots.put((_DONE, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="prequel-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting for a free slot
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
