"""Benchmark: the reliability table of issue #12 — load and faults against a real broker and a real server.

Black-box: a real mosquitto (with persistence, so a broker restart keeps the server's persistent session),
``naila serve`` as a subprocess (SQLite memory in a temporary directory, a tiny generated GGUF unless
``--model``), and simulated robots (one aiomqtt client each, QoS 1) that send requests with known task ids
while one collector (a persistent session of its own) records everything the server publishes. Each
scenario is one row, on a fresh broker, server and data directory:

1. ``burst``: every robot sends all its requests back to back (fairness: every device gets answers or
   explicit refusals);
2. ``broker``: the broker is stopped during load, kept down ``--outage-s``, restarted on the same port;
   recovery = broker back → the server's next publish;
3. ``kill9``: ``kill -9`` of the server while requests are queued or in progress, then a restart;
   recovery = restart launch → the server is online (its status or start-up message);
4. ``malformed``: ~250 bad payloads (not JSON, wrong types, huge numbers, NaN, NUL characters, repeated
   keys, bad ids, too large …) interleaved with valid requests (some holding NUL or lone surrogates);
5. ``postgres``: memory on PostgreSQL through a TCP proxy that is cut for ``--outage-s`` mid-load; turns
   stored are counted afterwards (only with ``NAILA_TEST_POSTGRES_URL``, else the row says skipped);
6. ``cpu``: the burst while another process keeps one core busy.

Counting is exact (:func:`tally`): a request is answered or refused by its first final message (an answer
on ``naila/ai/responses/text`` or an error on ``naila/ai/responses/error/{device}``), silently lost when
neither came before the collection window closed (every request settled and 2 s of quiet, or ``--quiet-s``
without any reply, or the scenario's time limit), duplicated when more than one final came, and an order violation
when a device's answers arrive in another order than its requests were sent.

The fault scenarios use closed-loop robots (the next request once the last is settled or after a patience
of 30 s, as a robot's own timeout), so the queue holds requests when the fault hits without overflowing.

    python -m evals.bench.reliability [--model NAME|PATH] [--robots N] [--requests N] [--outage-s S]
                                      [--max-tokens N] [--quiet-s S] [--quick] [--source DIR]
                                      [--scenarios burst,broker,kill9,malformed,postgres,cpu]

``--source DIR`` runs another checkout's server (``PYTHONPATH=DIR``, same venv) for a before/after table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.bench.common import Option, Part, Rows, eprint
from naila_graph import protocol as p

OPTIONS = {
    "robots": Option(20, quick=4, minimum=1, help="simulated robots (devices)"),
    "requests": Option(10, quick=5, minimum=1, help="valid requests per robot and scenario"),
    "outage_s": Option(10.0, quick=5.0, minimum=0, help="seconds the broker (or the Postgres proxy) stays down"),
    "max_tokens": Option(16, minimum=1, help="the server's LLM_MAX_TOKENS (answer length)"),
    "quiet_s": Option(
        30.0, quick=15.0, minimum=2, help="with requests still open, the window closes after this long without a reply"
    ),
}
SCENARIOS = ("burst", "broker", "kill9", "malformed", "postgres", "cpu")
HEADER = (
    "scenario",
    "sent",
    "answered",
    "refused",
    "silently lost",
    "duplicated",
    "order violations",
    "recovery",
    "note",
)
HERE = Path(__file__).resolve().parents[2]  # this checkout: the default --source
ERROR_PREFIX = "naila/ai/responses/error/"
STREAM_SUFFIX = "/stream"
STREAM_TOPIC = "naila/ai/responses/text/+/stream"
SETTLED_QUIET_S = 2.0  # every request settled: this long without a reply closes the window (duplicates)
SCENARIO_LIMIT_S = 900.0  # a scenario never collects longer than this
PATIENCE_S = 30.0  # a closed-loop robot sends its next request after this long without a reply (its own timeout)
READY_TIMEOUT_S = 180.0
QUESTIONS = [
    "Tell me something nice about the sea.",
    "What is a good name for a cat?",
    "Can you count to five for me?",
    "How are you today?",
    "Say something about the moon.",
    "What colour is the sky?",
    "Give me a short tip for sleeping well.",
    "Do you like music?",
]
# Valid texts that are hard to store or send back (defect 1): they must be answered like any other.
ODD_TEXTS = ["hi\u0000there, how are you?", "lone \ud800 surrogate here", "emoji \U0001f916 and a tab\tok"]


# ---------------------------------------------------------------------------------------------------
# Counting: sent requests + the message log → one row's numbers
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One message a robot sent. ``task_id`` None: the payload has no task id the server can echo, so its
    replies are recognised by the device (a bad payload is sent from a device id of its own).
    ``expect_reply`` False: no valid device id, so no one can be answered (not counted in the row)."""

    device: str
    task_id: str | None
    bad: bool = False
    expect_reply: bool = True


@dataclass(frozen=True)
class Received:
    """One message the collector got: its topic, its JSON (None when not JSON), its arrival (monotonic)."""

    topic: str
    payload: dict[str, Any] | None
    at: float
    retained: bool = False
    dup: bool = False  # the broker resent it to the collector (its PUBACK was lost, e.g. the broker stopped)


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    refused: int = 0
    lost: int = 0
    duplicated: int = 0
    order_violations: int = 0
    unmatched: int = 0  # final messages for no request we sent
    bad_answered: int = 0  # bad payloads answered as if valid
    resent_to_us: int = 0  # finals the broker delivered twice to the collector (flagged dup), counted once
    identical_copies: int = 0  # duplicated requests whose finals are byte-for-byte one message (QoS 1 resends)
    stream_mismatches: int = 0  # answers whose joined stream differs from the final text, without `replaced`
    error_codes: Counter[str] = field(default_factory=Counter)
    answers_per_device: tuple[int, int] = (0, 0)  # fewest and most answers a device that asked got
    unanswered_devices: int = 0  # devices that sent requests and got no answer at all (fairness)
    lost_items: list[Sent] = field(default_factory=list)
    answered_items: list[Sent] = field(default_factory=list)


