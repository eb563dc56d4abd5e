"""Benchmark: cold start of ``naila serve``, from process launch to online and to the first answer.

After a crash the robots wait for the whole start-up (issue 12, defect 8; target: online and answering
within 3 s of launch with the model file cached). Each launch is the real command line
(``python -m naila_graph.cli serve``) as a fresh process with a fresh ``NAILA_DATA_DIR``, against a local
broker, timed from just before the process is started:

* **online**: the server's retained ``online`` status arrives (it is published on connect);
* **startup message**: ``naila/system/health/startup`` arrives; it carries the server's own startup phases,
  and launch → startup message minus their sum is what came before them (interpreter, imports, settings);
* **answered**: a task's first stream sentence and its final answer arrive. Launches alternate between a
  task published *at launch* (QoS 1, while the server is still down: the broker keeps it in the server's
  persistent session, as after a crash) and a task published *once online*, so neither waits behind the
  other.

The server's session is created once before the first launch (the same client id for every launch, so
each launch finds it, as a restarted server does). Figures are median (min..max) in seconds.

    python -m evals.bench.coldstart [--model NAME|PATH] [--repeats N] [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from evals.bench.common import Option, Part, Rows, eprint, local_broker, spread
from naila_graph import protocol as p

OPTIONS = {
    "repeats": Option(5, quick=2, minimum=1, help="launches per kind (task sent at launch / once online)"),
    "max_tokens": Option(24, minimum=1, help="LLM_MAX_TOKENS of the server: a short answer"),
}

TARGET_S = 3.0  # issue 12, defect 8: online and answering within 3 s of launch
ONLINE_TIMEOUT_S = 180.0  # a large model on a slow disk still loads well inside this
ANSWER_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0
QUESTION = "Tell me one interesting fact about the moon."  # goes to the model, not the pattern responder
DEVICE = "coldstart-robot"
MqttProtocol = Literal["5", "3.1.1"]
SERVE_COMMAND = (sys.executable, "-m", "naila_graph.cli", "serve")  # the real command line


@dataclass
class Launch:
    """What one launch showed, in seconds from just before the process started."""

    send_at_launch: bool
    online: float | None = None
    startup: float | None = None
    first_sentence: float | None = None
    answer: float | None = None
    source: str | None = None
    phases_ms: dict[str, float] = field(default_factory=dict)
    degraded_reason: str | None = None
    persona_from_disk: bool = False  # naila serve put the persona's saved prompt state back (its log says)


class Watcher:
    """The robot's side of one launch: timestamps the server's status, startup message and the answer to
    the launch's task as they arrive."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.task_id = ""
        self.launch = Launch(send_at_launch=True)
        self.online = asyncio.Event()
        self.startup = asyncio.Event()
        self.answered = asyncio.Event()

    def reset(self, launch: Launch, task_id: str) -> None:
        self.launch, self.task_id = launch, task_id
        self.online.clear()
        self.startup.clear()
        self.answered.clear()
        self.t0 = time.perf_counter()

    async def read(self, client: Any) -> None:
        async for message in client.messages:
            now = time.perf_counter() - self.t0
            if not message.payload:
                continue  # a cleared retained status
            data = json.loads(message.payload)
            topic = str(message.topic)
            launch = self.launch
            if topic == p.STATUS_TOPIC:
                if data.get("status") == "online" and not self.online.is_set():
                    launch.online = now
                    self.online.set()
            elif topic == p.STARTUP_TOPIC:
                if not self.startup.is_set():
                    launch.startup = now
                    launch.phases_ms = dict(data.get("startup_phases_ms") or {})
                    launch.degraded_reason = data.get("degraded_reason")
                    self.startup.set()
            elif data.get("task_id") != self.task_id:
                continue
            elif topic == p.stream_topic(DEVICE):
                if data.get("text") and launch.first_sentence is None:
                    launch.first_sentence = now
            elif topic == p.RESPONSE_TOPIC:
                launch.answer = now
                launch.source = (data.get("response") or {}).get("source")
                if launch.first_sentence is None:  # an answer without stream sentences (e.g. a pattern)
                    launch.first_sentence = now
                self.answered.set()
            elif topic == p.error_topic(DEVICE):
                raise RuntimeError(
                    f"the server refused the cold-start task: {data.get('error')}: {data.get('message')}"
                )


