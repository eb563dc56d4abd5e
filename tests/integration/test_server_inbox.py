"""The server's durable inbox with a real broker, the tiny GGUF and real SQLite files (issue #12 defect 3):
rows a crash left unsettled are answered first on the next start; a broker redelivery of what was taken
is not answered twice; every outcome (answer, refusal, bad payload) settles its row."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llm import ChatLlamaCpp
from naila_graph import protocol as p
from naila_graph.inbox import Inbox, inbox_path
from naila_graph.server import NailaServer
from naila_graph.settings import MQTTSettings, NailaSettings
from tests.support.mqtt import robot

pytestmark = pytest.mark.broker


@contextlib.asynccontextmanager
async def running(broker: Any, data_dir: Path, model: Any, client_id: str) -> AsyncIterator[NailaServer]:
    settings = NailaSettings(
        data_dir=data_dir, memory_url=f"sqlite:///{data_dir / 'memory.sqlite'}", health_interval_seconds=0.5
    )
    mqtt = MQTTSettings(broker_host=broker.host, broker_port=broker.port, client_id=client_id)
    async with NailaServer(settings, mqtt, chat_model=model) as server:
        yield server


def _model(path: str) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=path, n_ctx=2048, max_tokens=8, temperature=0.0, seed=1).load()


def _task(task_id: str, device: str, text: str) -> bytes:
    return p.encode({"task_id": task_id, "device_id": device, "transcription": text})


async def test_rows_left_by_a_crash_are_answered_first_in_order_with_their_task_ids(
    mosquitto: Any, tmp_path: Path, tiny_model: str
) -> None:
    client_id = f"naila-{uuid.uuid4().hex[:8]}"
    with Inbox(inbox_path(tmp_path, client_id)) as inbox:  # what a killed server left behind
        inbox.add(p.TASK_TOPIC, _task("left-1", "inbox_bot", "first"), "left-1")
        inbox.add("naila/ai/processing/stt/inbox_bot", b'{"transcription": "second", "confidence": 0.9}', "stt-kept")
        bad = b'{"device_id": "inbox_bot", "task_id": "left-3", "transcription": 5}'
        inbox.add(p.TASK_TOPIC, bad, None)  # refused again after the restart: the device still hears why
        answered = inbox.add(p.TASK_TOPIC, _task("done-0", "inbox_bot", "already answered"), "done-0")
        inbox.settle(answered)
    model = _model(tiny_model)
    async with robot(mosquitto.host, mosquitto.port) as bot, running(mosquitto, tmp_path, model, client_id) as srv:
        await bot.wait_for(lambda: len(bot.on(p.RESPONSE_TOPIC)) >= 2, 60, "the recovered answers")
        await bot.error("inbox_bot", 20)
        await asyncio.sleep(0.5)  # anything more would arrive now
        assert srv.stats.recovered_total == 3
        assert srv.health_payload()["mqtt_service"]["recovered_requests"] == 3
        assert srv.inbox is not None
        await bot.wait_for(lambda: srv.inbox.pending_count() == 0, 10, "every recovered row settled")  # type: ignore[union-attr]
    assert [a["task_id"] for a in bot.on(p.RESPONSE_TOPIC)] == ["left-1", "stt-kept"]
    assert [e["error"] for e in bot.on(p.error_topic("inbox_bot"))] == ["invalid_payload"]


async def test_a_redelivery_of_a_taken_request_is_not_answered_twice(
    mosquitto: Any, tmp_path: Path, tiny_model: str
) -> None:
    model = _model(tiny_model)
    payload = _task("once", "redelivery_bot", "hello")
    async with robot(mosquitto.host, mosquitto.port) as bot:
        async with running(mosquitto, tmp_path, model, f"naila-{uuid.uuid4().hex[:8]}") as srv:
            await bot.publish(p.TASK_TOPIC, payload)
            await bot.answer("once", 60)
            srv._on_message(p.TASK_TOPIC, payload, True)  # the broker's copy, flagged as delivered again
            srv._on_message(p.TASK_TOPIC, _task("other", "redelivery_bot", "hello"), True)  # never taken: new
            await bot.answer("other", 60)
            await asyncio.sleep(1.0)
    assert [a["task_id"] for a in bot.on(p.RESPONSE_TOPIC)] == ["once", "other"]


async def test_every_outcome_settles_its_row(mosquitto: Any, tmp_path: Path, tiny_model: str) -> None:
    model = _model(tiny_model)
    device = "settle_bot"
    async with robot(mosquitto.host, mosquitto.port) as bot:
        async with running(mosquitto, tmp_path, model, f"naila-{uuid.uuid4().hex[:8]}") as srv:
            await bot.publish(p.TASK_TOPIC, _task("answered", device, "hi"))
            await bot.publish(p.TASK_TOPIC, _task("empty", device, "   "))
            await bot.publish(p.TASK_TOPIC, b'{"device_id": "settle_bot", "transcription": 5}')
            await bot.publish(
                p.TASK_TOPIC, {"task_id": "old", "device_id": device, "transcription": "hi", "timestamp": 1}
            )
            await bot.answer("answered", 60)
            await bot.wait_for(lambda: len(bot.on(p.error_topic(device))) == 3, 20, "three refusals")
            assert srv.inbox is not None
            await bot.wait_for(lambda: srv.inbox.pending_count() == 0, 10, "every row settled")  # type: ignore[union-attr]
            rows = srv.inbox.db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
    assert rows == 4
    assert sorted(e["error"] for e in bot.on(p.error_topic(device))) == [
        "empty_input",
        "invalid_payload",
        "stale_request",
    ]