def final_of(message: Received) -> tuple[str, str | None, str] | None:
    """``(device, task id, "answer" | error code)`` when ``message`` is a final reply, else None."""
    payload = message.payload
    if payload is None:
        return None
    if message.topic == p.RESPONSE_TOPIC:
        device = payload.get("target_device")
        if not isinstance(device, str):
            return None
        task = payload.get("task_id")
        return device, task if isinstance(task, str) else None, "answer"
    if message.topic.startswith(ERROR_PREFIX):
        task = payload.get("task_id")
        return message.topic[len(ERROR_PREFIX) :], task if isinstance(task, str) else None, str(payload.get("error"))
    return None


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def tally(sent: Sequence[Sent], log: Sequence[Received]) -> Tally:
    """Count exactly what happened to every request in ``sent`` given the collector's ``log`` (in arrival order).

    Each request is counted once: answered or refused by its first final message, or lost when it has none,
    so ``sent == answered + refused + lost``; more than one final makes it duplicated as well. Order
    violations: per device, an answered request whose answer arrived before that of a request sent earlier.
    """
    counted = [s for s in sent if s.expect_reply]
    by_key: dict[tuple[str, str], int] = {}
    untracked: dict[str, list[int]] = {}
    for i, item in enumerate(counted):
        if item.task_id is not None:
            by_key[(item.device, item.task_id)] = i
        if item.task_id is None or item.bad:  # a bad payload's reply may not name the task id it held
            untracked.setdefault(item.device, []).append(i)
    finals: list[list[tuple[int, str]]] = [[] for _ in counted]  # per request: (log position, kind)
    streams: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    result = Tally(sent=len(counted))
    for position, message in enumerate(log):
        if message.topic.endswith(STREAM_SUFFIX) and message.payload is not None:
            device = message.topic[len("naila/ai/responses/text/") : -len(STREAM_SUFFIX)]
            task, seq = message.payload.get("task_id"), message.payload.get("seq")
            if isinstance(task, str) and isinstance(seq, int):
                streams.setdefault((device, task), {}).setdefault(seq, message.payload)
            continue
        final = final_of(message)
        if final is None:
            continue
        device, task, kind = final
        index = by_key.get((device, task)) if task is not None else None
        if index is None and device in untracked:
            waiting = [i for i in untracked[device] if not finals[i]]
            index = waiting[0] if waiting else untracked[device][-1]
        if index is None:
            result.unmatched += 1
            continue
        if message.dup and any(log[at].payload == message.payload for at, _ in finals[index]):
            result.resent_to_us += 1  # the broker's QoS 1 resend of a message we had: not the server's doing
            continue
        finals[index].append((position, kind))
    answered_at: dict[str, list[int]] = {}
    asked: set[str] = set()
    got_answer: set[str] = set()
    for item, replies in zip(counted, finals, strict=True):
        if not item.bad:
            asked.add(item.device)
        if not replies:
            result.lost += 1
            result.lost_items.append(item)
            continue
        if len(replies) > 1:
            result.duplicated += 1
            copies = {json.dumps(log[at].payload, sort_keys=True) for at, _ in replies}
            result.identical_copies += len(copies) == 1
        position, kind = replies[0]
        if kind == "answer":
            result.answered += 1
            result.bad_answered += item.bad
            result.answered_items.append(item)
            got_answer.add(item.device)
            if not item.bad:
                answered_at.setdefault(item.device, []).append(position)
            answer = log[position].payload or {}
            if item.task_id is not None and not _stream_matches(streams.get((item.device, item.task_id)), answer):
                result.stream_mismatches += 1
        else:
            result.refused += 1
            result.error_codes[kind] += 1
    for positions in answered_at.values():
        latest = -1
        for position in positions:
            if position < latest:
                result.order_violations += 1
            latest = max(latest, position)
    result.unanswered_devices = len(asked - got_answer)
    per_device = Counter({device: 0 for device in asked})
    per_device.update(item.device for item in result.answered_items if not item.bad)
    result.answers_per_device = (min(per_device.values()), max(per_device.values())) if per_device else (0, 0)
    return result


def _stream_matches(stream: dict[int, dict[str, Any]] | None, answer: dict[str, Any]) -> bool:
    """The joined stream equals the final text, or its last message says ``replaced`` with the final text."""
    text = str((answer.get("response") or {}).get("text", ""))
    if not stream:
        return not text.strip()
    ordered = [stream[seq] for seq in sorted(stream)]
    replaced = [m for m in ordered if m.get("replaced")]
    if replaced:
        return _squash(str(replaced[-1].get("text", ""))) == _squash(text)
    return _squash("".join(str(m.get("text", "")) for m in ordered)) == _squash(text)


# ---------------------------------------------------------------------------------------------------
# The rig: broker, server process, collector, robots
# ---------------------------------------------------------------------------------------------------


