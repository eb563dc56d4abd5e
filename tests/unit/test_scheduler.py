"""The fair scheduler's admission: a per-device cap, a global limit, and a full queue shared evenly."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from pydantic import ValidationError

from llm.settings import describe_settings_error
from naila_graph.protocol import Request
from naila_graph.scheduler import FairScheduler, Overloaded
from naila_graph.settings import NailaSettings

_ids = itertools.count()


def _request(device: str) -> Request:
    return Request(
        device_id=device,
        task_id=f"{device}-{next(_ids)}",
        text="hello",
        input_type="text",
        confidence=None,
        thread_id=device,
    )


def _burst(scheduler: FairScheduler, devices: int, each: int) -> tuple[list[Request], list[Request]]:
    """Each device sends ``each`` requests back to back, one device after the other (the worst order
    for first come, first served). Returns (still waiting, refused or given way)."""
    queued: list[Request] = []
    refused: list[Request] = []
    for device in range(devices):
        for _ in range(each):
            request = _request(f"dev_{device}")
            try:
                displaced = scheduler.submit(request)
            except Overloaded:
                refused.append(request)
                continue
            queued.append(request)
            if displaced is not None:
                queued.remove(displaced)
                refused.append(displaced)
    return queued, refused


def test_a_burst_from_twenty_devices_leaves_every_device_a_place() -> None:
    scheduler = FairScheduler(limit=32, per_device=8)
    queued, refused = _burst(scheduler, devices=20, each=10)

    per_device = Counter(r.device_id for r in queued)
    assert scheduler.depth == 32 == len(queued)
    assert set(per_device) == {f"dev_{i}" for i in range(20)}  # nobody locked out
    assert set(per_device.values()) == {1, 2}  # 32 places over 20 devices, as even as it gets
    assert len(queued) + len(refused) == 200  # every request either waits or is refused, none lost


def test_the_device_holding_the_most_gives_way_with_its_newest_request() -> None:
    scheduler = FairScheduler(limit=4, per_device=4)
    chatty = [_request("chatty") for _ in range(4)]
    for request in chatty:
        assert scheduler.submit(request) is None
    assert scheduler.submit(_request("quiet")) is chatty[-1]
    assert scheduler.waiting("chatty") == 3 and scheduler.waiting("quiet") == 1


def test_among_equal_holders_the_newest_arrival_gives_way() -> None:
    scheduler = FairScheduler(limit=4)
    a1, a2, b1, b2 = _request("a"), _request("a"), _request("b"), _request("b")
    for request in (a1, b1, a2, b2):
        scheduler.submit(request)
    assert scheduler.submit(_request("c")) is b2


def test_a_full_queue_shared_evenly_refuses_the_newcomer() -> None:
    scheduler = FairScheduler(limit=2)
    scheduler.submit(_request("a"))
    scheduler.submit(_request("b"))
    with pytest.raises(Overloaded, match="NAILA_QUEUE_LIMIT=2"):
        scheduler.submit(_request("c"))  # taking b's only place would not make the queue fairer
    assert scheduler.depth == 2


def test_a_device_is_capped_even_when_the_queue_has_room() -> None:
    scheduler = FairScheduler(limit=32, per_device=2)
    scheduler.submit(_request("a"))
    scheduler.submit(_request("a"))
    with pytest.raises(Overloaded, match="NAILA_QUEUE_PER_DEVICE=2"):
        scheduler.submit(_request("a"))
    assert scheduler.submit(_request("b")) is None


async def test_a_device_that_gave_way_keeps_its_order_and_its_turn() -> None:
    scheduler = FairScheduler(limit=3)
    a1, a2, a3 = _request("a"), _request("a"), _request("a")
    for request in (a1, a2, a3):
        scheduler.submit(request)
    b1 = _request("b")
    assert scheduler.submit(b1) is a3
    assert [await scheduler.next(), await scheduler.next()] == [a1, b1]
    scheduler.done("a")
    assert await scheduler.next() == a2
    assert scheduler.depth == 0


def test_queue_per_device_setting_is_validated_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert NailaSettings().queue_per_device == 8
    monkeypatch.setenv("NAILA_QUEUE_PER_DEVICE", "0")
    with pytest.raises(ValidationError) as info:
        NailaSettings()
    assert "NAILA_QUEUE_PER_DEVICE='0'" in describe_settings_error(info.value)
