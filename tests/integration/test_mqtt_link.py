"""The MQTT link across a broker outage (issue #12, defect 6), against a real mosquitto."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiomqtt
import pytest

from naila_graph.mqtt_link import BACKOFF_MAX_SECONDS, MqttLink
from naila_graph.settings import MQTTSettings

pytestmark = pytest.mark.broker

OUTAGE_SECONDS = 17.0  # longer than the first wave's 15 s publish wait, and its backoff reached 8-10 s


async def _until(check: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {check}")
        await asyncio.sleep(0.02)


@pytest.mark.slow
async def test_messages_sent_during_an_outage_go_out_in_order_soon_after_the_broker_returns(
    mosquitto: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    publish = aiomqtt.Client.publish

    async def recording(self: aiomqtt.Client, topic: str, *args: Any, **kwargs: Any) -> Any:
        result = await publish(self, topic, *args, **kwargs)
        sent.append(topic)  # only what the broker took
        return result

    monkeypatch.setattr(aiomqtt.Client, "publish", recording)
    settings = MQTTSettings(
        broker_host=mosquitto.host, broker_port=mosquitto.port, client_id=f"link-{uuid.uuid4().hex[:8]}"
    )
    async with MqttLink(settings, ["naila/test/in"], lambda topic, payload, redelivered: None) as link:
        await _until(link.connected.is_set, 10)
        mosquitto.stop()
        await _until(lambda: not link.connected.is_set(), 10)

        async def answer() -> list[bool]:  # an answer's messages, one after the other
            return [await link.publish(f"naila/test/out/{i}", {"seq": i}) for i in range(3)]

        publishing = asyncio.create_task(answer())
        await asyncio.sleep(OUTAGE_SECONDS)
        mosquitto.start()
        back = time.monotonic()
        await _until(link.connected.is_set, 30)
        reconnected_after = time.monotonic() - back
        results = await asyncio.wait_for(publishing, 10)
    assert results == [True, True, True]  # none given up
    assert [t for t in sent if t.startswith("naila/test/out/")] == [f"naila/test/out/{i}" for i in range(3)]
    assert reconnected_after <= BACKOFF_MAX_SECONDS + 1.0  # connect time on a loaded machine


async def test_a_closing_link_gives_up_waiting_messages_at_once(mosquitto: Any) -> None:
    settings = MQTTSettings(
        broker_host=mosquitto.host, broker_port=mosquitto.port, client_id=f"link-{uuid.uuid4().hex[:8]}"
    )
    link = MqttLink(settings, [], lambda topic, payload, redelivered: None)
    async with link:
        await _until(link.connected.is_set, 10)
        mosquitto.stop()
        await _until(lambda: not link.connected.is_set(), 10)
        waiting = asyncio.create_task(link.publish("naila/test/out", {"x": 1}))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # it waits for the broker ...
    started = time.monotonic()
    assert await asyncio.wait_for(waiting, 5) is False  # ... until the link closes: then it is given up
    assert time.monotonic() - started < 5


async def _link_session(settings: MQTTSettings, got: list[tuple[str, bytes, bool]], *, manual_ack: bool) -> MqttLink:
    link = MqttLink(settings, ["naila/test/in"], lambda t, b, again: got.append((t, b, again)), manual_ack=manual_ack)
    await link.__aenter__()
    await _until(link.connected.is_set, 10)
    return link


@pytest.mark.parametrize("manual_ack", [True, False])
async def test_a_message_never_handed_on_is_delivered_again_only_with_manual_ack(
    mosquitto: Any, manual_ack: bool
) -> None:
    """The server's inbox relies on this (issue #12 defect 3): a message the link took from the broker
    but never handed to ``on_message`` (the process stopped first) is not acknowledged, so the persistent
    session delivers it again, flagged as redelivered. aiomqtt alone acknowledges on arrival: lost."""
    settings = MQTTSettings(
        broker_host=mosquitto.host, broker_port=mosquitto.port, client_id=f"link-{uuid.uuid4().hex[:8]}"
    )
    first: list[tuple[str, bytes, bool]] = []
    link = await _link_session(settings, first, manual_ack=manual_ack)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=f"robot-{uuid.uuid4().hex[:6]}") as robot:
        await robot.publish("naila/test/in", b"handled", qos=1)
        await _until(lambda: len(first) == 1, 10)
        link.stop_reading()  # what a crash looks like to the broker: the next message is received, never handled
        await robot.publish("naila/test/in", b"taken, not handled", qos=1)
        await asyncio.sleep(0.5)  # it reaches the link's client (and, without manual acks, is acknowledged)
    await link.__aexit__(None, None, None)
    assert first == [("naila/test/in", b"handled", False)]

    second: list[tuple[str, bytes, bool]] = []
    link = await _link_session(settings, second, manual_ack=manual_ack)
    try:
        if manual_ack:
            await _until(lambda: len(second) == 1, 10)
            assert second == [("naila/test/in", b"taken, not handled", True)]
        else:
            await asyncio.sleep(1.5)
            assert second == []  # acknowledged on arrival, then lost with the process: the first wave's defect
    finally:
        await link.__aexit__(None, None, None)