def _free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != 1883:  # the machine's own broker
            return port


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """mosquitto on a free loopback port with persistence in ``workdir``: stopped with SIGTERM it saves every
    session, and started again on the same port it restores them (the server's queued requests too)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None:
            raise RuntimeError("mosquitto is not installed; `scripts/setup.sh --test` installs it (apt)")
        self.binary = binary
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"

    def start(self) -> float:
        """Start and wait until the port accepts connections; the monotonic time it did."""
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "\n".join(
                [
                    f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true",
                    "persistence true",
                    f"persistence_location {self.workdir}/",
                    "autosave_interval 1",
                    "max_queued_messages 100000",
                    "set_tcp_nodelay true",
                    "log_dest stderr",
                    # as root, mosquitto would switch to the `mosquitto` user, who cannot write workdir
                    f"user {pwd.getpwuid(os.getuid()).pw_name}",
                ]
            )
            + "\n"
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.workdir
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}; see {self.log_path}")
            if _accepts(self.port):
                return time.monotonic()
            time.sleep(0.01)
        raise RuntimeError(f"mosquitto did not accept connections on port {self.port} within 15 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def _watch_resends(client: Any) -> set[int]:
    """The packet ids of messages the broker flags as resent to us (paho's ``dup``, which aiomqtt's Message
    leaves out; reached as naila_graph.mqtt_link does)."""
    paho = client._client
    resent: set[int] = set()
    forward = paho.on_message

    def on_message(paho_client: Any, userdata: Any, message: Any) -> None:
        if message.dup:
            resent.add(message.mid)
        forward(paho_client, userdata, message)

    paho.on_message = on_message
    return resent


class Collector:
    """Records every message the server publishes (persistent session, reconnects every 50 ms)."""

    TOPICS = (p.RESPONSE_TOPIC, ERROR_PREFIX + "+", STREAM_TOPIC, p.STATUS_TOPIC, p.STARTUP_TOPIC, p.SHUTDOWN_TOPIC)
    REPLY_TOPICS = (p.RESPONSE_TOPIC, ERROR_PREFIX)

    def __init__(self, port: int) -> None:
        self.port = port
        self.identifier = f"reliability-collector-{uuid.uuid4().hex[:8]}"
        self.log: list[Received] = []
        self.last_reply = time.monotonic()
        self.connected = asyncio.Event()
        self.finals: dict[str, set[str | None]] = {}  # device -> task ids with a final reply
        self.changed = asyncio.Event()

    async def run(self) -> None:
        import aiomqtt

        while True:
            try:
                client = aiomqtt.Client(
                    "127.0.0.1",
                    self.port,
                    identifier=self.identifier,
                    clean_session=False,
                    protocol=aiomqtt.ProtocolVersion.V311,
                    max_queued_incoming_messages=0,
                )
                resent = _watch_resends(client)
                async with client:
                    await client.subscribe([(topic, 1) for topic in self.TOPICS])
                    self.connected.set()
                    async for message in client.messages:
                        dup = message.mid in resent
                        resent.discard(message.mid)
                        self._record(str(message.topic), message.payload, bool(message.retain), dup)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.05)

    def _record(self, topic: str, raw: Any, retained: bool, dup: bool = False) -> None:
        try:
            payload = json.loads(raw) if isinstance(raw, bytes | bytearray | str) else None
        except ValueError:
            payload = None
        message = Received(topic, payload if isinstance(payload, dict) else None, time.monotonic(), retained, dup)
        self.log.append(message)
        if topic.startswith(self.REPLY_TOPICS) or topic.endswith(STREAM_SUFFIX):
            self.last_reply = message.at
        final = final_of(message)
        if final is not None:
            self.finals.setdefault(final[0], set()).add(final[1])
            self.changed.set()

    def settled(self, item: Sent) -> bool:
        got = self.finals.get(item.device, set())
        return bool(got) if item.task_id is None else item.task_id in got

    def first_after(self, since: float, pick: Callable[[Received], bool]) -> float | None:
        """Seconds from ``since`` to the first live (not retained) message after it that ``pick`` accepts."""
        for message in self.log:
            if message.at >= since and not message.retained and pick(message):
                return message.at - since
        return None


class Robot:
    """One robot's MQTT client: publishes QoS 1 and retries the same message until the broker took it."""

    def __init__(self, port: int, name: str) -> None:
        self.port = port
        self.name = name
        self.client: Any = None
        self.connected = asyncio.Event()

    async def run(self) -> None:
        import aiomqtt

        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier=f"rel-{self.name}-{uuid.uuid4().hex[:6]}"
                ) as client:
                    self.client = client
                    self.connected.set()
                    async for _ in client.messages:  # nothing subscribed: this only ends when the link drops
                        pass
            except aiomqtt.MqttError:
                pass
            self.connected.clear()
            self.client = None
            await asyncio.sleep(0.05)

    async def publish(self, topic: str, payload: bytes) -> None:
        import aiomqtt

        while True:
            await self.connected.wait()
            try:
                await self.client.publish(topic, payload, qos=1, timeout=10)
                return
            except (aiomqtt.MqttError, AttributeError):  # the broker went away: the same message again
                await asyncio.sleep(0.05)


