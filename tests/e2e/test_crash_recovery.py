"""``kill -9`` of ``naila serve`` under load, then a restart: every request the server had taken is
answered or explicitly refused, each device's in order, and none twice but the one the inbox's module
docstring names: a kill in the instant between an answer reaching the broker and its row being settled.
This test kills right as an answer arrives, so it hits that instant now and then; the duplicate may only
be the answer that had just arrived (naila_graph/inbox.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from naila_graph import protocol as p
from tests.e2e.test_serve_cli import _start_server, _wait_ready
from tests.support.mqtt import Robot, robot

pytestmark = pytest.mark.broker

DEVICES = [f"crash_bot_{i}" for i in range(4)]
PER_DEVICE = 6  # below NAILA_QUEUE_PER_DEVICE (8): none of them is refused for being too many


def _finals(bot: Robot) -> list[tuple[str, str, str]]:
    """(device, task id, kind) of every final answer and error reply, in arrival order."""
    out = []
    for item in bot.received:
        if item.topic == p.RESPONSE_TOPIC:
            data = item.data
            out.append((data["target_device"], data["task_id"], "response"))
        elif item.topic.startswith("naila/ai/responses/error/"):
            out.append((item.topic.rsplit("/", 1)[1], item.data["task_id"], "error"))
    return out


async def test_kill_9_under_load_then_restart_answers_every_taken_request_once_in_order(
    tmp_path: Path, tiny_model: str, mosquitto: Any
) -> None:
    env = {
        "LLM_MODEL_PATH": tiny_model,
        "LLM_MAX_TOKENS": "64",  # each answer takes a moment, so the queue is full when the server dies
        "NAILA_DATA_DIR": str(tmp_path / "data"),
        "MQTT_BROKER_HOST": mosquitto.host,
        "MQTT_BROKER_PORT": str(mosquitto.port),
        "MQTT_CLIENT_ID": "naila-crash-test",
    }
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    server = _start_server([], env, first_log)
    restarted = None
    try:
        _wait_ready(server, first_log)
        async with robot(mosquitto.host, mosquitto.port) as bot:
            sent: dict[str, list[str]] = {device: [] for device in DEVICES}
            for i in range(PER_DEVICE):
                for device in DEVICES:
                    task = f"{device}-t{i}"
                    sent[device].append(task)
                    await bot.publish(p.TASK_TOPIC, {"task_id": task, "device_id": device, "transcription": f"hi {i}"})
            await bot.wait_for(lambda: len(_finals(bot)) >= 2, 60, "the first answers")
            server.kill()  # SIGKILL: no shutdown, nothing refused, the queue dies with the process
            server.wait(timeout=10)
            at_kill = _finals(bot)
            before = len(at_kill)
            total = len(DEVICES) * PER_DEVICE
            assert before < total, "every request was answered before the kill: the test proved nothing"

            restarted = _start_server([], env, second_log)
            _wait_ready(restarted, second_log)
            await bot.wait_for(
                lambda: {task for _, task, _ in _finals(bot)} >= {t for tasks in sent.values() for t in tasks},
                90,
                "an answer or refusal for every request",
            )
            await asyncio.sleep(2.0)  # a duplicate would arrive now
            finals = _finals(bot)
    finally:
        for proc in (server, restarted):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    counts = Counter(task for _, task, _ in finals)
    twice = {task: n for task, n in counts.items() if n > 1}
    assert set(twice) <= {at_kill[-1][1]} and all(n == 2 for n in twice.values()), f"answered twice: {twice}"
    assert len(counts) == total
    for device in DEVICES:
        answered = list(dict.fromkeys(task for dev, task, kind in finals if dev == device and kind == "response"))
        assert answered == [t for t in sent[device] if t in answered], f"{device}: answers out of order"
    log = second_log.read_text(errors="replace")
    assert "taken before the last stop were not answered; answering them first" in log, log[-3000:]
