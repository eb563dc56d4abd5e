"""NAILA's orchestrator: the LangGraph graph, its memory, the MQTT server and the CLI."""

from __future__ import annotations

from typing import Any

__all__ = ["build_graph"]


def __getattr__(name: str) -> Any:  # lazy: importing the package builds nothing and loads nothing heavy
    if name == "build_graph":
        from naila_graph.graph import build_graph

        return build_graph
    raise AttributeError(name)
