"""The two brokers the project runs against: the test mosquitto (fixture) and the embedded amqtt broker."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid

import aiomqtt
import pytest

from naila_graph.embedded_broker import EmbeddedBroker, EmbeddedBrokerError
from tests.support.broker import LOOPBACK, SYSTEM_BROKER_PORT, Mosquitto, free_port, port_accepts_connections

V311 = aiomqtt.ProtocolVersion.V311
V5 = aiomqtt.ProtocolVersion.V5


async def round_trip(host: str, port: int, protocol: aiomqtt.ProtocolVersion, payload: bytes = b"hello") -> bytes:
    """Publish ``payload`` at QoS 1 from one client and return what a second, subscribed client receives."""
    topic = f"naila/test/{uuid.uuid4().hex}"
    async with asyncio.timeout(10):
        async with aiomqtt.Client(host, port, identifier=f"receiver-{uuid.uuid4().hex}", protocol=protocol) as receiver:
            await receiver.subscribe(topic, qos=1)
            async with aiomqtt.Client(host, port, identifier=f"sender-{uuid.uuid4().hex}", protocol=protocol) as sender:
                await sender.publish(topic, payload, qos=1)
            async for message in receiver.messages:
                assert message.qos == 1
                assert isinstance(message.payload, bytes)
                return message.payload
    raise AssertionError("the receiver's message stream ended without a message")


# --- the mosquitto fixture -------------------------------------------------------------------------------------


@pytest.mark.broker
def test_mosquitto_fixture_runs_its_own_broker_on_a_loopback_port(mosquitto: Mosquitto) -> None:
    assert mosquitto.host == LOOPBACK
    assert mosquitto.port != SYSTEM_BROKER_PORT
    assert mosquitto.is_running
    assert port_accepts_connections(mosquitto.host, mosquitto.port)


@pytest.mark.broker
async def test_mosquitto_delivers_a_qos1_message_between_two_clients(mosquitto: Mosquitto) -> None:
    assert await round_trip(mosquitto.host, mosquitto.port, V5) == b"hello"


@pytest.mark.broker
async def test_mosquitto_comes_back_on_the_same_port_after_stop_and_start(mosquitto: Mosquitto) -> None:
    port = mosquitto.port

    mosquitto.stop()
    assert not port_accepts_connections(mosquitto.host, port)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(mosquitto.host, port, protocol=V5, timeout=2):
            pass

    mosquitto.start()
    assert mosquitto.port == port
    assert await round_trip(mosquitto.host, port, V5, b"again") == b"again"


# --- the embedded broker ---------------------------------------------------------------------------------------


async def test_embedded_broker_delivers_a_qos1_message_over_mqtt_311() -> None:
    async with EmbeddedBroker(port=free_port()) as broker:
        assert await round_trip(broker.host, broker.port, V311) == b"hello"


def test_a_second_embedded_broker_on_the_same_port_fails_with_a_clear_message() -> None:
    port = free_port()
    with EmbeddedBroker(port=port):
        second = EmbeddedBroker(port=port)
        with pytest.raises(EmbeddedBrokerError, match=rf"127\.0\.0\.1:{port} is already in use.*--broker-port"):
            second.start()
        assert not second.is_running


async def test_embedded_broker_stops_promptly_disconnects_clients_and_frees_its_port() -> None:
    port = free_port()
    broker = EmbeddedBroker(port=port)
    await asyncio.to_thread(broker.start)
    async with asyncio.timeout(10), aiomqtt.Client(broker.host, port, protocol=V311) as client:
        started = time.monotonic()
        await asyncio.to_thread(broker.stop)
        assert time.monotonic() - started < 5
        with pytest.raises(aiomqtt.MqttError, match="Disconnected"):
            async for _ in client.messages:
                pass

    assert not broker.is_running
    assert not [t for t in threading.enumerate() if t.name.startswith("naila-embedded-broker")]
    assert not port_accepts_connections(LOOPBACK, port)
    with EmbeddedBroker(port=port) as again:  # the port can be listened on again
        assert port_accepts_connections(again.host, port)


def test_embedded_broker_can_be_restarted_on_the_same_port() -> None:
    broker = EmbeddedBroker(port=free_port())
    broker.start()
    broker.stop()
    broker.start()
    try:
        assert port_accepts_connections(broker.host, broker.port)
    finally:
        broker.stop()


def test_embedded_broker_without_amqtt_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "amqtt.broker", None)  # makes `import amqtt.broker` fail
    with pytest.raises(EmbeddedBrokerError, match=r"pip install 'naila-graph\[broker\]'"):
        EmbeddedBroker(port=free_port()).start()


def test_importing_the_embedded_broker_module_does_not_import_amqtt() -> None:
    import subprocess

    code = "import sys, naila_graph.embedded_broker; print('amqtt' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
