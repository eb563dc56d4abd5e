"""The graph for LangGraph Studio and ``langgraph dev`` (``langgraph.json`` names :func:`make_graph`).

The LangGraph server imports this file by path and calls the factory for every run (and for schema
requests), and it brings its own persistence: the graph is compiled without a checkpointer. Nothing
happens at import (DESIGN.md decision 8). The chat model is built from the ``LLM_*`` settings
(env + ``.env``) on the first call and kept for later calls with the same settings, so only the first
run pays for loading the weights. When the model cannot be found or loaded the graph runs in degraded
mode: the pattern responder answers and ``fallback_reason`` says why (``model_not_found`` …).

The server calls the factory on its event loop, and ``langgraph dev`` fails a run that makes a blocking
call there (file reads, model loading: ``BlockingError``). So :func:`make_graph` is a coroutine that
does the work in a worker thread; :func:`load_graph` is the same thing for synchronous callers.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

__all__ = ["load_graph", "make_graph"]

_lock = threading.Lock()
_models: dict[str, tuple[Any, str | None]] = {}  # LLM settings (JSON) -> (model or None, degraded reason)


def _chat_model() -> tuple[Any, str | None]:
    """The loaded chat model for the current ``LLM_*`` settings, or ``(None, reason)``; built once per settings."""
    from llm import LLMSettings
    from naila_graph.brain import open_model

    key = LLMSettings().model_dump_json()
    with _lock:  # one load at a time; concurrent first runs wait for it instead of loading twice
        if key not in _models:
            _models[key] = open_model(None)
        return _models[key]


async def make_graph(config: RunnableConfig | None = None) -> CompiledStateGraph:
    """The graph factory of langgraph.json: :func:`load_graph` off the event loop.

    ``config`` is the run's config passed by the LangGraph server; NAILA's behaviour comes from its
    settings (``LLM_*``, ``NAILA_*``), so it is accepted and not used.
    """
    return await asyncio.to_thread(load_graph)


def load_graph() -> CompiledStateGraph:
    """NAILA's graph (``process_input → dispatch_action → generate_response → finalize``), no checkpointer.

    Blocking: reads the settings and, on the first call, loads the model.
    """
    from naila_graph.graph import build_graph
    from naila_graph.settings import NailaSettings

    model, degraded_reason = _chat_model()
    return build_graph(model, None, settings=NailaSettings(), degraded_reason=degraded_reason)
