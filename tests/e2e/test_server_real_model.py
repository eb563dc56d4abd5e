"""The server end to end with the real 0.5B instruct model over a real mosquitto."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from llm import ChatLlamaCpp
from naila_graph import protocol as p
from naila_graph.server import NailaServer
from naila_graph.settings import MQTTSettings, NailaSettings
from tests.support.mqtt import robot

pytestmark = [pytest.mark.real_model, pytest.mark.broker]


async def test_real_model_answers_over_mqtt_with_stream_metrics_and_memory(
    mosquitto: Any, tmp_path: Path, real_model: str
) -> None:
    model = ChatLlamaCpp(model_path=real_model, n_ctx=2048, max_tokens=64, temperature=0.0, seed=7)
    settings = NailaSettings(data_dir=tmp_path, memory_url=f"sqlite:///{tmp_path / 'm.sqlite'}")
    mqtt = MQTTSettings(
        broker_host=mosquitto.host, broker_port=mosquitto.port, client_id=f"naila-e2e-{uuid.uuid4().hex[:6]}"
    )
    async with robot(mosquitto.host, mosquitto.port) as bot, NailaServer(settings, mqtt, chat_model=model):
        await bot.publish(
            "naila/ai/processing/stt/desk_1", {"transcription": "Hi! My name is Alex.", "confidence": 0.95}
        )
        first = (await bot.wait_for(lambda: bot.on(p.RESPONSE_TOPIC), within=120, what="first answer"))[0]
        second_id = await bot.task("desk_1", "What's my name?")
        second = await bot.answer(second_id, within=120)
        math_id = await bot.task("desk_2", "What's 12 times 7?")
        math = await bot.answer(math_id, within=120)
        metrics = (await bot.wait_for(lambda: bot.on(p.METRICS_TOPIC, math_id)))[0]

    assert first["response"]["source"] == "llm"
    # remembered across turns: the name stored after the first turn answers the question (nodes/recall.py)
    assert (second["response"]["source"], second["response"]["text"]) == ("action", "Your name is Alex."), second
    assert math["response"]["source"] == "llm" and "84" in math["response"]["text"], math
    for answer in (first, second, math):
        stream = bot.on(p.stream_topic(answer["target_device"]), answer["task_id"])
        assert [m["seq"] for m in stream] == list(range(len(stream)))
        assert stream[-1]["final"] and not any(m.get("replaced") for m in stream)
        assert " ".join(m["text"] for m in stream if m["text"]) == answer["response"]["text"]
    assert metrics["model_name"] and metrics["tokens_generated"] >= 2
    assert metrics["tokens_per_second"] > 1 and metrics["time_to_first_token_ms"] > 0


async def test_barge_in_stops_a_long_real_answer(mosquitto: Any, tmp_path: Path, real_model: str) -> None:
    model = ChatLlamaCpp(model_path=real_model, n_ctx=2048, max_tokens=400, temperature=0.0, seed=7)
    settings = NailaSettings(data_dir=tmp_path, memory_url=f"sqlite:///{tmp_path / 'm.sqlite'}")
    mqtt = MQTTSettings(
        broker_host=mosquitto.host, broker_port=mosquitto.port, client_id=f"naila-e2e-{uuid.uuid4().hex[:6]}"
    )
    async with robot(mosquitto.host, mosquitto.port) as bot, NailaServer(settings, mqtt, chat_model=model):
        task_id = await bot.task("desk_3", "Please tell me a long, detailed story about a lighthouse keeper.")
        await bot.wait_for(lambda: bot.on(p.stream_topic("desk_3"), task_id), within=120, what="first sentence")
        await bot.publish(p.CANCEL_TOPIC, {"device_id": "desk_3", "task_id": task_id})
        answer = await bot.answer(task_id, within=10)
        metrics_seen = bot.on(p.METRICS_TOPIC, task_id)
    assert answer["response"]["finish_reason"] == "cancelled"
    assert answer["response"]["text"]  # what was already spoken
    stream = bot.on(p.stream_topic("desk_3"), task_id)
    assert stream[-1]["final"] is True
    assert len(stream) < 40 and not metrics_seen
