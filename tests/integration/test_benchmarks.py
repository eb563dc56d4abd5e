"""The benchmark suite's plumbing on the tiny GGUF: parts, table, bandwidth probe, knob sweep, robot.

The figures themselves are measured by ``naila bench`` (docs/PERFORMANCE.md), never asserted here.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from evals.bench import suite as bench_suite
from evals.bench.common import Part, RobotError, local_broker, print_table, robot
from evals.bench.knobs import Config, configs, measure
from evals.bench.roofline import Bandwidth
from evals.bench.roofline import run_benchmark as roofline


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1-10", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), ("3", [3]), ("5,1,3-4", [1, 3, 4, 5]), (" 2 , 2 ", [2])],
)
def test_parts_parse(text: str, expected: list[int]) -> None:
    assert bench_suite.parse_parts(text) == expected


@pytest.mark.parametrize("text", ["0", "11", "1-12", "x", "3-1", ",", ""])
def test_bad_parts_are_refused_with_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="numbers 1-10"):
        bench_suite.parse_parts(text)


def test_naila_bench_rejects_bad_parts_without_running_anything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "naila_graph.cli", "bench", "--parts", "12"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "--parts takes numbers 1-10" in result.stderr and result.stdout == ""


def test_suite_table_has_one_header_and_every_row_of_every_part(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str | None, bool]] = []

    def part(rows: list[tuple[str, ...]]) -> Any:
        def run(model: str | None, quick: bool) -> list[tuple[str, ...]]:
            calls.append((model, quick))
            return rows

        return run

    parts = {
        1: part([("metric", "median", "target"), ("ours / raw tok/s", "1.01 (1.00..1.02)", ">= 0.98")]),
        4: part([("metric", "value", "target"), ("RSS growth MB", "3.0", "<= 50"), ("note only", "x")]),
    }
    table = bench_suite.run_suite("tiny.gguf", True, [1, 4], runner=lambda n, m, q: parts[n](m, q))
    assert calls == [("tiny.gguf", True), ("tiny.gguf", True)]
    assert table == [
        ("part", "metric", "median (min..max)", "target / note"),
        ("1 ours vs raw", "ours / raw tok/s", "1.01 (1.00..1.02)", ">= 0.98"),
        ("4 memory (leak check)", "RSS growth MB", "3.0", "<= 50"),
        ("4 memory (leak check)", "note only", "x", ""),
    ]
    print_table(table, group_first_column=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("part") and set(lines[1]) <= {"-", "+"}
    assert lines[4].startswith(" ")  # the part name is printed once per group
    assert len(lines) == 2 + 3


def test_bandwidth_probe_reads_the_whole_buffer() -> None:
    probe = Bandwidth(64, threads=2)
    assert len(probe.slices) == 2 and sum(s.nbytes for s in probe.slices) == 64 * 2**20
    gbps = probe.measure(passes=2)
    assert 0.1 < gbps < 10_000  # GB/s: any real machine is inside this range


def test_roofline_rows_on_the_tiny_model(tiny_model: str) -> None:
    rows = roofline(tiny_model, repeats=2, max_tokens=16, buffer_mb=64)
    values = {r[0].split(",")[0]: r[1] for r in rows[1:]}
    number = re.compile(r"^\d+(\.\d+)? \(\d+(\.\d+)?\.\.\d+(\.\d+)?\)$")
    assert number.match(values["memory read bandwidth GB/s"])
    assert number.match(values["generation tok/s (ChatLlamaCpp)"])
    assert number.match(values["fraction of the ceiling (per round)"])
    assert 0 < float(values["model weights MB"]) < 100  # the tiny model is a few MB at most


def test_knob_sweep_varies_one_knob_at_a_time_from_the_defaults(tiny_model: str) -> None:
    sweep = configs(default_threads=2, logical_cores=2)
    assert sweep[0].fields == {} and sweep[0].name.startswith("default")
    assert all(len(c.fields) == 1 or set(c.fields) == {"kv_cache_type", "flash_attn"} for c in sweep[1:])
    names = [c.name for c in sweep]
    assert "threads 1" in names and "flash attention True" in names and any("q8_0" in n for n in names)
    sample = measure(tiny_model, Config("threads 1", {"n_threads": 1}), max_tokens=8)
    assert sample.prompt_tps > 0 and sample.gen_tps > 0


def test_a_part_runs_in_its_own_process_and_its_rows_come_back(tiny_model: str) -> None:
    rows = bench_suite.run_part_isolated(5, tiny_model, True)  # the bandwidth part on the tiny model
    assert rows[0] == ("metric", "median (min..max)", "note")
    assert any(r[0].startswith("fraction of the ceiling") for r in rows)


async def test_the_langgraph_floor_times_every_turn_of_a_real_graph() -> None:
    from evals.bench.server import _langgraph_floor

    timings = await _langgraph_floor(5)
    assert len(timings) == 5 and all(0 < t < 5000 for t in timings)


@pytest.mark.parametrize("part", [m.rsplit(".", 1)[1] for _, m in bench_suite.PARTS.values()] + ["suite"])
def test_every_part_runs_alone_with_its_own_options(part: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"evals.bench.{part}", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--quick" in result.stdout


def test_every_part_of_the_suite_names_a_module_that_declares_it() -> None:
    for name, module in bench_suite.PARTS.values():
        assert isinstance(importlib.import_module(module).PART, Part), name


async def _answer_one_task(port: int, answer: Callable[[Any, str, str], Awaitable[None]]) -> asyncio.Task[None]:
    """A stand-in server: takes the next task from the task topic and answers it with ``answer``."""
    import aiomqtt

    from naila_graph import protocol as p

    ready = asyncio.Event()

    async def serve() -> None:
        async with aiomqtt.Client("127.0.0.1", port) as client:
            await client.subscribe(p.TASK_TOPIC, qos=1)
            ready.set()
            async for message in client.messages:
                task = json.loads(message.payload)
                await answer(client, task["task_id"], task["device_id"])
                return

    serving = asyncio.create_task(serve())
    await asyncio.wait_for(ready.wait(), timeout=10)
    return serving


async def test_the_bench_robot_times_stream_answer_and_metrics_on_the_protocols_topics() -> None:
    from naila_graph import protocol as p

    async def answer(client: Any, task_id: str, device: str) -> None:
        await client.publish(p.stream_topic(device), p.encode(p.stream_payload(task_id, 0, "Hello.", final=True)))
        await client.publish(p.RESPONSE_TOPIC, p.encode({"task_id": task_id, "response": {"text": "Hello."}}))
        await client.publish(p.METRICS_TOPIC, p.encode({"task_id": task_id, "source": "llm"}))

    with local_broker() as (port, _kind):
        serving = await _answer_one_task(port, answer)
        async with robot(port, ["bench_dev_0"]) as bot:
            task_id, sent = await asyncio.wait_for(bot.ask("bench_dev_0", "Hi"), timeout=20)
        await serving
    assert sent <= bot.first[task_id] <= bot.final[task_id]
    assert bot.metrics[task_id] == {"task_id": task_id, "source": "llm"}


async def test_the_bench_robot_stops_with_the_servers_error_instead_of_waiting() -> None:
    from naila_graph import protocol as p

    async def refuse(client: Any, task_id: str, device: str) -> None:
        await client.publish(p.error_topic(device), p.encode(p.error_payload(task_id, "queue_full", "try later")))

    with local_broker() as (port, _kind):
        serving = await _answer_one_task(port, refuse)
        async with robot(port, ["bench_dev_0"]) as bot:
            with pytest.raises(RobotError, match="queue_full: try later"):
                await asyncio.wait_for(bot.ask("bench_dev_0", "Hi"), timeout=20)
        await serving
