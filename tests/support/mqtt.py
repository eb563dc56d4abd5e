"""Test helpers on the robot's side of the broker: a listener that records what the server publishes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt

from naila_graph import protocol as p


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    @property
    def data(self) -> Any:
        return json.loads(self.payload)


class Robot:
    """An MQTT client playing the robots: publishes requests, records everything under ``naila/``."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.received: list[Received] = []
        self._changed = asyncio.Event()

    async def _record(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            self.received.append(Received(str(message.topic), payload, bool(message.retain)))
            self._changed.set()

    async def publish(self, topic: str, payload: dict[str, Any] | bytes, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes) else p.encode(payload)
        await self.client.publish(topic, data, qos=qos)

    async def task(self, device: str, text: str, task_id: str | None = None, **extra: Any) -> str:
        task_id = task_id or f"t-{uuid.uuid4().hex[:8]}"
        await self.publish(
            p.TASK_TOPIC,
            {"task_id": task_id, "device_id": device, "transcription": text, "timestamp": p.utc_timestamp(), **extra},
        )
        return task_id

    def on(self, topic: str, task_id: str | None = None) -> list[dict[str, Any]]:
        out = []
        for item in self.received:
            if item.topic != topic:
                continue
            data = item.data
            if task_id is None or data.get("task_id") == task_id:
                out.append(data)
        return out

    async def wait_for(self, check: Callable[[], Any], within: float = 30.0, what: str = "") -> Any:
        """Wait until ``check()`` returns something truthy; fail with what was received otherwise."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            result = check()
            if result:
                return result
            remaining = end - loop.time()
            if remaining <= 0:
                seen = "\n".join(f"  {r.topic}: {r.payload[:300]!r}" for r in self.received[-30:])
                raise AssertionError(f"timed out after {within} s waiting for {what or check}; received:\n{seen}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))

    async def answer(self, task_id: str, within: float = 30.0) -> dict[str, Any]:
        found = await self.wait_for(lambda: self.on(p.RESPONSE_TOPIC, task_id), within, f"answer to {task_id}")
        return found[0]

    async def error(self, device: str, within: float = 10.0, task_id: str | None = None) -> dict[str, Any]:
        found = await self.wait_for(lambda: self.on(p.error_topic(device), task_id), within, f"error for {device}")
        return found[-1]


@contextlib.asynccontextmanager
async def robot(host: str, port: int, topics: tuple[str, ...] = ("naila/#",)) -> AsyncIterator[Robot]:
    async with aiomqtt.Client(host, port, identifier=f"robot-{uuid.uuid4().hex[:8]}") as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        bot = Robot(client)
        reader = asyncio.create_task(bot._record())
        try:
            yield bot
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
