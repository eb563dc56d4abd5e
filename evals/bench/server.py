"""Benchmark: what the graph and MQTT add on top of the model, and how soon a robot hears the first sentence.

One run, same model, same broker. For every request the robot measures publish → first stream sentence
and publish → final answer, and the server's metrics message reports the model's own time to first token
and inference time for that very request; the difference is the overhead of graph + memory + MQTT.
Devices alternate order between rounds; every figure is a median with min..max (or p50/p99).
A second part times the graph alone per turn with a fake chat model (no llama.cpp), SQLite memory.

    python -m evals.bench_server [--model NAME|PATH] [--turns N] [--devices N] [--graph-turns N] [--pause-ms MS]
                                 [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

# One conversation script per device (devices beyond the scripts reuse them): different conversations,
# so no device can borrow another's evaluated prompt.
SCRIPTS = [
    [
        "Hi! My name is Sam and I like astronomy.",
        "What is a good first telescope target tonight?",
        "Why does the moon look bigger near the horizon?",
        "Can you remind me what my name is?",
        "Tell me one fun fact about Saturn.",
        "How far away is the sun, roughly?",
        "Thanks! What should I read next about stars?",
        "Goodbye for now, NAILA.",
    ],
    [
        "Hello robot, I am Maya and I am baking bread today.",
        "How long should the dough rise?",
        "What makes the crust crispy?",
        "Do you remember my name?",
        "Can I use honey instead of sugar?",
        "What temperature should the oven be?",
        "Thank you! Any tip for slicing it?",
        "Bye NAILA, see you later.",
    ],
    [
        "Good morning NAILA, I'm Leo.",
        "What is a quick breakfast idea?",
        "Is coffee bad for me?",
        "What was my name again?",
        "Give me one tip to focus at work.",
        "How often should I take breaks?",
        "Great, thanks for the help.",
        "See you tonight.",
    ],
]
QUESTIONS = SCRIPTS[0]  # the graph-only part


def _eprint(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _fmt(values: list[float], digits: int = 1) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def _broker() -> Iterator[tuple[int, str]]:
    """mosquitto on a free loopback port when installed, else the embedded pure-Python broker."""
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


class _Robot:
    """Publishes tasks and timestamps what comes back (on arrival, in the client's reader task)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.first: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self.metrics: dict[str, dict[str, Any]] = {}
        self.done: dict[str, asyncio.Event] = {}

    async def read(self) -> None:
        async for message in self.client.messages:
            now = time.perf_counter()
            data = json.loads(message.payload)
            task_id = data.get("task_id")
            topic = str(message.topic)
            if topic.endswith("/stream") and data.get("text"):
                self.first.setdefault(task_id, now)
            elif topic == "naila/ai/responses/text":
                self.final[task_id] = now
            elif topic == "naila/ai/metrics":
                self.metrics[task_id] = data
                if task_id in self.done:
                    self.done[task_id].set()

    async def ask(self, device: str, text: str) -> tuple[str, float]:
        from naila_graph import protocol as p

        task_id = f"bench-{uuid.uuid4().hex[:10]}"
        self.done[task_id] = asyncio.Event()
        payload = {"task_id": task_id, "device_id": device, "transcription": text, "timestamp": p.utc_timestamp()}
        sent = time.perf_counter()
        await self.client.publish(p.TASK_TOPIC, p.encode(payload), qos=1)
        await asyncio.wait_for(self.done[task_id].wait(), timeout=300)
        return task_id, sent


@contextlib.asynccontextmanager
async def _robot(port: int) -> AsyncIterator[_Robot]:
    import aiomqtt

    nodelay = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)  # as the server's own client does
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=f"bench-robot-{uuid.uuid4().hex[:6]}", socket_options=nodelay
    ) as client:
        await client.subscribe([("naila/ai/responses/#", 1), ("naila/ai/metrics", 1)])
        robot = _Robot(client)
        reader = asyncio.create_task(robot.read())
        try:
            yield robot
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader


