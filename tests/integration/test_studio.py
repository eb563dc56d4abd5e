"""langgraph.json → ``naila_graph/studio.py:make_graph``, loaded the way ``langgraph dev`` / Studio load it.

langgraph-api (``langgraph_api/graph.py``, ``_graph_from_spec``) splits each ``graphs`` entry at its last
``:``; a left part with a ``/`` is a file path (relative to the working directory, which is the folder of
langgraph.json), imported with ``importlib.util.spec_from_file_location`` under a made-up module name
(the path with ``/`` → ``__``, no ``.py``), registered in ``sys.modules`` before it runs. A callable export
is a graph factory; a factory with one parameter gets the run's config; it is called for every run, on the
server's event loop, and may return a coroutine (awaited by the server).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from langgraph.pregel import Pregel

from naila_graph.graph import turn_config, turn_input

REPO = Path(__file__).resolve().parents[2]
GRAPH_ID = "naila"


def langgraph_config() -> dict[str, Any]:
    return json.loads((REPO / "langgraph.json").read_text(encoding="utf-8"))


def import_graph_module(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, str]:
    """Import the module of the ``naila`` graph as langgraph-api does; returns (module, variable name)."""
    source = langgraph_config()["graphs"][GRAPH_ID]
    source = source["path"] if isinstance(source, dict) else source
    path_or_module, variable = source.rsplit(":", maxsplit=1)
    assert "/" in path_or_module, "module syntax would import the installed package instead of the file"
    modname = path_or_module.replace("/", "__").replace(".py", "").replace(" ", "_").lstrip(".")
    spec = importlib.util.spec_from_file_location(modname, REPO / path_or_module)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, modname, module)
    spec.loader.exec_module(module)
    return module, variable


@pytest.fixture
def studio(monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Any]:
    """(a freshly imported module, its graph export) — fresh per test, so no model cache is shared."""
    module, variable = import_graph_module(monkeypatch)
    return module, module.__dict__[variable]


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_model: str) -> str:
    monkeypatch.setenv("LLM_MODEL_PATH", tiny_model)
    monkeypatch.setenv("LLM_MAX_TOKENS", "12")
    monkeypatch.setenv("LLM_TEMPERATURE", "0")
    monkeypatch.setenv("LLM_CONTEXT_SIZE", "2048")
    return tiny_model


def test_langgraph_json_points_at_a_file_in_this_repo() -> None:
    config = langgraph_config()
    assert config["dependencies"] == ["."]  # the project itself (pyproject.toml at the root) is installed
    assert set(config["graphs"]) == {GRAPH_ID}
    path, variable = config["graphs"][GRAPH_ID].rsplit(":", maxsplit=1)
    assert path.startswith("./") and (REPO / path).is_file()
    assert variable.isidentifier()
    assert config["env"] == ".env"  # optional: langgraph-api reads nothing when the file is absent


def test_importing_the_file_builds_nothing(studio: tuple[ModuleType, Any]) -> None:
    module, export = studio
    assert callable(export) and not isinstance(export, Pregel)  # a factory: the server calls it per run
    assert inspect.iscoroutinefunction(export)  # the server awaits it; loading happens off its event loop
    assert module._models == {}  # no model built or loaded at import (DESIGN.md decision 8)
    params = list(inspect.signature(export).parameters.values())
    assert [p.name for p in params] == ["config"]  # langgraph-api passes the run's config to a 1-parameter factory
    assert params[0].default is None  # and it can be called without one


async def test_the_factory_graph_answers_with_the_configured_model(
    studio: tuple[ModuleType, Any], tiny_env: str
) -> None:
    module, make_graph = studio
    graph = await make_graph({"configurable": {"thread_id": "studio-1"}})
    assert isinstance(graph, Pregel)
    assert graph.checkpointer is None  # the server supplies its own persistence
    out = await graph.ainvoke(turn_input("Tell me about stars", device_id="studio"), turn_config("studio-1"))
    assert out["response_source"] == "llm"
    assert out["fallback_reason"] is None
    assert out["metrics"]["model_name"] == "tiny-llama3-test"  # LLM_MODEL_PATH was used ...
    assert out["metrics"]["output_tokens"] == 12  # ... and so was LLM_MAX_TOKENS
    assert out["response_text"].strip()

    first_model = module._chat_model()[0]
    assert first_model.is_loaded
    again = module.load_graph()  # the next run's factory call (here: its synchronous core) reuses the model
    assert module._chat_model()[0] is first_model and len(module._models) == 1
    assert again.invoke(turn_input("Tell me about stars", device_id="studio"))["response_source"] == "llm"


async def test_the_factory_keeps_the_event_loop_free_while_it_loads(
    studio: tuple[ModuleType, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import naila_graph.brain

    def slow_open_model(model_override: str | None) -> tuple[Any, str | None]:
        time.sleep(0.3)  # a model load: blocking, seconds for real weights
        return None, "model_not_found"

    monkeypatch.setattr(naila_graph.brain, "open_model", slow_open_model)
    _, make_graph = studio
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        graph = await make_graph(None)
    finally:
        task.cancel()
    assert ticks >= 10  # the loop kept running while the factory loaded (langgraph dev fails blocking calls)
    out = await graph.ainvoke(turn_input("Tell me about stars", device_id="studio"))
    assert out["fallback_reason"] == "model_not_found"


async def test_the_factory_graph_streams_tokens_as_the_server_runs_it(
    studio: tuple[ModuleType, Any], tiny_env: str
) -> None:
    _, make_graph = studio
    graph = await make_graph({"configurable": {}})
    tokens: list[str] = []
    final: dict[str, Any] = {}
    async for mode, payload in graph.astream(
        turn_input("Tell me about stars", device_id="studio"),
        turn_config("studio-2"),
        stream_mode=["messages", "values"],
    ):
        if mode == "messages":
            chunk, meta = payload
            if meta["langgraph_node"] == "generate_response" and isinstance(chunk, AIMessageChunk):
                tokens.append(chunk.text)
        else:
            final = payload
    assert final["response_source"] == "llm"
    assert len([t for t in tokens if t]) >= 2  # streamed token by token, not one final blob
    assert final["metrics"]["output_tokens"] == 12


@pytest.mark.parametrize(
    ("make_file", "reason"),
    [
        (lambda path: None, "model_not_found"),
        (lambda path: path.write_bytes(b"GGUF" + b"\0" * 100), "model_load_failed"),
    ],
    ids=["missing", "corrupt"],
)
async def test_without_a_usable_model_the_factory_graph_still_answers(
    studio: tuple[ModuleType, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make_file: Any,
    reason: str,
) -> None:
    _, make_graph = studio
    model_file = tmp_path / "model.gguf"
    make_file(model_file)
    monkeypatch.setenv("LLM_MODEL_PATH", str(model_file))
    graph = await make_graph(None)
    assert "degraded mode" in capsys.readouterr().err  # said once, when the factory found no model
    out = await graph.ainvoke(turn_input("Tell me about stars", device_id="studio"), turn_config("studio-3"))
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", reason)
    assert out["response_text"].strip()
