"""Training batches prepared ahead of the step on a background thread (`data.prefetch`).

The train loop asks for the next batch's model inputs; a worker thread has already taken the next
few batches from the training stream and turned each into tensors (audio from the bank, padding,
labels, the encoder cache's states; pinned and copied with `non_blocking=True` on CUDA), so a GPU
step never waits for Python to build its batch. A thread, not DataLoader worker processes: the
work is numpy and torch calls that release the GIL, the audio bank and the encoder cache are
shared without copies, and the order of batches is the stream's own (exact resume is untouched:
the loop counts the batches it consumed, not those prepared).

`depth=0` prepares each batch on the calling thread, when it is asked for (no thread at all).
An exception in the worker is raised in the consumer at the batch it happened on.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

_DONE = object()


class Prefetcher:
    """Iterator of `prepare(item)` for each item of `source`, `depth` of them prepared ahead.

    `context` (e.g. the run's autocast) is entered around `prepare` on the worker thread: autocast
    and grad mode are per thread, so the worker sets its own."""

    def __init__(self, source: Iterator[Any], prepare: Callable[[Any], Any], depth: int,
                 context: Callable[[], Any] | None = None):
        self._source, self._prepare, self._context = source, prepare, context
        self._queue: queue.Queue | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._work, name="batch-prefetch", daemon=True)
            self._thread.start()

    def _call(self, item: Any) -> Any:
        if self._context is None:
            return self._prepare(item)
        with self._context():
            return self._prepare(item)

    def _put(self, entry: tuple[Any, BaseException | None]) -> bool:
        """Queue `entry` unless the consumer closed us meanwhile (then False)."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        import torch

        try:
            with torch.no_grad():  # inputs need no autograd history (the encoder cache runs the encoder)
                for item in self._source:
                    if not self._put((self._call(item), None)):
                        return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put((None, exc))
            return
        self._put((_DONE, None))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Any:
        if self._queue is None:
            return self._call(next(self._source))
        prepared, error = self._queue.get()
        if error is not None:
            raise error
        if prepared is _DONE:
            raise StopIteration
        return prepared

    def close(self) -> None:
        """Stop the worker (it finishes the batch it is preparing) and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
