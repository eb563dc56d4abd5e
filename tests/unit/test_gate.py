"""The fair gate: one holder at a time, FIFO order, bounded and cancellable waits."""

from __future__ import annotations

import threading
import time

import pytest

from llm.errors import GenerationCancelledError, QueueTimeoutError
from llm.gate import FairGate


def test_waiters_are_served_in_arrival_order() -> None:
    gate = FairGate()
    first = gate.acquire()
    order: list[int] = []
    threads = []
    for i in range(5):

        def run(i: int = i) -> None:
            ticket = gate.acquire(timeout=10)
            order.append(i)
            gate.release(ticket)

        t = threading.Thread(target=run)
        t.start()
        threads.append(t)
        while gate.queue_depth < i + 1:  # make arrival order deterministic
            time.sleep(0.001)
    gate.release(first)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_only_one_holder_at_a_time() -> None:
    gate = FairGate()
    inside = 0
    peak = 0
    lock = threading.Lock()

    def run() -> None:
        nonlocal inside, peak
        for _ in range(50):
            ticket = gate.acquire(timeout=10)
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.0002)
            with lock:
                inside -= 1
            gate.release(ticket)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert peak == 1


def test_queue_timeout_raises_and_leaves_the_queue() -> None:
    gate = FairGate()
    held = gate.acquire()
    with pytest.raises(QueueTimeoutError, match="waited"):
        gate.acquire(timeout=0.05)
    assert gate.queue_depth == 0
    gate.release(held)
    gate.release(gate.acquire(timeout=0.05))  # the abandoned ticket does not block anyone


def test_cancelled_waiter_leaves_without_blocking_the_next() -> None:
    gate = FairGate()
    held = gate.acquire()
    cancel = threading.Event()
    errors: list[BaseException] = []

    def wait_cancelled() -> None:
        try:
            gate.acquire(timeout=10, cancel=cancel)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=wait_cancelled)
    t.start()
    while gate.queue_depth < 1:
        time.sleep(0.001)
    cancel.set()
    t.join(2)
    assert isinstance(errors[0], GenerationCancelledError)
    gate.release(held)
    gate.release(gate.acquire(timeout=0.5))


def test_release_by_non_holder_is_an_error() -> None:
    gate = FairGate()
    ticket = gate.acquire()
    with pytest.raises(RuntimeError):
        gate.release(ticket + 1)
