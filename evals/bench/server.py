"""Benchmark: what the graph and MQTT add on top of the model, and how soon a robot hears the first sentence.

One run, same model, same broker. For every request the robot measures publish → first stream sentence
and publish → final answer, and the server's metrics message reports the model's own time to first token
and inference time for that very request; the difference is the overhead of graph + memory + MQTT.
Devices alternate order between rounds; every figure is a median with min..max (or p50/p99).
A second part times the graph alone per turn with a fake chat model (no llama.cpp), SQLite memory.

    python -m evals.bench.server [--model NAME|PATH] [--turns N] [--devices N] [--graph-turns N] [--pause-ms MS]
                                 [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from evals.bench.common import Option, Part, Rows, eprint, local_broker, percentile, robot, spread

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
OPTIONS = {
    "devices": Option(2, minimum=1, help="robots taking turns"),
    "turns": Option(6, quick=3, minimum=1, help="turns per device"),
    "graph_turns": Option(300, quick=100, minimum=1, help="turns of the graph alone with a fake model"),
    "pause_ms": Option(
        1000.0,
        minimum=0,
        help="wait before each request, as a robot speaks an answer and hears the next question",
    ),
}


async def _server_part(model_path: str | None, devices: int, turns: int, pause_ms: float) -> tuple[Rows, str]:
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
        n_threads=int(os.environ.get("BENCH_THREADS", "0")) or None,
    )
    rows: Rows = []
    names = [f"bench_dev_{i}" for i in range(devices)]
    with local_broker() as (port, broker_kind), tempfile.TemporaryDirectory() as tmp:
        settings = NailaSettings(
            data_dir=Path(tmp), memory_url=f"sqlite:///{Path(tmp) / 'm.sqlite'}", health_interval_seconds=3600
        )
        mqtt = MQTTSettings(broker_host="127.0.0.1", broker_port=port, client_id=f"bench-{uuid.uuid4().hex[:6]}")
        async with NailaServer(settings, mqtt, chat_model=model) as _server, robot(port, names) as bot:
            samples: list[dict[str, float]] = []
            for turn in range(turns):
                order = names if turn % 2 == 0 else list(reversed(names))
                for device in order:
                    await asyncio.sleep(pause_ms / 1000)  # the robot speaks the last answer, the person replies
                    script = SCRIPTS[names.index(device) % len(SCRIPTS)]
                    task_id, sent = await bot.ask(device, script[turn % len(script)])
                    m = bot.metrics[task_id]
                    if m.get("source") != "llm":
                        eprint(f"turn {turn} {device}: answered by {m.get('source')}, not timed")
                        continue
                    sample = {
                        "turn": turn,
                        "first_sentence_ms": (bot.first.get(task_id, bot.final[task_id]) - sent) * 1000,
                        "final_ms": (bot.final[task_id] - sent) * 1000,
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
                    eprint(f"    server timeline ms: {tl}")
                    samples.append(sample)
                    eprint(
                        f"turn {turn + 1}/{turns} {device}: first sentence {sample['first_sentence_ms']:.0f} ms,"
                        f" final {sample['final_ms']:.0f} ms, model {sample['model_ms']:.0f} ms,"
                        f" overhead {sample['overhead_ms']:.1f} ms; prompt {m['context_length']} tokens,"
                        f" {m['cached_prompt_tokens']} reused, {m['tokens_generated']} generated"
                    )
        warm = [s for s in samples if s["turn"] >= 1]
        rows.append(
            (
                "graph+MQTT overhead per answer ms (final - model)",
                spread([s["overhead_ms"] for s in samples]),
                "<= 10 (p50)",
            )
        )
        rows.append(("  queue: received -> turn starts ms", spread([s["queue_ms"] for s in samples]), ""))
        rows.append(("  graph before the model starts ms", spread([s["pre_model_ms"] for s in samples]), ""))
        rows.append(("  model done -> answer published ms", spread([s["post_model_ms"] for s in samples]), ""))
        rows.append(("  MQTT: robot -> server + server -> robot ms", spread([s["mqtt_ms"] for s in samples]), ""))
        rows.append(
            ("publish -> first sentence ms, warm turns", spread([s["first_sentence_ms"] for s in warm], 0), "<= 500")
        )
        rows.append(("  model time to first token ms, warm turns", spread([s["model_ttft_ms"] for s in warm], 0), ""))
        rows.append(("publish -> final answer ms", spread([s["final_ms"] for s in samples], 0), ""))
        rows.append(("  model inference ms (same requests)", spread([s["model_ms"] for s in samples], 0), ""))
        rows.append(("generation tok/s", spread([s["tps"] for s in samples]), ""))
        info = (
            f"model {model.model_name} ({path}); broker {broker_kind}; {devices} devices x {turns} turns;"
            f" {pause_ms:.0f} ms between requests"
        )
    return rows, info


async def _graph_part(turns: int) -> Rows:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    from naila_graph.graph import build_graph
    from naila_graph.memory import open_async_checkpointer
    from naila_graph.turn import TurnEvent, TurnRequest, TurnRunner, consume

    async def ignore(event: TurnEvent) -> None:
        return None

    answers = itertools.cycle([AIMessage("Hello there! It is nice to talk with you. What shall we do today?")])
    model = GenericFakeChatModel(messages=answers)
    with tempfile.TemporaryDirectory() as tmp:
        async with open_async_checkpointer(f"sqlite:///{Path(tmp) / 'g.sqlite'}") as saver:
            # as the server runs a turn (the turn layer's events, one checkpoint written at the end)
            runner = TurnRunner(build_graph(model, saver))
            timings: list[float] = []
            for i in range(turns + 10):
                device = f"dev{i % 4}"
                request = TurnRequest(text=QUESTIONS[i % len(QUESTIONS)], device_id=device, thread_id=device)
                start = time.perf_counter()
                await consume(runner.start(request), ignore)
                if i >= 10:  # warm-up excluded
                    timings.append((time.perf_counter() - start) * 1000)
    floor = await _langgraph_floor(turns)
    return [
        ("turn with a fake model, streamed as the server runs it ms, p50", f"{percentile(timings, 0.5):.2f}", ""),
        ("turn with a fake model, streamed as the server runs it ms, p99", f"{percentile(timings, 0.99):.2f}", ""),
        (
            "LangGraph alone: 4 no-op nodes, server's stream modes ms, p50",
            f"{percentile(floor, 0.5):.2f}",
            "framework floor",
        ),
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


def run_benchmark(model_path: str | None, devices: int, turns: int, graph_turns: int, pause_ms: float = 1000.0) -> Rows:
    rows: Rows = [("metric", "median (min..max)", "target")]
    server_rows, info = asyncio.run(_server_part(model_path, devices, turns, pause_ms))
    eprint(info)
    rows.extend(server_rows)
    rows.extend(asyncio.run(_graph_part(graph_turns)))
    return rows


PART = Part(__doc__, run_benchmark, OPTIONS)  # the suite's part 3

if __name__ == "__main__":
    sys.exit(PART.main())
