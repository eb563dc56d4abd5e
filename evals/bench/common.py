"""What every benchmark part shares: progress on stderr, figures as ``median (min..max)``, the table,
the command line, and a local MQTT broker with a robot that times what the server publishes. The
process's RSS is :func:`naila_graph.telemetry.rss_mb`, the one the server reports.

Imports of the heavy or optional parts (aiomqtt, the embedded broker) happen inside the functions that
need them, so a part that never talks MQTT does not load them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naila_graph import protocol as p
from naila_graph.cli.errors import eprint as eprint  # progress on stderr, flushed: stdout holds the table

Rows = list[tuple[str, ...]]
"""A part's table: the header first, then one row per figure (metric, value, target or note)."""

ROBOT_TIMEOUT_S = 300.0  # one answer on a slow CPU with a large model stays well inside this


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median (min..max)`` of ``values``, or ``-`` when there are none."""
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def percentile(values: Sequence[float], q: float) -> float:
    """The value at quantile ``q`` (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def print_table(rows: Rows, *, group_first_column: bool = False) -> None:
    """Print ``rows`` as aligned columns with a rule under the header; with ``group_first_column``, a
    first cell equal to the one above is left blank (the suite's part name once per group)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    previous = None
    for j, row in enumerate(rows):
        cells = list(row)
        if group_first_column and j and cells[0] == previous:
            cells[0] = ""
        else:
            previous = cells[0]
        print(" | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip())
        if j == 0:
            print("-+-".join("-" * w for w in widths))


@dataclass(frozen=True)
class Option:
    """One numeric option of a part: ``--name`` with its default, its value under ``--quick`` (None: the
    same) and its smallest accepted value."""

    default: float
    quick: float | None = None
    minimum: float | None = None
    help: str | None = None


def _same(rows: Rows) -> Rows:
    return rows


@dataclass(frozen=True)
class Part:
    """A benchmark part: ``run(model_path=..., **options)`` returns its table. ``main`` is its command line
    (``--model`` when ``takes_model``, one ``--flag`` per option, ``--quick``); ``rows`` is the same
    measurement for the suite, whose table takes (metric, value, target) rows (``for_suite`` reshapes)."""

    doc: str | None
    run: Callable[..., Rows]
    options: dict[str, Option]
    takes_model: bool = True
    for_suite: Callable[[Rows], Rows] = _same

    def _values(self, quick: bool, given: dict[str, float] | None = None) -> dict[str, float]:
        chosen = {name: (given or {}).get(name, option.default) for name, option in self.options.items()}
        if quick:
            chosen.update({name: option.quick for name, option in self.options.items() if option.quick is not None})
        return chosen

    def _measure(self, model: str | None, values: dict[str, float]) -> Rows:
        return self.run(**({"model_path": model} if self.takes_model else {}), **values)

    def rows(self, model: str | None, quick: bool) -> Rows:
        """The figures of ``main`` with ``--quick`` or with the defaults, shaped for the suite's table."""
        return self.for_suite(self._measure(model, self._values(quick)))

    def main(self, argv: list[str] | None = None) -> int:
        """Parse ``argv`` (default: the process's), measure, print the table; 0, or exit 2 on a bad option."""
        parser = argparse.ArgumentParser(description=(self.doc or "").strip().partition("\n")[0])
        if self.takes_model:
            parser.add_argument("--model", help="bundle name or GGUF path (default: the default bundle)")
        for name, option in self.options.items():
            flag = f"--{name.replace('_', '-')}"
            described = f"{option.help} (default {option.default:g})" if option.help else f"default {option.default:g}"
            parser.add_argument(flag, type=type(option.default), default=option.default, help=described)
        quick = [f"{name.replace('_', ' ')} {o.quick:g}" for name, o in self.options.items() if o.quick is not None]
        parser.add_argument("--quick", action="store_true", help=f"a shorter run: {', '.join(quick)}")
        args = parser.parse_args(argv)
        values = self._values(args.quick, {name: getattr(args, name) for name in self.options})
        for name, option in self.options.items():
            if option.minimum is not None and values[name] < option.minimum:
                parser.error(f"--{name.replace('_', '-')} must be at least {option.minimum:g} (got {values[name]:g})")
        print_table(self._measure(getattr(args, "model", None), values))
        return 0


# ---------------------------------------------------------------- MQTT: broker and robot


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def local_broker() -> Iterator[tuple[int, str]]:
    """``(port, kind)`` of a broker on a free loopback port: mosquitto when installed, else the embedded
    pure-Python broker."""
    port = _free_port()
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        from naila_graph.embedded_broker import EmbeddedBroker

        with EmbeddedBroker(port=port):
            yield port, "embedded amqtt (mosquitto not installed)"
        return
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.02)
            yield port, "mosquitto"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


