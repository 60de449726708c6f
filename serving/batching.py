"""Serve whatever is waiting together, with no added wait.

The gRPC server runs each call in a worker thread of its own. A call that finds no batch
running runs one at once, with just itself in it: a lone request costs what it cost unbatched.
A call that arrives while a batch runs waits; when the running batch is done, its leader hands
over to the oldest waiting call, which takes everything that queued up meanwhile (up to
``max_batch``) and runs it as the next batch. So a batch is exactly the requests that arrived
while the previous one ran: none is held back to wait for company (TF Serving's advice for
CPU serving, ``batch_timeout_micros=0``; Triton's dynamic batcher defaults to no delay too),
and the busier the server, the larger the batches and the less each request costs. No thread
is dedicated to batching, and every thread runs at most the one batch its own request is in.

This is flat combining; it knows nothing of gRPC or of what a request is.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    """One call's request, its outcome once served, and the lock its thread sleeps on."""

    __slots__ = ("done", "item", "outcome", "wake")

    def __init__(self, item: T):
        self.item = item
        self.outcome: R | BaseException | None = None
        self.done = False
        self.wake = threading.Lock()
        self.wake.acquire()  # released by whoever serves this slot or hands it the lead


class Batcher(Generic[T, R]):
    """Runs ``run`` on batches of waiting items; ``submit`` returns one item's outcome.

    Args:
        run: Items → one outcome per item, in order. An outcome that is an exception is
            raised in its caller's thread alone; ``run`` raising fails the whole batch.
        max_batch: The most items one batch takes.
    """

    def __init__(self, run: Callable[[Sequence[T]], Sequence[R | BaseException]], max_batch: int):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run = run
        self._max = max_batch
        self._mutex = threading.Lock()
        self._queue: deque[_Slot[T, R]] = deque()
        self._running = False
        """True from when a caller takes the lead until the last batch hands over to no one."""

    @property
    def waiting(self) -> int:
        """Calls queued behind the running batch (and the one leading the next)."""
        return len(self._queue)

    def submit(self, item: T) -> R:
        """``item``'s outcome, served alone or in a batch with whatever else is waiting.

        Raises:
            BaseException: the item's outcome was an exception, or the batch failed.
        """
        slot: _Slot[T, R] = _Slot(item)
        with self._mutex:
            self._queue.append(slot)
            lead = not self._running
            self._running = True
        if not lead:
            slot.wake.acquire()  # until a leader serves it, or hands it the lead
        if not slot.done:
            self._lead()
        outcome = slot.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]  # done: an R

    def _lead(self) -> None:
        """Runs one batch from the head of the queue (this caller's slot is at its head), then
        wakes its callers and hands the lead to the next waiting one, if any."""
        with self._mutex:
            take = min(len(self._queue), self._max)
            batch = [self._queue.popleft() for _ in range(take)]
        try:
            outcomes: Sequence[R | BaseException] = self._run([s.item for s in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(outcomes)} outcomes")
        except BaseException as exc:  # the batch failed: each of its callers sees why
            outcomes = [exc] * len(batch)
        for s, outcome in zip(batch, outcomes, strict=True):
            s.outcome = outcome
            s.done = True
        with self._mutex:
            following = self._queue[0] if self._queue else None
            self._running = following is not None
        for s in batch[1:]:  # the first is this caller's own
            s.wake.release()
        if following is not None:
            following.wake.release()  # not done: it leads the next batch
