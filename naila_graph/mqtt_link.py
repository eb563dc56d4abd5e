"""The server's link to the MQTT broker, as an async context manager in aiomqtt's style.

``async with MqttLink(settings, topics, on_message, ...) as link:`` connects in the background and keeps
connecting: reconnect with backoff, a persistent session (QoS 1 messages wait for us while we are
briefly away), the subscriptions, the read loop handing each message to ``on_message``, publishing with
retry across a reconnect, TCP_NODELAY and TLS. Leaving the block disconnects.

With ``manual_ack`` a QoS 1 message is acknowledged to the broker only after ``on_message`` returned for
it, so a handler that makes the message durable before returning (the server's inbox,
:mod:`naila_graph.inbox`) never loses one to a crash; messages not yet handed on when the link closes
stay unacknowledged and the persistent session delivers them again on the next connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

import aiomqtt

from naila_graph import protocol as p
from naila_graph.settings import MQTTSettings

logger = logging.getLogger("naila.mqtt")

PUBLISH_RETRY_PAUSE_SECONDS = 0.2
OUTAGE_WAIT_SECONDS = 120.0  # how long a message waits for the broker to come back before it is given up
OUTBOX_LIMIT = 1000  # messages waiting for the broker at once; beyond that they are given up at once
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 2.0  # so the link is back within 2 s of the broker's return
CONNECT_TIMEOUT_SECONDS = 10
DISCONNECT_TIMEOUT_SECONDS = 5.0


class MessageNotTaken(aiomqtt.MqttError):
    """Raised by ``on_message`` for a message it could not take charge of: the message is not acknowledged
    and the connection is dropped and made again, so the persistent session delivers it once more."""


class LinkCounters:
    messages_in = 0
    messages_out = 0
    errors = 0


class MqttLink:
    """A connection to the broker that comes back by itself.

    ``on_message(topic, payload, redelivered)`` gets each message (a coroutine function is awaited before the
    next message); ``redelivered`` is the broker's DUP flag (it sent this message before and got no
    acknowledgement); raising :class:`MessageNotTaken` leaves the message unacknowledged. ``manual_ack``:
    acknowledge a message only once ``on_message`` has returned for it (see the module's docstring).
    ``online``/``will``: (topic, payload) published retained on every connect / left with the broker for
    an unexpected disconnect. ``counters`` (an object with ``messages_in``, ``messages_out``, ``errors``)
    is updated as messages come and go.
    """

    def __init__(
        self,
        settings: MQTTSettings,
        topics: Sequence[str],
        on_message: Callable[[str, bytes, bool], Awaitable[None] | None],
        *,
        online: tuple[str, dict[str, Any]] | None = None,
        will: tuple[str, dict[str, Any]] | None = None,
        tls_context: ssl.SSLContext | None = None,
        counters: Any = None,
        manual_ack: bool = False,
    ) -> None:
        self.settings = settings
        self.topics = tuple(topics)
        self.on_message = on_message
        self.online = online
        self.will = will
        self.tls_context = tls_context
        self.counters = counters if counters is not None else LinkCounters()
        self.manual_ack = manual_ack
        self.connected = asyncio.Event()
        self._client: aiomqtt.Client | None = None
        self._closing = asyncio.Event()
        self._reading = True
        self._waiting = 0  # publishers waiting for the broker to come back
        self._reader: asyncio.Task[None] | None = None
        self._connection: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttLink:
        self._connection = asyncio.create_task(self._connection_loop(), name="mqtt connection")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_reading()
        self._closing.set()
        if self._connection is None:
            return
        try:
            await asyncio.wait_for(self._connection, timeout=DISCONNECT_TIMEOUT_SECONDS)
        except (TimeoutError, asyncio.CancelledError):
            self._connection.cancel()
        except Exception as error:
            logger.warning("disconnect: %s", error)

    def stop_reading(self) -> None:
        """No more messages are handed on (shutdown); the link stays up for publishing."""
        self._reading = False
        if self._reader is not None:
            self._reader.cancel()

    # ------------------------------------------------------------------ connection

    def client_options(self) -> dict[str, Any]:
        m = self.settings
        v5 = m.protocol == "5"
        options: dict[str, Any] = {
            "hostname": m.broker_host,
            "port": m.broker_port,
            "identifier": m.client_id,
            "username": m.username,
            "password": m.password,
            "keepalive": m.keepalive,
            "protocol": aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            "timeout": CONNECT_TIMEOUT_SECONDS,
            # without it, Nagle holds a PUBLISH behind the previous packet's delayed ACK (docs/PERFORMANCE.md)
            "socket_options": ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        }
        if self.will is not None:
            topic, payload = self.will
            options["will"] = aiomqtt.Will(topic, p.encode(payload), qos=1, retain=True)
        if v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = m.session_expiry_seconds
            options["clean_start"] = m.clean_session
            options["properties"] = props
        else:
            options["clean_session"] = m.clean_session
        if self.tls_context is not None:
            options["tls_context"] = self.tls_context
        return options

    async def _connection_loop(self) -> None:
        """Connect, subscribe, read; on a lost connection retry with backoff until closed."""
        backoff = BACKOFF_FIRST_SECONDS
        attempt = 0
        while not self._closing.is_set():
            attempt += 1
            try:
                client = aiomqtt.Client(**self.client_options())
                redelivered = self._watch_deliveries(client)
                async with client:
                    attempt, backoff = 0, BACKOFF_FIRST_SECONDS
                    await self._session(client, redelivered)
            except aiomqtt.MqttError as exc:
                if self._closing.is_set():
                    break
                self.counters.errors += 1
                level = logging.WARNING if attempt <= 1 or attempt % 10 == 0 else logging.DEBUG
                logger.log(
                    level,
                    "broker %s:%s unreachable or lost (%s); retrying in %.1f s",
                    self.settings.broker_host,
                    self.settings.broker_port,
                    exc,
                    backoff,
                )
            finally:
                self._client = None
                self.connected.clear()
                if self._reader is not None and not self._reader.done():
                    self._reader.cancel()
            if self._closing.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECONDS)

    def _watch_deliveries(self, client: aiomqtt.Client) -> set[int]:
        """Before connecting: the packet ids of messages the broker flags as redelivered (paho's ``dup``,
        which aiomqtt's Message leaves out), and, with ``manual_ack``, acknowledgement by hand. aiomqtt
        has no public switch for either (empicano/aiomqtt#345); its paho client is reached here only."""
        paho = client._client
        if self.manual_ack:
            paho.manual_ack_set(True)
        redelivered: set[int] = set()
        forward = paho.on_message

        def on_message(paho_client: Any, userdata: Any, message: Any) -> None:
            if message.dup:
                redelivered.add(message.mid)
            if forward is not None:
                forward(paho_client, userdata, message)

        paho.on_message = on_message
        return redelivered

    async def _session(self, client: aiomqtt.Client, redelivered: set[int]) -> None:
        """One connected session: subscribe, announce, read until the link closes or the connection drops."""
        subscriptions: list[tuple[str, int]] = [(topic, self.settings.qos) for topic in self.topics]
        if subscriptions:  # a link may only publish
            await client.subscribe(subscriptions)
        if self.online is not None:
            topic, payload = self.online
            await client.publish(topic, p.encode(payload), qos=1, retain=True)
        self._client = client
        self.connected.set()
        logger.info(
            "connected to %s:%s, subscribed to %s",
            self.settings.broker_host,
            self.settings.broker_port,
            ", ".join(self.topics),
        )
        waiters: set[asyncio.Task[Any]] = {asyncio.create_task(self._closing.wait())}
        if self._reading:
            self._reader = asyncio.create_task(self._read(client, redelivered), name="mqtt reader")
            waiters.add(self._reader)
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            reader = self._reader
            if reader in done and not reader.cancelled() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
            if not self._closing.is_set():  # reader stopped at shutdown: stay connected to publish
                await self._closing.wait()
        finally:
            for waiter in waiters:
                if waiter is not self._reader:
                    waiter.cancel()

    async def _read(self, client: aiomqtt.Client, redelivered: set[int]) -> None:
        async for message in client.messages:
            self.counters.messages_in += 1
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode("utf-8")
            elif not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            again = message.mid in redelivered
            redelivered.discard(message.mid)
            try:
                handled = self.on_message(str(message.topic), bytes(payload), again)
                if inspect.isawaitable(handled):  # an async handler: acknowledged once it has finished
                    await handled
            except MessageNotTaken:
                raise
            except Exception:  # never let one message stop the reader
                self.counters.errors += 1
                logger.exception("unexpected error handling a message on %s", message.topic)
            if self.manual_ack and message.qos > 0:
                # on a connection that is already gone this does nothing: the broker delivers it again
                client._client.ack(message.mid, message.qos)

    # ------------------------------------------------------------------ publishing

    async def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> bool:
        """Publish JSON. While the broker is away the message waits for the link to come back (messages
        that wait are sent in the order they were published), for up to ``OUTAGE_WAIT_SECONDS`` and with
        at most ``OUTBOX_LIMIT`` waiting; False when it was given up (also when the link is closing)."""
        data = p.encode(payload)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OUTAGE_WAIT_SECONDS
        while loop.time() < deadline:
            client = self._client
            if client is None or not self.connected.is_set():
                if self._closing.is_set() or self._waiting >= OUTBOX_LIMIT:
                    break
                if not await self._until_connected(deadline - loop.time()):
                    break
                continue
            try:
                await client.publish(topic, data, qos=self.settings.qos, retain=retain)
            except aiomqtt.MqttError as exc:
                logger.warning("publish to %s failed (%s); will retry after reconnecting", topic, exc)
                await asyncio.sleep(PUBLISH_RETRY_PAUSE_SECONDS)
                continue
            self.counters.messages_out += 1
            return True
        self.counters.errors += 1
        logger.error("gave up publishing to %s: broker unreachable", topic)
        return False

    async def _until_connected(self, within: float) -> bool:
        """Wait for the link to be up (True), the link to close or ``within`` seconds to pass (False)."""
        self._waiting += 1
        waiters = {asyncio.ensure_future(self.connected.wait()), asyncio.ensure_future(self._closing.wait())}
        try:
            await asyncio.wait(waiters, timeout=max(0.0, within), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting -= 1
            for waiter in waiters:
                waiter.cancel()
        return self.connected.is_set()