def server_env(
    port: int, protocol: str, client_id: str, model_path: str, max_tokens: int, data_dir: Path
) -> dict[str, str]:
    """The environment of one ``naila serve``: this broker, this model, a fresh data dir and SQLite file
    (explicit, so a ``.env`` in the working directory cannot point the launch elsewhere)."""
    env = dict(os.environ)
    env.update(
        MQTT_BROKER_HOST="127.0.0.1",
        MQTT_BROKER_PORT=str(port),
        MQTT_PROTOCOL=protocol,
        MQTT_CLIENT_ID=client_id,
        MQTT_CLEAN_SESSION="false",
        NAILA_DATA_DIR=str(data_dir),
        NAILA_MEMORY_URL=f"sqlite:///{data_dir / 'memory.sqlite'}",
        NAILA_SHUTDOWN_GRACE_SECONDS="2",
        LLM_MODEL_PATH=model_path,
        LLM_MAX_TOKENS=str(max_tokens),
        PYTHONUNBUFFERED="1",
    )
    for name in ("MQTT_USERNAME", "MQTT_PASSWORD", "MQTT_TLS_CA", "MQTT_TLS_CERT", "MQTT_TLS_KEY", "NAILA_QUEUE_URL"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def _stopped_at_exit(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _wait(event: asyncio.Event, proc: subprocess.Popen[bytes], within: float, what: str, log: Path) -> None:
    """Wait for ``event``; a clear error when the server exits or the wait times out."""
    deadline = time.perf_counter() + within
    while not event.is_set():
        if proc.poll() is not None:
            raise RuntimeError(
                f"naila serve exited with code {proc.returncode} before {what}; its log:\n{_log_tail(log)}"
            )
        if time.perf_counter() > deadline:
            raise RuntimeError(f"naila serve did not reach {what} within {within:.0f} s; its log:\n{_log_tail(log)}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=0.2)


def _ignore(*_message: Any) -> None:
    """Nothing is meant to arrive while the session is being created; whatever does is left alone."""


async def _create_server_session(port: int, protocol: MqttProtocol, client_id: str) -> None:
    """The server's persistent session, as a server that ran before leaves it: a task published while the
    launched server is still starting waits in it."""
    from naila_graph.mqtt_link import MqttLink
    from naila_graph.settings import MQTTSettings

    settings = MQTTSettings(broker_host="127.0.0.1", broker_port=port, protocol=protocol, client_id=client_id)
    async with MqttLink(settings, p.INPUT_TOPICS, _ignore) as link:
        await asyncio.wait_for(link.connected.wait(), timeout=30)


async def _launch_once(
    client: Any, watcher: Watcher, env: dict[str, str], workdir: Path, send_at_launch: bool
) -> Launch:
    launch = Launch(send_at_launch=send_at_launch)
    task_id = f"coldstart-{uuid.uuid4().hex[:10]}"
    await client.publish(p.STATUS_TOPIC, b"", qos=1, retain=True)  # no earlier status can count as this one
    payload = {"task_id": task_id, "device_id": DEVICE, "transcription": QUESTION, "timestamp": p.utc_timestamp()}
    log = workdir / "serve.log"
    watcher.reset(launch, task_id)
    with log.open("wb") as out:
        # Popen returns once the child is forked: that instant is the launch everything is timed from
        proc = subprocess.Popen(SERVE_COMMAND, env=env, stdout=out, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    with _stopped_at_exit(proc):
        if send_at_launch:
            payload["timestamp"] = p.utc_timestamp()
            await client.publish(p.TASK_TOPIC, p.encode(payload), qos=1)
        await _wait(watcher.online, proc, ONLINE_TIMEOUT_S, "online", log)
        if not send_at_launch:
            payload["timestamp"] = p.utc_timestamp()
            await client.publish(p.TASK_TOPIC, p.encode(payload), qos=1)
        await _wait(watcher.startup, proc, ONLINE_TIMEOUT_S, "its startup message", log)
        await _wait(watcher.answered, proc, ANSWER_TIMEOUT_S, "an answer", log)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
    if code != 0:
        raise RuntimeError(f"naila serve ended with code {code} after SIGTERM; its log:\n{_log_tail(log)}")
    launch.persona_from_disk = "restored the persona's prompt state from disk" in log.read_text(errors="replace")
    return launch


async def _measure(port: int, protocol: MqttProtocol, model_path: str, repeats: int, max_tokens: int) -> list[Launch]:
    import aiomqtt

    client_id = f"naila-coldstart-{uuid.uuid4().hex[:6]}"
    await _create_server_session(port, protocol, client_id)
    topics = [p.STATUS_TOPIC, p.STARTUP_TOPIC, p.RESPONSE_TOPIC, p.stream_topic(DEVICE), p.error_topic(DEVICE)]
    launches: list[Launch] = []
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"coldstart-robot-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe([(topic, 1) for topic in topics])
        watcher = Watcher()
        reader = asyncio.create_task(watcher.read(client))
        try:
            for i in range(2 * repeats):
                send_at_launch = (i % 2 == 0) == (i // 2 % 2 == 0)  # at/online, online/at, at/online, ...
                with tempfile.TemporaryDirectory(prefix="naila-coldstart-") as tmp:
                    env = server_env(port, protocol, client_id, model_path, max_tokens, Path(tmp))
                    launch = await _launch_once(client, watcher, env, Path(tmp), send_at_launch)
                if reader.done():
                    reader.result()  # the reader's error (an error reply), if any
                launches.append(launch)
                eprint(
                    f"launch {i + 1}/{2 * repeats} (task {'at launch' if send_at_launch else 'once online'}):"
                    f" online {launch.online:.2f} s, startup message {launch.startup:.2f} s,"
                    f" first sentence {launch.first_sentence:.2f} s, answer {launch.answer:.2f} s ({launch.source})"
                )
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
    return launches


def _values(launches: list[Launch], name: str) -> list[float]:
    return [v for v in (getattr(launch, name) for launch in launches) if v is not None]


def summarize(launches: list[Launch], model_name: str, broker: str) -> Rows:
    """The table of ``launches``: times from launch, then the server's own phases."""
    target = f"≤ {TARGET_S:.1f} s"
    at_launch = [launch for launch in launches if launch.send_at_launch]
    once_online = [launch for launch in launches if not launch.send_at_launch]
    rows: Rows = [("metric (s from launch)", "median (min..max)", "target / note")]
    rows.append(("launch → online (retained status)", spread(_values(launches, "online"), 2), target))
    rows.append(("launch → startup message", spread(_values(launches, "startup"), 2), ""))
    rows.append(("task sent at launch → first sentence", spread(_values(at_launch, "first_sentence"), 2), target))
    rows.append(("task sent at launch → answer", spread(_values(at_launch, "answer"), 2), ""))
    rows.append(("task sent once online → first sentence", spread(_values(once_online, "first_sentence"), 2), target))
    rows.append(("task sent once online → answer", spread(_values(once_online, "answer"), 2), ""))
    before = [
        launch.startup - sum(launch.phases_ms.values()) / 1000 for launch in launches if launch.startup is not None
    ]
    rows.append(("before the phases: interpreter, imports, settings", spread(before, 2), "launch → startup − phases"))
    phases = list(dict.fromkeys(name for launch in launches for name in launch.phases_ms))
    for name in phases:
        values = [launch.phases_ms[name] / 1000 for launch in launches if name in launch.phases_ms]
        rows.append((f"server phase: {name}", spread(values, 2), ""))
    sources = sorted({launch.source or "-" for launch in launches})
    degraded = sorted({launch.degraded_reason for launch in launches if launch.degraded_reason})
    from_disk = sum(launch.persona_from_disk for launch in launches)
    note = f"{model_name}; broker {broker}; answer source {', '.join(sources)}"
    note += f"; persona state from disk in {from_disk} launches"
    if degraded:
        note += f"; DEGRADED: {', '.join(degraded)}"
    rows.append(("launches", f"{len(at_launch)} + {len(once_online)}", note))
    return rows


def run_benchmark(
    model_path: str | None, repeats: int, max_tokens: int = 24, *, broker_port: int | None = None
) -> Rows:
    """Launch ``naila serve`` ``2 × repeats`` times (alternating the kind of task) and tabulate. A broker on
    ``broker_port`` (MQTT 5) is used when given; otherwise one is started on a free port."""
    from llm.bundles import resolve_model_path

    path = str(resolve_model_path(model_path))  # the model file is cached before the first launch
    repeats, max_tokens = int(repeats), int(max_tokens)
    eprint(f"cold start: {2 * repeats} launches of naila serve on {path}, order alternated")
    if broker_port is not None:
        launches = asyncio.run(_measure(broker_port, "5", path, repeats, max_tokens))
        return summarize(launches, Path(path).name, f"on port {broker_port}")
    with local_broker() as (port, kind):
        protocol: MqttProtocol = "5" if kind == "mosquitto" else "3.1.1"
        launches = asyncio.run(_measure(port, protocol, path, repeats, max_tokens))
    return summarize(launches, Path(path).name, kind)


PART = Part(__doc__, run_benchmark, OPTIONS)  # the suite's part 8

if __name__ == "__main__":
    sys.exit(PART.main())