class Server:
    """``naila serve`` of ``source`` as a subprocess (stderr to ``log_path``)."""

    def __init__(self, source: Path, env: dict[str, str], workdir: Path) -> None:
        self.source = source
        self.env = env
        self.workdir = workdir
        self.log_path = workdir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> float:
        with self.log_path.open("ab") as log:
            log.write(b"--- reliability: launching naila serve\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "naila_graph.cli", "serve"],
                env=self.env,
                cwd=self.workdir,  # no .env of a checkout is read
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        return time.monotonic()

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def server_env(
    source: Path, port: int, data_dir: Path, model: str, max_tokens: int, memory_url: str | None
) -> dict[str, str]:
    """The server's environment: ours, minus every inherited NAILA/MQTT/LLM/LangSmith setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NAILA_", "MQTT_", "LLM_", "LANGSMITH_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(
        {
            "MQTT_BROKER_HOST": "127.0.0.1",
            "MQTT_BROKER_PORT": str(port),
            "MQTT_CLIENT_ID": f"naila-reliability-{uuid.uuid4().hex[:8]}",
            "NAILA_DATA_DIR": str(data_dir),
            "LLM_MODEL_PATH": model,
            "LLM_MAX_TOKENS": str(max_tokens),
        }
    )
    if memory_url:
        env["NAILA_MEMORY_URL"] = memory_url
    return env


def _is_online(message: Received) -> bool:
    return message.topic == p.STATUS_TOPIC and (message.payload or {}).get("status") == "online"


@dataclass
class Rig:
    broker: Broker
    collector: Collector
    server: Server
    robots: list[Robot]
    quiet_s: float  # requests still open: this long without any reply closes the window (they are lost)
    sent: list[Sent] = field(default_factory=list)

    async def wait_online(self, since: float) -> float:
        """Seconds from ``since`` until the server is online (live status "online" or its start-up message)."""

        deadline = since + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            found = self.collector.first_after(since, lambda m: m.topic == p.STARTUP_TOPIC or _is_online(m))
            if found is not None:
                return found
            process = self.server.process
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"naila serve exited with {process.returncode}:\n{self.server.log_tail()}")
            await asyncio.sleep(0.02)
        raise RuntimeError(f"naila serve not online within {READY_TIMEOUT_S:.0f} s:\n{self.server.log_tail()}")

    async def send(self, robot: Robot, item: Sent, topic: str, payload: bytes) -> None:
        self.sent.append(item)
        await robot.publish(topic, payload)

    async def ask(self, robot: Robot, device: str, text: str) -> Sent:
        item = Sent(device, f"rel-{uuid.uuid4().hex[:12]}")
        body = {"task_id": item.task_id, "device_id": device, "transcription": text, "timestamp": p.utc_timestamp()}
        await self.send(robot, item, p.TASK_TOPIC, json.dumps(body).encode())
        return item

    async def settle(self, item: Sent, patience: float) -> None:
        deadline = time.monotonic() + patience
        while not self.collector.settled(item) and time.monotonic() < deadline:
            self.collector.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.collector.changed.wait(), timeout=max(0.01, deadline - time.monotonic()))

    async def collect(self) -> None:
        """Wait until every request is settled and replies stop, or nothing arrives for a while."""
        deadline = time.monotonic() + SCENARIO_LIMIT_S
        while time.monotonic() < deadline:
            quiet = time.monotonic() - self.collector.last_reply
            if quiet >= self.quiet_s:
                return
            if quiet >= SETTLED_QUIET_S and all(self.collector.settled(s) for s in self.sent if s.expect_reply):
                return
            await asyncio.sleep(0.1)
        eprint(f"collection stopped at the {SCENARIO_LIMIT_S:.0f} s limit")


@contextlib.asynccontextmanager
async def rig(
    workdir: Path,
    source: Path,
    model: str,
    robots: int,
    max_tokens: int,
    quiet_s: float,
    memory_url: str | None = None,
) -> AsyncIterator[Rig]:
    """A fresh broker, collector, server and ``robots`` robots; everything stopped on the way out."""
    broker = Broker(workdir)
    broker.start()
    collector = Collector(broker.port)
    env = server_env(source, broker.port, workdir / "data", model, max_tokens, memory_url)
    server = Server(source, env, workdir)
    bots = [Robot(broker.port, f"robot_{i:02d}") for i in range(robots)]
    tasks = [asyncio.create_task(collector.run())] + [asyncio.create_task(b.run()) for b in bots]
    the_rig = Rig(broker, collector, server, bots, quiet_s)
    try:
        await asyncio.wait_for(collector.connected.wait(), timeout=15)
        for bot in bots:
            await asyncio.wait_for(bot.connected.wait(), timeout=15)
        launched = server.launch()
        ready = await the_rig.wait_online(launched)
        eprint(f"  server online {ready:.1f} s after launch")
        yield the_rig
    finally:
        server.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        broker.stop()


# ---------------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    tally: Tally
    recovery: str = "-"
    notes: list[str] = field(default_factory=list)


def _device(index: int) -> str:
    return f"robot_{index:02d}"


async def _burst(r: Rig, requests: int) -> None:
    async def one(i: int, bot: Robot) -> None:
        for k in range(requests):
            await r.ask(bot, _device(i), QUESTIONS[(i + k) % len(QUESTIONS)])

    await asyncio.gather(*(one(i, bot) for i, bot in enumerate(r.robots)))


async def _closed_loop(r: Rig, requests: int, progress: Callable[[], None] | None = None) -> None:
    """Every robot sends its next request once the last one is settled (or after PATIENCE_S)."""

    async def one(i: int, bot: Robot) -> None:
        for k in range(requests):
            item = await r.ask(bot, _device(i), QUESTIONS[(i + k) % len(QUESTIONS)])
            if progress is not None:
                progress()
            await r.settle(item, PATIENCE_S)

    await asyncio.gather(*(one(i, bot) for i, bot in enumerate(r.robots)))


async def _with_fault(r: Rig, requests: int, fault: Callable[[], Any]) -> None:
    """The closed-loop load with ``fault()`` awaited once a third of the requests are sent."""
    total = len(r.robots) * requests
    reached = asyncio.Event()

    def progress() -> None:
        if len(r.sent) >= max(1, total // 3):
            reached.set()

    async def trigger() -> None:
        await reached.wait()
        await fault()

    await asyncio.gather(_closed_loop(r, requests, progress), trigger())


async def scenario_burst(r: Rig, requests: int, outage_s: float) -> Outcome:
    await _burst(r, requests)
    await r.collect()
    return Outcome(tally(r.sent, r.collector.log))


def _busy_process() -> subprocess.Popen[bytes]:
    """A process that keeps one core busy (the competing load of defect 5)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


async def scenario_cpu(r: Rig, requests: int, outage_s: float) -> Outcome:
    busy = _busy_process()
    try:
        await asyncio.sleep(0.5)
        await _burst(r, requests)
        await r.collect()
    finally:
        busy.kill()
        busy.wait(timeout=10)
    return Outcome(tally(r.sent, r.collector.log), notes=["one busy process on one core"])


async def scenario_broker(r: Rig, requests: int, outage_s: float) -> Outcome:
    back: list[float] = []

    async def fault() -> None:
        eprint(f"  stopping the broker for {outage_s:g} s ({len(r.sent)} requests sent)")
        r.broker.stop()
        await asyncio.sleep(outage_s)
        back.append(await asyncio.to_thread(r.broker.start))

    await _with_fault(r, requests, fault)
    await r.collect()
    outcome = Outcome(tally(r.sent, r.collector.log))
    # The server's own "online" on reconnecting is its first publish that cannot have waited in the broker
    # (messages queued for the collector's session before the outage arrive at once when it returns).
    online = r.collector.first_after(back[0], _is_online)
    answer = r.collector.first_after(back[0] + (online or 0.0), lambda m: m.topic == p.RESPONSE_TOPIC)
    outcome.recovery = _secs(online)
    outcome.notes.append(
        f"broker down {outage_s:g} s (SIGTERM); recovery: broker back → server online again;"
        f" next answer {_secs(None if online is None or answer is None else online + answer)} after the broker returned"
    )
    return outcome


async def scenario_kill9(r: Rig, requests: int, outage_s: float) -> Outcome:
    timing: list[float] = []

    async def fault() -> None:
        eprint(f"  kill -9 of the server ({len(r.sent)} requests sent)")
        r.server.kill9()
        launched = r.server.launch()
        timing.append(launched)
        timing.append(await r.wait_online(launched))

    await _with_fault(r, requests, fault)
    await r.collect()
    outcome = Outcome(tally(r.sent, r.collector.log))
    answer = r.collector.first_after(timing[0], lambda m: m.topic == p.RESPONSE_TOPIC)
    outcome.recovery = f"{timing[1]:.2f} s"
    outcome.notes.append(f"restart launch → online; first answer {_secs(answer)} after launch")
    return outcome


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


async def scenario_malformed(r: Rig, requests: int, outage_s: float) -> Outcome:
    corpus = bad_corpus()
    share = -(-len(corpus) // len(r.robots))
    unaddressable = [c for c in corpus if not c.item.expect_reply]

    async def one(i: int, bot: Robot) -> None:
        mine = corpus[i * share : (i + 1) * share]
        per_turn = -(-len(mine) // requests) if mine else 0
        for k in range(requests):
            text = ODD_TEXTS[(i + k) % len(ODD_TEXTS)] if k % 2 else QUESTIONS[(i + k) % len(QUESTIONS)]
            item = await r.ask(bot, _device(i), text)
            for bad in mine[k * per_turn : (k + 1) * per_turn]:
                await r.send(bot, bad.item, bad.topic, bad.payload)
            await r.settle(item, PATIENCE_S)

    await asyncio.gather(*(one(i, bot) for i, bot in enumerate(r.robots)))
    await r.collect()
    result = tally(r.sent, r.collector.log)
    bad = [s for s in r.sent if s.bad and s.expect_reply]
    bad_tally = tally(bad, r.collector.log)
    valid_tally = tally([s for s in r.sent if not s.bad], r.collector.log)
    replied_unaddressable = sum(
        1 for m in r.collector.log if (f := final_of(m)) and f[1] is not None and f[1].startswith("unaddr-")
    )
    payload_of = {c.item: c.payload for c in corpus}
    for item in bad_tally.lost_items:
        eprint(f"  no reply to bad payload from {item.device}: {payload_of[item][:120]!r}")
    for item in bad_tally.answered_items:
        eprint(f"  bad payload answered as valid from {item.device}: {payload_of[item][:120]!r}")
    notes = [
        f"bad payloads {len(bad)}: refused {bad_tally.refused}, answered as valid {bad_tally.answered}, "
        f"lost {bad_tally.lost}",
        f"valid {valid_tally.sent} (1 in 2 with NUL, lone surrogate or emoji): answered {valid_tally.answered}",
        f"+{len(unaddressable)} without a valid device id (no reply possible; {replied_unaddressable} answered)",
    ]
    alive = r.server.process is not None and r.server.process.poll() is None
    if not alive:
        notes.append("SERVER DIED")
    return Outcome(result, notes=notes)


async def scenario_postgres(r: Rig, requests: int, outage_s: float, proxy: TcpProxy, direct_url: str) -> Outcome:
    async def fault() -> None:
        eprint(f"  cutting the Postgres proxy for {outage_s:g} s ({len(r.sent)} requests sent)")
        await proxy.cut(outage_s)

    await _with_fault(r, requests, fault)
    await r.collect()
    outcome = Outcome(tally(r.sent, r.collector.log))
    stored = await asyncio.to_thread(stored_turns, r.server.env, direct_url)
    outcome.notes.append(f"Postgres cut {outage_s:g} s; turns stored afterwards {stored} of {outcome.tally.answered}")
    return outcome


def stored_turns(env: dict[str, str], memory_url: str) -> str:
    """The turn count of ``naila memory list`` (the server's own checkout), summed over conversations."""
    result = subprocess.run(
        [sys.executable, "-m", "naila_graph.cli", "memory", "list"],
        env={**env, "NAILA_MEMORY_URL": memory_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(env["NAILA_DATA_DIR"]).parent,  # the scenario's directory: no .env of a checkout
    )
    if result.returncode != 0:
        return f"unknown (naila memory list: exit {result.returncode}: {result.stderr.strip()[-200:]})"
    total = 0
    for line in result.stdout.splitlines()[1:]:
        cells = line.split()
        if len(cells) >= 2 and cells[1].isdigit():
            total += int(cells[1])
    return str(total)


class TcpProxy:
    """A loopback TCP proxy to ``target``; :meth:`cut` drops every connection and refuses new ones for a while."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = _free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def cut(self, seconds: float) -> None:
        await self.stop()
        await asyncio.sleep(seconds)
        await self.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update({writer, up_writer})


@contextlib.contextmanager
def fresh_postgres(server_url: str) -> Any:
    """A new database on ``server_url``'s server, dropped afterwards: its URL."""
    from urllib.parse import urlsplit

    import psycopg
    from psycopg import sql

    name = f"naila_reliability_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlsplit(server_url)._replace(path=f"/{name}").geturl()
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------------
# The malformed corpus
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    topic: str
    payload: bytes
    item: Sent


def bad_corpus(seed: int = 12) -> list[Bad]:
    """~250 bad payloads, each from a device id of its own (so its error reply is recognised), plus a few
    without a valid device id (no one to answer). Raw JSON text where json.dumps cannot write the case."""
    out: list[Bad] = []
    rng = random.Random(seed)

    def stt(raw: bytes) -> None:
        device = f"mal_{len(out):03d}"
        out.append(Bad(p.STT_PREFIX + device, raw, Sent(device, None, bad=True)))

    def task(fields: str, *, task_id: str | None = None) -> None:
        """A task from a fresh valid device with ``fields`` (raw JSON members) after it."""
        device = f"mal_{len(out):03d}"
        tid = task_id if task_id is not None else f"bad-{len(out):03d}"
        body = f'{{"device_id": "{device}", "task_id": "{tid}"{", " + fields if fields else ""}}}'
        out.append(Bad(p.TASK_TOPIC, body.encode(), Sent(device, tid, bad=True)))

    def raw_task(device: str, body: bytes, task_id: str | None) -> None:
        out.append(Bad(p.TASK_TOPIC, body, Sent(device, task_id, bad=True)))

    # not JSON, not UTF-8, not an object (STT: the device is in the topic)
    for raw in [b"", b"hello", b"{", b'{"transcription": ', b"[1, 2", b"\xff\xfe\x00", b"\xc3\x28", b"null", b"true",
                b"42", b'"just a string"', b"[]", b'[{"transcription": "hi", "confidence": 0.9}]', b"{]", b"{'a': 1}",
                b'{"transcription": "hi", "confidence": 0.9,}', b"\x00\x00\x00", b"NaN", b"Infinity"]:  # fmt: skip
        stt(raw)
    for _ in range(20):
        stt(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
    valid = b'{"transcription": "hello there", "confidence": 0.9, "timestamp": "2025-01-15T10:30:48Z"}'
    for cut in sorted(rng.sample(range(1, len(valid) - 1), 20)):  # truncated mid-message
        stt(valid[:cut])
    # STT fields
    bad_numbers = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 400, "-" + "9" * 400, "9" * 5000]
    bad_confidence = ['"high"', "[]", "{}", "true", "null", "-0.5", "1.5", "2", *bad_numbers]
    bad_timestamp = ['"yesterday"', '"2025-13-45T99:99:99Z"', "true", "[]", "{}", "-1e20", "1e30", *bad_numbers]
    bad_text = ["5", "[]", "{}", "true", "1.5", '["hi"]', '{"text": "hi"}']
    for value in bad_confidence:
        stt(f'{{"transcription": "hello there", "confidence": {value}}}'.encode())
    for value in bad_timestamp:
        stt(f'{{"transcription": "hello there", "confidence": 0.9, "timestamp": {value}}}'.encode())
    for value in bad_text:
        stt(f'{{"transcription": {value}, "confidence": 0.9}}'.encode())
    stt(b'{"confidence": 0.9}')
    stt(b'{"transcription": "hi"}')
    stt(b'{"transcription": "hi", "transcription": "ho", "confidence": 0.9}')
    stt(b'{"transcription": "hi", "confidence": 0.9, "confidence": 0.1}')
    stt(b'{"transcription": "hi", "confidence": 0.9, "extra": [1, NaN]}')
    stt(b'{"transcription": "hi", "confidence": 0.9, "extra": {"a": 1, "a": 2}}')
    stt(('{"transcription": "' + "x" * 70_000 + '", "confidence": 0.9}').encode())
    stt(('{"transcription": "' + "x" * 1_000_000 + '", "confidence": 0.9}').encode())
    stt(b'{"transcription": "hi", "confidence": 0.9, "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}")
    # task fields
    for value in bad_confidence[:4] + bad_confidence[5:]:  # a task's confidence is optional: null is fine
        task(f'"transcription": "hello there", "confidence": {value}')
        task(f'"query": "hello there", "input_type": "text", "confidence": {value}')
    for value in bad_timestamp:
        task(f'"transcription": "hello there", "timestamp": {value}')
    for value in bad_text:
        task(f'"transcription": {value}')
        task(f'"query": {value}')
    task("")  # no text at all
    task('"transcription": null, "query": null')
    for value in ["5", '"' + "t" * 40 + '"', '"a\\u0000b"', "[]", "true"]:
        task(f'"transcription": "hi", "input_type": {value}')
    for value in ["5", '".."', '"."', '"a b"', '"' + "c" * 200 + '"', '"a\\u0000"', "[]"]:
        task(f'"transcription": "hi", "conversation_id": {value}')
    task('"transcription": "hi", "transcription": "ho"')
    task('"transcription": "hi", "confidence": 0.5, "confidence": 0.6')
    task('"transcription": "hi", "extra": [1, 2, Infinity]')
    task('"transcription": "hi", "extra": {"deep": {"deeper": ' + "9" * 300 + "}}")
    task('"transcription": "hi", "extra": {"k": 1, "k": 2}')
    # bad task ids: the reply comes with task_id null, recognised by the device
    for value in ["[]", "{}", "true", '""', '"   "', '"' + "i" * 300 + '"', '"a\\u0000b"', '"a\\nb"', '"\\ud800"']:
        device = f"mal_{len(out):03d}"
        raw_task(device, f'{{"device_id": "{device}", "task_id": {value}, "transcription": "hi"}}'.encode(), None)
    device = f"mal_{len(out):03d}"
    raw_task(
        device, f'{{"device_id": "{device}", "task_id": "a", "task_id": "b", "transcription": "hi"}}'.encode(), None
    )
    # cancel with bad fields from a known device: an error reply as well
    for value in ["[]", "{}", "true", '"a\\u0000b"']:
        device = f"mal_{len(out):03d}"
        body = f'{{"device_id": "{device}", "task_id": {value}}}'.encode()
        out.append(Bad(p.CANCEL_TOPIC, body, Sent(device, None, bad=True)))
    device = f"mal_{len(out):03d}"
    out.append(Bad(p.CANCEL_TOPIC, f'{{"device_id": "{device}", "extra": NaN}}'.encode(), Sent(device, None, bad=True)))
    # no valid device id: nobody to answer (not counted; the server must just keep serving). A task too
    # large to parse is one: its device id is not read.
    for value in ["5", '""', '"a b"', '"' + "d" * 200 + '"', '"."', '".."', '"a/b"', '"a+b"', '"a\\u0000b"', "null"]:
        tid = f"unaddr-{len(out):03d}"
        body = f'{{"device_id": {value}, "task_id": "{tid}", "transcription": "hi"}}'.encode()
        out.append(Bad(p.TASK_TOPIC, body, Sent(f"?{len(out)}", tid, bad=True, expect_reply=False)))
    too_large = ('{"device_id": "robot_00", "task_id": "unaddr-big", "transcription": "' + "y" * 70_000 + '"}').encode()
    for raw in [b"not json", b'{"task_id": "unaddr-x", "transcription": "hi"}', b"\xff", too_large]:
        out.append(Bad(p.TASK_TOPIC, raw, Sent(f"?{len(out)}", None, bad=True, expect_reply=False)))
    for topic_device in [".", ".."]:
        raw = b'{"transcription": "hi", "confidence": 0.9}'
        out.append(Bad(p.STT_PREFIX + topic_device, raw, Sent(f"?{len(out)}", None, bad=True, expect_reply=False)))
    return out


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------


def row(name: str, outcome: Outcome) -> tuple[str, ...]:
    t = outcome.tally
    notes = list(outcome.notes)
    if t.error_codes:
        notes.append("errors: " + ", ".join(f"{code} {n}" for code, n in t.error_codes.most_common()))
    if t.duplicated:
        notes.append(f"duplicates: {t.identical_copies} of {t.duplicated} identical copies of one message")
    if t.resent_to_us:
        notes.append(f"{t.resent_to_us} broker resend(s) of a final to the collector (MQTT dup flag) counted once")
    low, high = t.answers_per_device
    if low != high:
        notes.append(f"answers per device {low}..{high}")
    if t.unanswered_devices:
        notes.append(f"{t.unanswered_devices} device(s) got no answer at all")
    if t.bad_answered and name != "malformed":
        notes.append(f"{t.bad_answered} bad payloads answered")
    if t.stream_mismatches:
        notes.append(f"{t.stream_mismatches} stream(s) differ from the final text without `replaced`")
    if t.unmatched:
        notes.append(f"{t.unmatched} final message(s) for no request sent")
    return (
        name,
        str(t.sent),
        str(t.answered),
        str(t.refused),
        str(t.lost),
        str(t.duplicated),
        str(t.order_violations),
        outcome.recovery,
        "; ".join(notes),
    )


def skipped(name: str, why: str) -> tuple[str, ...]:
    return (name, "-", "-", "-", "-", "-", "-", "-", why)


def parse_scenarios(text: str) -> list[str]:
    """``"burst,kill9"`` → those scenarios in table order; ``"all"`` → every one; a clear error otherwise."""
    if text.strip() == "all":
        return list(SCENARIOS)
    chosen = {t.strip() for t in text.split(",") if t.strip()}
    unknown = chosen - set(SCENARIOS)
    if unknown or not chosen:
        raise ValueError(f"--scenarios takes 'all' or some of {','.join(SCENARIOS)}; got {text!r}")
    return [s for s in SCENARIOS if s in chosen]


async def _run_one(
    name: str, source: Path, model: str, robots: int, requests: int, outage_s: float, max_tokens: int, quiet_s: float
) -> tuple[str, ...]:
    runners: dict[str, Callable[..., Any]] = {
        "burst": scenario_burst,
        "broker": scenario_broker,
        "kill9": scenario_kill9,
        "malformed": scenario_malformed,
        "cpu": scenario_cpu,
    }
    with tempfile.TemporaryDirectory(prefix=f"naila-reliability-{name}-") as tmp:
        workdir = Path(tmp)
        if name != "postgres":
            async with rig(workdir, source, model, robots, max_tokens, quiet_s) as r:
                outcome = await runners[name](r, requests, outage_s)
            return row(name, outcome)
        server_url = os.environ.get("NAILA_TEST_POSTGRES_URL")
        if not server_url:
            return skipped(name, "skipped (set NAILA_TEST_POSTGRES_URL)")
        from urllib.parse import urlsplit

        with fresh_postgres(server_url) as direct_url:
            parts = urlsplit(direct_url)
            proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
            await proxy.start()
            netloc = parts.netloc.rsplit("@", 1)
            auth = netloc[0] + "@" if len(netloc) == 2 else ""
            proxied = parts._replace(netloc=f"{auth}127.0.0.1:{proxy.port}").geturl()
            try:
                async with rig(workdir, source, model, robots, max_tokens, quiet_s, memory_url=proxied) as r:
                    outcome = await scenario_postgres(r, requests, outage_s, proxy, direct_url)
            finally:
                await proxy.stop()
            return row(name, outcome)


def run_benchmark(
    model_path: str | None,
    robots: int,
    requests: int,
    outage_s: float,
    max_tokens: int,
    quiet_s: float = 30.0,
    *,
    scenarios: str = "all",
    source: str | None = None,
) -> Rows:
    chosen = parse_scenarios(scenarios)
    checkout = Path(source).resolve() if source else HERE
    if not (checkout / "naila_graph" / "cli").is_dir():
        raise ValueError(f"--source {checkout} holds no naila_graph/cli: give a checkout of this project")
    rows: Rows = [HEADER]
    with tempfile.TemporaryDirectory(prefix="naila-reliability-model-") as tmp:
        model = model_path
        if model is None:
            from llm.testing import write_tiny_gguf

            model = str(write_tiny_gguf(Path(tmp) / "tiny.gguf"))
        eprint(
            f"reliability of {checkout}: {robots} robots x {requests} requests, outage {outage_s:g} s,"
            f" quiet {quiet_s:g} s, model {model}, max tokens {max_tokens}"
        )
        for name in chosen:
            eprint(f"- scenario {name}")
            started = time.monotonic()
            result = asyncio.run(_run_one(name, checkout, model, robots, requests, outage_s, max_tokens, quiet_s))
            eprint(f"  {' | '.join(result)}  ({time.monotonic() - started:.0f} s)")
            rows.append(result)
    return rows


def for_suite(rows: Rows) -> Rows:
    """(metric, value, target) rows for ``naila bench``: one per scenario."""
    out: Rows = [("metric", "value", "target / note")]
    for name, sent, answered, refused, lost, duplicated, order, recovery, note in rows[1:]:
        value = f"sent {sent}: answered {answered}, refused {refused}, lost {lost}, dup {duplicated}, order {order}"
        if recovery != "-":
            value += f"; recovery {recovery}"
        out.append((f"reliability: {name}", value, "0 lost, 0 dup, 0 order" + (f"; {note}" if note else "")))
    return out


PART = Part(__doc__, run_benchmark, OPTIONS, takes_model=True, for_suite=for_suite)  # the suite's part 9


EXTRA_HELP = f"""  --scenarios LIST      which rows: 'all' (default) or some of {",".join(SCENARIOS)}
  --source DIR          the checkout whose server runs (default: this one, {HERE})
Without --model the server gets a tiny generated GGUF; the postgres row needs NAILA_TEST_POSTGRES_URL."""


def main(argv: list[str] | None = None) -> int:
    """The part's command line plus ``--scenarios`` and ``--source`` (text options the Part cannot declare)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--scenarios", default="all")
    parser.add_argument("--source", default=None)
    known, rest = parser.parse_known_args(argv)
    if {"-h", "--help"} & set(rest):
        with contextlib.suppress(SystemExit):
            PART.main(["--help"])
        print(EXTRA_HELP)
        return 0
    try:
        parse_scenarios(known.scenarios)
    except ValueError as exc:
        eprint(f"reliability: {exc}")
        return 2
    if known.source and not (Path(known.source) / "naila_graph" / "cli").is_dir():
        eprint(f"reliability: --source {known.source} holds no naila_graph/cli: give a checkout of this project")
        return 2
    run = functools.partial(run_benchmark, scenarios=known.scenarios, source=known.source)
    return dataclasses.replace(PART, run=run).main(rest)


if __name__ == "__main__":
    sys.exit(main())
