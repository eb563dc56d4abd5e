"""Fair request queue: one device's requests in arrival order, devices served round-robin, bounded."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque

from naila_graph.protocol import Request


class Overloaded(Exception):
    """The queue is full (``NAILA_QUEUE_LIMIT``)."""


class QueueClosed(Exception):
    """The server is shutting down and takes no new requests."""


class FairScheduler:
    """Requests wait per device; ``next()`` hands out the oldest request of the next device in turn.

    A device has at most one request in service, so its answers come in order; a device that was
    just served goes to the back of the line, so a chatty device cannot starve the others.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._waiting: dict[str, deque[Request]] = {}
        self._turns: deque[str] = deque()  # devices with waiting requests and none in service
        self._busy: set[str] = set()
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in service)."""
        return sum(len(q) for q in self._waiting.values())

    def submit(self, request: Request) -> None:
        if self._closed:
            raise QueueClosed("the server is shutting down")
        if self.depth >= self.limit:
            raise Overloaded(f"{self.depth} requests are already waiting (NAILA_QUEUE_LIMIT={self.limit})")
        queue = self._waiting.setdefault(request.device_id, deque())
        queue.append(request)
        if len(queue) == 1 and request.device_id not in self._busy:
            self._turns.append(request.device_id)
        self._notify()

    def remove(self, device_id: str, task_id: str | None = None) -> list[Request]:
        """Take waiting requests of a device out of the queue (one task, or all when ``task_id`` is None)."""
        queue = self._waiting.get(device_id)
        if not queue:
            return []
        taken = [r for r in queue if task_id is None or r.task_id == task_id]
        for request in taken:
            queue.remove(request)
        if not queue:
            self._forget(device_id)
        return taken

    def drain(self) -> list[Request]:
        """Close the queue and return everything still waiting."""
        self._closed = True
        left = [r for q in self._waiting.values() for r in q]
        self._waiting.clear()
        self._turns.clear()
        self._notify()
        return left

    async def next(self) -> Request | None:
        """The next request to serve (its device is then busy until ``done``); None once closed."""
        while not self._turns and not self._closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._closed:
            return None
        device_id = self._turns.popleft()
        queue = self._waiting[device_id]
        request = queue.popleft()
        if not queue:
            del self._waiting[device_id]
        self._busy.add(device_id)
        return request

    def done(self, device_id: str) -> None:
        self._busy.discard(device_id)
        if self._waiting.get(device_id):
            self._turns.append(device_id)
            self._notify()

    def _forget(self, device_id: str) -> None:
        self._waiting.pop(device_id, None)
        if device_id in self._turns:
            self._turns.remove(device_id)

    def _notify(self) -> None:
        self._wakeup.set()


class RecentIds:
    """Task ids seen in the last ``ttl`` seconds (QoS 1 redelivery: answer once)."""

    def __init__(self, ttl: float = 300.0, max_size: int = 100_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def seen_before(self, key: str) -> bool:
        """True when ``key`` was seen within ``ttl``; records it otherwise."""
        now = time.monotonic()
        while self._seen and (now - next(iter(self._seen.values())) > self.ttl or len(self._seen) > self.max_size):
            self._seen.popitem(last=False)
        if key in self._seen:
            return True
        self._seen[key] = now
        return False
