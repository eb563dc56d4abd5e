"""Fair request queue: one device's requests in arrival order, devices served round-robin, bounded."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import OrderedDict, deque
from typing import NamedTuple

from naila_graph.protocol import Request


class Overloaded(Exception):
    """The request was not queued: the queue is full, or its device already holds its share."""


class QueueClosed(Exception):
    """The server is shutting down and takes no new requests."""


class _Waiting(NamedTuple):
    arrival: int  # admission order across all devices (the newest waiting request gives way first)
    request: Request


class FairScheduler:
    """Requests wait per device; ``next()`` hands out the oldest request of the next device in turn.

    Service: a device has at most one request in service, so its answers come in order; a device
    that was just served goes to the back of the line, so a chatty device cannot starve the others.

    Admission (``submit``), so that no device is locked out of a burst:

    * a device holds at most ``per_device`` waiting requests (``NAILA_QUEUE_PER_DEVICE``); more are
      refused (:class:`Overloaded`);
    * while fewer than ``limit`` requests wait (``NAILA_QUEUE_LIMIT``) every other request is queued;
    * when ``limit`` are waiting, a request is still queued if its device holds at least two fewer
      waiting requests than the device holding the most: that device's newest waiting request gives
      way (``submit`` returns it, to be refused ``overloaded``). Among equal holders the one whose
      newest request arrived last gives way. Otherwise the new request is refused. A full queue thus
      ends shared as evenly as it can be (every device holds ⌊limit/devices⌋ or one more), and a
      device gets a slot whenever some other device holds two or more.

    The request in service does not count: only waiting requests hold slots.
    """

    def __init__(self, limit: int, per_device: int | None = None) -> None:
        self.limit = limit
        self.per_device = per_device if per_device is not None else limit
        self._waiting: dict[str, deque[_Waiting]] = {}
        self._turns: deque[str] = deque()  # devices with waiting requests and none in service
        self._busy: set[str] = set()
        self._arrivals = itertools.count()
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def depth(self) -> int:
        """Requests waiting (not yet in service)."""
        return sum(len(q) for q in self._waiting.values())

    def waiting(self, device_id: str) -> int:
        """How many requests of ``device_id`` wait (not counting the one in service)."""
        return len(self._waiting.get(device_id, ()))

    def submit(self, request: Request) -> Request | None:
        """Queue ``request``. Returns a waiting request of another device that gave way to it (the caller
        refuses that one ``overloaded``), or None. Raises :class:`Overloaded` when ``request`` is not
        queued, :class:`QueueClosed` after :meth:`drain`."""
        if self._closed:
            raise QueueClosed("the server is shutting down")
        held = self.waiting(request.device_id)
        if held >= self.per_device:
            raise Overloaded(
                f"device {request.device_id} already has {held} requests waiting"
                f" (NAILA_QUEUE_PER_DEVICE={self.per_device})"
            )
        displaced = None
        if self.depth >= self.limit:
            displaced = self._give_way(held)
            if displaced is None:
                raise Overloaded(
                    f"{self.depth} requests are already waiting (NAILA_QUEUE_LIMIT={self.limit}) and device"
                    f" {request.device_id} holds its fair share ({held})"
                )
        queue = self._waiting.setdefault(request.device_id, deque())
        queue.append(_Waiting(next(self._arrivals), request))
        if len(queue) == 1 and request.device_id not in self._busy:
            self._turns.append(request.device_id)
        self._notify()
        return displaced

    def _give_way(self, newcomer_holds: int) -> Request | None:
        """Take the newest waiting request of the largest holder if it holds two more than the newcomer."""
        if not self._waiting:
            return None
        device_id = max(self._waiting, key=lambda d: (len(self._waiting[d]), self._waiting[d][-1].arrival))
        queue = self._waiting[device_id]
        if len(queue) < newcomer_holds + 2:
            return None
        return queue.pop().request  # two or more were waiting: the device keeps its place in line

    def remove(self, device_id: str, task_id: str | None = None) -> list[Request]:
        """Take waiting requests of a device out of the queue (one task, or all when ``task_id`` is None)."""
        queue = self._waiting.get(device_id)
        if not queue:
            return []
        taken = [w for w in queue if task_id is None or w.request.task_id == task_id]
        for item in taken:
            queue.remove(item)
        if not queue:
            self._forget(device_id)
        return [w.request for w in taken]

    def drain(self) -> list[Request]:
        """Close the queue and return everything still waiting."""
        self._closed = True
        left = [w.request for q in self._waiting.values() for w in q]
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
        request = queue.popleft().request
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

    def forget(self, key: str) -> None:
        """Let ``key`` be seen again (a refused request may be retried with the same task id)."""
        self._seen.pop(key, None)