async def _server_part(
    model_path: str | None, devices: int, turns: int, pause_ms: float
) -> tuple[list[tuple[str, str, str]], str]:
    from llm import ChatLlamaCpp
    from llm.bundles import resolve_model_path
    from naila_graph.server import NailaServer
    from naila_graph.settings import MQTTSettings, NailaSettings

    path = str(resolve_model_path(model_path))
    model = ChatLlamaCpp(
        model_path=path,
        n_ctx=4096,
        max_tokens=96,
        temperature=0.0,
        seed=1,
        n_threads=int(__import__("os").environ.get("BENCH_THREADS", "0")) or None,
    )
    rows: list[tuple[str, str, str]] = []
    with _broker() as (port, broker_kind), tempfile.TemporaryDirectory() as tmp:
        settings = NailaSettings(
            data_dir=Path(tmp), memory_url=f"sqlite:///{Path(tmp) / 'm.sqlite'}", health_interval_seconds=3600
        )
        mqtt = MQTTSettings(broker_host="127.0.0.1", broker_port=port, client_id=f"bench-{uuid.uuid4().hex[:6]}")
        async with NailaServer(settings, mqtt, chat_model=model) as _server, _robot(port) as robot:
            names = [f"bench_dev_{i}" for i in range(devices)]
            samples: list[dict[str, float]] = []
            for turn in range(turns):
                order = names if turn % 2 == 0 else list(reversed(names))
                for device in order:
                    await asyncio.sleep(pause_ms / 1000)  # the robot speaks the last answer, the person replies
                    script = SCRIPTS[names.index(device) % len(SCRIPTS)]
                    task_id, sent = await robot.ask(device, script[turn % len(script)])
                    m = robot.metrics[task_id]
                    if m.get("source") != "llm":
                        _eprint(f"turn {turn} {device}: answered by {m.get('source')}, not timed")
                        continue
                    sample = {
                        "turn": turn,
                        "first_sentence_ms": (robot.first.get(task_id, robot.final[task_id]) - sent) * 1000,
                        "final_ms": (robot.final[task_id] - sent) * 1000,
                        "model_ttft_ms": m["time_to_first_token_ms"],
                        "model_ms": m["inference_time_ms"],
                        "tps": m["tokens_per_second"] or 0.0,
                    }
                    sample["overhead_ms"] = sample["final_ms"] - sample["model_ms"]
                    tl = m.get("timeline_ms") or {}
                    # where the overhead went: waiting in the queue, graph before the model got its turn,
                    # model done -> answer published, and what is left: the two MQTT hops
                    sample["queue_ms"] = m["queue_time_ms"]
                    sample["pre_model_ms"] = tl.get("model_done", 0.0) - m["inference_time_ms"]
                    sample["post_model_ms"] = tl.get("answer_published", 0.0) - tl.get("model_done", 0.0)
                    sample["mqtt_ms"] = (
                        sample["overhead_ms"] - sample["queue_ms"] - sample["pre_model_ms"] - sample["post_model_ms"]
                    )
                    _eprint(f"    server timeline ms: {tl}")
                    samples.append(sample)
                    _eprint(
                        f"turn {turn + 1}/{turns} {device}: first sentence {sample['first_sentence_ms']:.0f} ms,"
                        f" final {sample['final_ms']:.0f} ms, model {sample['model_ms']:.0f} ms,"
                        f" overhead {sample['overhead_ms']:.1f} ms; prompt {m['context_length']} tokens,"
                        f" {m['cached_prompt_tokens']} reused, {m['tokens_generated']} generated"
                    )
        warm = [s for s in samples if s["turn"] >= 1]
        rows.append(
            (
                "graph+MQTT overhead per answer ms (final - model)",
                _fmt([s["overhead_ms"] for s in samples]),
                "<= 10 (p50)",
            )
        )
        rows.append(("  queue: received -> turn starts ms", _fmt([s["queue_ms"] for s in samples]), ""))
        rows.append(("  graph before the model starts ms", _fmt([s["pre_model_ms"] for s in samples]), ""))
        rows.append(("  model done -> answer published ms", _fmt([s["post_model_ms"] for s in samples]), ""))
        rows.append(("  MQTT: robot -> server + server -> robot ms", _fmt([s["mqtt_ms"] for s in samples]), ""))
        rows.append(
            ("publish -> first sentence ms, warm turns", _fmt([s["first_sentence_ms"] for s in warm], 0), "<= 500")
        )
        rows.append(("  model time to first token ms, warm turns", _fmt([s["model_ttft_ms"] for s in warm], 0), ""))
        rows.append(("publish -> final answer ms", _fmt([s["final_ms"] for s in samples], 0), ""))
        rows.append(("  model inference ms (same requests)", _fmt([s["model_ms"] for s in samples], 0), ""))
        rows.append(("generation tok/s", _fmt([s["tps"] for s in samples]), ""))
        info = (
            f"model {model.model_name} ({path}); broker {broker_kind}; {devices} devices x {turns} turns;"
            f" {pause_ms:.0f} ms between requests"
        )
    return rows, info


