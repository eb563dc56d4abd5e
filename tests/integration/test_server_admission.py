"""Admission by the server, against a real mosquitto with the tiny GGUF: a burst from many devices is
shared fairly, refusals are logged, and a request cancelled while waiting says so."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llm import ChatLlamaCpp
from naila_graph import protocol as p
from naila_graph.server import NailaServer
from naila_graph.settings import MQTTSettings, NailaSettings
from tests.support.mqtt import Robot, robot

pytestmark = pytest.mark.broker

DEVICES = 20
TURNS_EACH = 10


@contextlib.asynccontextmanager
async def running(broker: Any, tmp_path: Path, model: Any, **settings: Any) -> AsyncIterator[NailaServer]:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "memory_url": f"sqlite:///{tmp_path / 'memory.sqlite'}",
        "health_interval_seconds": 0.5,
        **settings,
    }
    mqtt = MQTTSettings(broker_host=broker.host, broker_port=broker.port, client_id=f"naila-{uuid.uuid4().hex[:8]}")
    async with NailaServer(NailaSettings(**values), mqtt, chat_model=model) as server:
        yield server


def _model(path: str) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=path, n_ctx=2048, max_tokens=8, temperature=0.0, seed=1).load()


def _refused(bot: Robot, devices: list[str]) -> list[dict[str, Any]]:
    return [e for d in devices for e in bot.on(p.error_topic(d))]


async def test_a_burst_from_many_devices_answers_every_device_and_loses_nothing(
    mosquitto: Any, tmp_path: Path, tiny_model: str
) -> None:
    model = _model(tiny_model)
    devices = [f"burst_{i:02d}" for i in range(DEVICES)]
    sent: dict[str, list[str]] = {}
    async with robot(mosquitto.host, mosquitto.port) as bot, running(mosquitto, tmp_path, model) as srv:
        ticket = await asyncio.to_thread(model._gate.acquire, None)  # the model is busy: the queue fills up
        try:
            for device in devices:  # each robot sends its turns back to back, one robot after the other
                sent[device] = [await bot.task(device, f"tell me fact {turn}") for turn in range(TURNS_EACH)]
            total = DEVICES * TURNS_EACH
            await bot.wait_for(
                lambda: len(_refused(bot, devices)) + srv._scheduler.depth + len(srv._running) == total,
                what="every request queued or refused",
            )
        finally:
            model._gate.release(ticket)
        await bot.wait_for(
            lambda: len(bot.on(p.RESPONSE_TOPIC)) + len(_refused(bot, devices)) >= total,
            within=180,
            what="every request answered or refused",
        )
        await asyncio.sleep(0.5)  # a duplicate would arrive now

    answered = Counter(a["task_id"] for a in bot.on(p.RESPONSE_TOPIC))
    errors = _refused(bot, devices)
    refused = Counter(e["task_id"] for e in errors)
    assert {e["error"] for e in errors} == {"overloaded"}
    assert all(n == 1 for n in (answered + refused).values())  # one outcome per request, none twice
    assert set(answered + refused) == {t for ids in sent.values() for t in ids}  # none lost
    by_device = Counter(a["target_device"] for a in bot.on(p.RESPONSE_TOPIC))
    assert set(by_device) == set(devices), f"devices without an answer: {set(devices) - set(by_device)}"
    for device in devices:  # each device's answers in its own order
        order = [a["task_id"] for a in bot.on(p.RESPONSE_TOPIC) if a["target_device"] == device]
        assert order == [t for t in sent[device] if t in answered]


async def test_empty_input_is_refused_and_logged(
    mosquitto: Any, tmp_path: Path, tiny_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="naila.server")
    async with robot(mosquitto.host, mosquitto.port) as bot, running(mosquitto, tmp_path, _model(tiny_model)):
        task_id = await bot.task("robot_quiet", "   ")
        error = await bot.error("robot_quiet", task_id=task_id)
    assert error["error"] == "empty_input"
    logged = [r.getMessage() for r in caplog.records if r.name == "naila.server" and task_id in r.getMessage()]
    assert any("device=robot_quiet" in m and "empty" in m for m in logged), logged


async def test_a_request_cancelled_while_waiting_is_answered_cancelled_not_pattern(
    mosquitto: Any, tmp_path: Path, tiny_model: str
) -> None:
    model = _model(tiny_model)
    async with robot(mosquitto.host, mosquitto.port) as bot, running(mosquitto, tmp_path, model) as srv:
        ticket = await asyncio.to_thread(model._gate.acquire, None)
        try:
            first = await bot.task("robot_c", "tell me about the sea")
            await bot.wait_for(lambda: srv._running, what="the first request in service")
            second = await bot.task("robot_c", "tell me about the moon")
            await bot.wait_for(lambda: srv._scheduler.depth == 1, what="the second request waiting")
            await bot.publish(p.CANCEL_TOPIC, {"device_id": "robot_c", "task_id": second})
            cancelled = await bot.answer(second)
        finally:
            model._gate.release(ticket)
        await bot.answer(first)
    response = cancelled["response"]
    assert (response["finish_reason"], response["source"], response["text"]) == ("cancelled", "cancelled", "")
    assert bot.on(p.stream_topic("robot_c"), second) == [{"task_id": second, "seq": 0, "text": "", "final": True}]


async def test_a_request_refused_overloaded_can_be_retried_with_the_same_task_id(
    mosquitto: Any, tmp_path: Path, tiny_model: str
) -> None:
    model = _model(tiny_model)
    async with (
        robot(mosquitto.host, mosquitto.port) as bot,
        running(mosquitto, tmp_path, model, queue_per_device=1) as srv,
    ):
        ticket = await asyncio.to_thread(model._gate.acquire, None)
        try:
            first = await bot.task("robot_r", "tell me about rivers")
            await bot.wait_for(lambda: srv._running, what="the first request in service")
            second = await bot.task("robot_r", "tell me about lakes")
            third = await bot.task("robot_r", "tell me about seas")
            error = await bot.error("robot_r", task_id=third)
        finally:
            model._gate.release(ticket)
        await bot.answer(first)
        await bot.answer(second)
        await bot.task("robot_r", "tell me about seas", task_id=third)  # "try again shortly"
        retried = await bot.answer(third, within=15)
    assert error["error"] == "overloaded" and "NAILA_QUEUE_PER_DEVICE=1" in error["message"]
    assert retried["response"]["finish_reason"] in ("stop", "length")
