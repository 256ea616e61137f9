"""Batches loaded ahead by a background thread (``train.prefetch``), pinned for the GPU.

Why: a captured GPU step takes a few milliseconds; a batch of 16 patches cut, augmented and
converted in the training thread takes about as long, and the GPU would wait for it. With
``num_workers: 0`` the patch store is read in-process, so a thread that keeps ``depth``
batches ready hides that time (numpy and torch release the GIL for most of the work). With
DataLoader workers the loader already prefetches; this adds the pinning thread's overlap only.

The wrapped source yields exactly the batches of the source, in order, so a run is the same
function of its start iteration and resume stays exact.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from torch import Tensor

from sgsr.data.batches import BatchSource

Batch = tuple[Tensor, Tensor]

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class PrefetchIterator:
    """Iterator over `inner` run `depth` items ahead by a daemon thread.

    An exception in the source is raised here, at the item where it happened. The thread stops
    when the source ends, fails, or this iterator is closed or garbage-collected."""

    def __init__(self, inner: Iterator[Batch], depth: int, pin: bool) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=_produce, args=(inner, self._queue, self._stop, pin), daemon=True,
            name="sgsr-prefetch",
        )  # fmt: skip
        self._thread.start()

    def __iter__(self) -> PrefetchIterator:
        return self

    def __next__(self) -> Batch:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self._done = True
            raise StopIteration
        if isinstance(item, _Failed):
            self._done = True
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the thread (it drops the source iterator, e.g. a DataLoader's workers)."""
        self._done = True
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)  # absent when __init__ refused its arguments
        if stop is not None:
            stop.set()


def _produce(inner: Iterator[Batch], out: queue.Queue, stop: threading.Event, pin: bool) -> None:
    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for lr, hr in inner:
            if pin and not lr.is_pinned():
                lr, hr = lr.pin_memory(), hr.pin_memory()
            if not put((lr, hr)):
                return
        put(_END)
    except BaseException as exc:  # handed to the consumer, raised there
        put(_Failed(exc))


def prefetched(source: BatchSource, depth: int, pin: bool = False) -> BatchSource:
    """`source` with each iterator run `depth` batches ahead in a thread (0: `source` itself).
    ``pin``: page-lock batches that are not pinned yet, for asynchronous copies to a GPU."""
    if depth <= 0:
        return source
    return lambda start: PrefetchIterator(source(start), depth, pin)
