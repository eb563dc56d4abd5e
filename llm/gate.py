"""A fair (FIFO) gate that lets one generation at a time use the llama context."""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque

from llm.errors import GenerationCancelledError, QueueTimeoutError


class FairGate:
    """First come, first served mutual exclusion usable from any thread.

    ``acquire`` blocks until every earlier caller has released the gate. Waiting is bounded by a
    timeout and can be abandoned through a cancel event; an abandoned ticket leaves the queue, so it
    never blocks the callers behind it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._holder: int | None = None
        self._tickets = itertools.count()

    @property
    def queue_depth(self) -> int:
        """Callers waiting (not counting the holder)."""
        with self._cond:
            return len(self._queue)

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._holder is not None

    def acquire(self, timeout: float | None = None, cancel: threading.Event | None = None) -> int:
        """Wait for our turn; returns the ticket to pass to :meth:`release`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            ticket = next(self._tickets)
            self._queue.append(ticket)
            try:
                while self._holder is not None or self._queue[0] != ticket:
                    if cancel is not None and cancel.is_set():
                        raise GenerationCancelledError("cancelled while waiting for the model")
                    wait = 0.05 if cancel is not None else None
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise QueueTimeoutError(
                                f"waited {timeout:.1f}s for the model without getting it"
                                f" ({len(self._queue) - 1} other request(s) queued);"
                                " raise LLM_QUEUE_TIMEOUT_SECONDS or reduce the load"
                            )
                        wait = remaining if wait is None else min(wait, remaining)
                    self._cond.wait(wait)
            except BaseException:
                self._queue.remove(ticket)
                self._cond.notify_all()
                raise
            self._queue.popleft()
            self._holder = ticket
            return ticket

    def release(self, ticket: int) -> None:
        with self._cond:
            if self._holder != ticket:
                raise RuntimeError("releasing a gate ticket that does not hold the gate")
            self._holder = None
            self._cond.notify_all()
