"""Cold start of ``naila serve`` (issue 12, defect 8): the benchmark part that measures it runs for real,
the command line stays light to import, and a model that cannot load still gives degraded mode although
``naila serve`` now starts loading it before the server's own load."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evals.bench import coldstart

pytestmark = pytest.mark.broker

# What `import naila_graph.cli` (and building its parser) must not load: start-up imports them only once a
# command needs them, so `naila serve` can start its model loading before the server's heavy imports.
HEAVY = (
    "aiomqtt",
    "langchain_core",
    "langgraph",
    "langsmith",
    "llama_cpp",
    "llm",
    "naila_graph.server",
    "numpy",
    "psycopg",
    "pydantic",
)


def _heavy_loaded_after(code: str) -> list[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def test_importing_the_cli_and_building_its_parser_loads_nothing_heavy() -> None:
    assert _heavy_loaded_after("import naila_graph.cli as cli\ncli.build_parser()") == []
    # the check sees them when they are loaded: the server module pulls in most of them
    loaded = _heavy_loaded_after("import naila_graph.server")
    assert {"langchain_core", "langgraph", "aiomqtt", "llm"} <= set(loaded)


def _seconds(cell: str) -> float:
    """The median of a ``median (min..max)`` cell."""
    return float(cell.split(" ")[0])


def test_the_cold_start_part_launches_naila_serve_and_reports_every_row(tiny_model: str, mosquitto: Any) -> None:
    repeats = int(coldstart.OPTIONS["repeats"].quick or 1)  # the --quick form
    rows = coldstart.run_benchmark(tiny_model, repeats, max_tokens=4, broker_port=mosquitto.port)
    table = {row[0]: row for row in rows[1:]}
    assert rows[0] == ("metric (s from launch)", "median (min..max)", "target / note")
    for metric in (
        "launch → online (retained status)",
        "launch → startup message",
        "task sent at launch → first sentence",
        "task sent at launch → answer",
        "task sent once online → first sentence",
        "task sent once online → answer",
    ):
        assert _seconds(table[metric][1]) > 0, table[metric]
    # per launch the final answer never comes before the first sentence (so neither do their medians)
    for kind in ("at launch", "once online"):
        assert _seconds(table[f"task sent {kind} → answer"][1]) >= _seconds(
            table[f"task sent {kind} → first sentence"][1]
        )
    # the server's own phases come from its startup message
    assert "server phase: load AI models" in table and "server phase: connect MQTT and subscribe" in table
    launches = table["launches"]
    assert launches[1] == f"{repeats} + {repeats}"
    assert Path(tiny_model).name in launches[2] and "DEGRADED" not in launches[2]
    assert "persona state from disk in " in launches[2]


def test_a_model_that_cannot_load_still_gives_degraded_mode(tmp_path: Path, mosquitto: Any) -> None:
    # naila serve starts loading before the server does; the failure must still reach the server's own load
    missing = tmp_path / "no-such-model.gguf"
    launch = _launch_and_read_startup(tmp_path, mosquitto.port, str(missing))
    assert launch.degraded_reason == "model_not_found"
    assert launch.online is not None and launch.answer is not None and launch.source == "pattern"


def _launch_and_read_startup(tmp_path: Path, port: int, model_path: str) -> coldstart.Launch:
    import asyncio

    import aiomqtt

    from naila_graph import protocol as p

    async def run() -> coldstart.Launch:
        client_id = "naila-coldstart-test"
        await coldstart._create_server_session(port, "5", client_id)
        topics = [p.STATUS_TOPIC, p.STARTUP_TOPIC, p.RESPONSE_TOPIC, p.stream_topic(coldstart.DEVICE)]
        async with aiomqtt.Client("127.0.0.1", port, identifier="coldstart-test-robot") as client:
            await client.subscribe([(topic, 1) for topic in topics])
            watcher = coldstart.Watcher()
            reader = asyncio.create_task(watcher.read(client))
            try:
                env = coldstart.server_env(port, "5", client_id, model_path, 4, tmp_path)
                return await coldstart._launch_once(client, watcher, env, tmp_path, send_at_launch=True)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await reader

    return asyncio.run(run())
