"""Overlap reading with writing: readers run on their own threads, a few batches ahead of the consumer."""

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def read_ahead(items: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Yield ``items`` in order while the next ``depth`` are produced on a background thread."""
    return interleave([items], depth)


def interleave(sources: Sequence[Iterable[T]], depth: int = 4) -> Iterator[T]:
    """Yield the items of all ``sources`` as they come, each source read on its own thread.

    Memory stays bounded by ``depth`` items. The first error of any source is raised to the
    consumer; a consumer that stops early stops every source (closing its iterator on its thread).
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce(source: Iterable[T]) -> None:
        iterator = iter(source)
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

    threads = [
        threading.Thread(target=produce, args=(s,), name=f"prequel-read-{i}", daemon=True)
        for i, s in enumerate(sources)
    ]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            item, error = slots.get()
            if item is _DONE:
                if error is not None:
                    raise error
                running -= 1
                continue
            yield item
    finally:
        stop.set()
        while any(t.is_alive() for t in threads):  # unblock readers waiting for a free slot
            try:
                slots.get(timeout=0.1)
            except queue.Empty:
                pass
        for thread in threads:
            thread.join()