class RobotError(RuntimeError):
    """The server answered a benchmark task on the device's error topic."""


class Robot:
    """Publishes tasks as a robot does and timestamps, on arrival, what the server sends back for them:
    the first stream sentence (``first``), the final answer (``final``) and the metrics (``metrics``)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.first: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.command: dict[str, float] = {}  # a robot action's naila/command/request message arrived
        self._errors: dict[str, dict[str, Any]] = {}
        self._device: dict[str, str] = {}  # task id -> the device that asked
        self._done: dict[str, asyncio.Event] = {}

    async def read(self) -> None:
        """Record every message for a task of ours; runs as the client's reader task."""
        async for message in self.client.messages:
            now = time.perf_counter()
            data = json.loads(message.payload)
            task_id = data.get("task_id")
            device = self._device.get(task_id)
            if device is None:
                continue
            topic = str(message.topic)
            if topic == p.stream_topic(device):
                if data.get("text"):
                    self.first.setdefault(task_id, now)
            elif topic == p.RESPONSE_TOPIC:
                self.final[task_id] = now
            elif topic == p.COMMAND_TOPIC:
                self.command.setdefault(task_id, now)
            elif topic == p.METRICS_TOPIC:  # the server's last message of a turn
                self.metrics[task_id] = data
                self._done[task_id].set()
            elif topic == p.error_topic(device):
                self._errors[task_id] = data
                self._done[task_id].set()

    async def ask(self, device: str, text: str) -> tuple[str, float]:
        """Publish ``text`` as ``device``'s task and wait for its metrics; ``(task id, perf_counter at publish)``."""
        task_id = f"bench-{uuid.uuid4().hex[:10]}"
        self._device[task_id] = device
        self._done[task_id] = asyncio.Event()
        payload = {"task_id": task_id, "device_id": device, "transcription": text, "timestamp": p.utc_timestamp()}
        sent = time.perf_counter()
        await self.client.publish(p.TASK_TOPIC, p.encode(payload), qos=1)
        await asyncio.wait_for(self._done[task_id].wait(), timeout=ROBOT_TIMEOUT_S)
        if task_id in self._errors:
            error = self._errors[task_id]
            raise RobotError(f"the server refused task {task_id}: {error.get('error')}: {error.get('message')}")
        return task_id, sent


@contextlib.asynccontextmanager
async def robot(port: int, devices: Iterable[str]) -> AsyncIterator[Robot]:
    """A :class:`Robot` connected to the broker on ``port``, subscribed to what ``devices`` receive."""
    import aiomqtt

    nodelay = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)  # as the server's own client does
    topics = [p.RESPONSE_TOPIC, p.METRICS_TOPIC, p.COMMAND_TOPIC]
    for device in devices:
        topics += [p.stream_topic(device), p.error_topic(device)]
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"bench-robot-{uuid.uuid4().hex[:6]}", socket_options=nodelay
    ) as client:
        await client.subscribe([(topic, 1) for topic in topics])
        bot = Robot(client)
        reader = asyncio.create_task(bot.read())
        try:
            yield bot
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