async def _graph_part(turns: int) -> list[tuple[str, str, str]]:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from naila_graph.graph import build_graph, turn_config, turn_input
    from naila_graph.memory import open_async_checkpointer

    answers = itertools.cycle([AIMessage("Hello there! It is nice to talk with you. What shall we do today?")])
    model = GenericFakeChatModel(messages=answers)
    with tempfile.TemporaryDirectory() as tmp:
        async with open_async_checkpointer(f"sqlite:///{Path(tmp) / 'g.sqlite'}") as saver:
            graph = build_graph(model, saver)
            timings: list[float] = []
            for i in range(turns + 10):
                device = f"dev{i % 4}"
                start = time.perf_counter()
                await graph.ainvoke(  # as the server runs a turn: one checkpoint, written at the end
                    turn_input(QUESTIONS[i % len(QUESTIONS)], device_id=device),
                    turn_config(device),
                    durability="exit",
                )
                if i >= 10:  # warm-up excluded
                    timings.append((time.perf_counter() - start) * 1000)
    floor = await _langgraph_floor(turns)
    return [
        ("graph turn with a fake model ms, p50", f"{_pct(timings, 0.5):.2f}", ""),
        ("graph turn with a fake model ms, p99", f"{_pct(timings, 0.99):.2f}", ""),
        ("LangGraph alone: 4 no-op nodes, server's stream modes ms, p50", f"{_pct(floor, 0.5):.2f}", "framework floor"),
    ]


async def _langgraph_floor(turns: int) -> list[float]:
    """What LangGraph itself costs per turn on this machine: four nodes that do nothing, run the way the
    server runs NAILA's graph (messages + values streaming, one checkpoint at the end, in memory)."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, MessagesState, StateGraph

    class Floor(MessagesState, total=False):
        step: int

    async def nothing(state: Floor) -> dict[str, Any]:
        return {"step": 1}

    builder: Any = StateGraph(Floor)
    names = ["a", "b", "c", "d"]
    for name in names:
        builder.add_node(name, nothing)
    for before, after in zip([START, *names], [*names, END], strict=True):
        builder.add_edge(before, after)
    graph = builder.compile(checkpointer=InMemorySaver())
    timings: list[float] = []
    for i in range(turns + 10):
        config: Any = {"configurable": {"thread_id": f"dev{i % 4}"}}
        start = time.perf_counter()
        async for _ in graph.astream({"step": 0}, config, stream_mode=["messages", "values"], durability="exit"):
            pass
        if i >= 10:
            timings.append((time.perf_counter() - start) * 1000)
    return timings


def run_benchmark(
    model_path: str | None, devices: int, turns: int, graph_turns: int, pause_ms: float = 1000.0
) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = [("metric", "median (min..max)", "target")]
    server_rows, info = asyncio.run(_server_part(model_path, devices, turns, pause_ms))
    _eprint(info)
    rows.extend(server_rows)
    rows.extend(asyncio.run(_graph_part(graph_turns)))
    return rows


def main(argv: list[str] | None = None) -> int:
    from evals.bench_llm import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle name or GGUF path (default: the default bundle)")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--graph-turns", type=int, default=300)
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=1000.0,
        help="wait before each request, as a robot speaks an answer and hears the next question (default 1000)",
    )
    parser.add_argument("--quick", action="store_true", help="2 devices x 3 turns, 100 graph turns")
    args = parser.parse_args(argv)
    if args.quick:
        args.turns, args.graph_turns = 3, 100
    for name in ("devices", "turns", "graph_turns"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.pause_ms < 0:
        parser.error("--pause-ms must not be negative")
    print_table(run_benchmark(args.model, args.devices, args.turns, args.graph_turns, args.pause_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
