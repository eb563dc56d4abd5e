"""The graph's async and streaming entry points, on the tiny GGUF through the real llama.cpp path.

The tiny model's text is random, so every path is compared with what the model itself produced: the raw
answer that ``generate_response`` stored (the checkpoint just before ``finalize``) and the plain ``invoke``
of a fresh graph. A fresh model per graph means no KV-cache reuse, so greedy decoding is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver

from llm import ChatLlamaCpp
from naila_graph.graph import build_graph, turn_config, turn_input
from nodes.finalize import speakable

FIXED_NOW = datetime(2026, 11, 25, 15, 42)
QUESTION = "Tell me about stars"
MAX_TOKENS = 24
THREAD = "robot1"


@pytest.fixture
def fresh_graph(tiny_model: str) -> Callable[[], Any]:
    def make() -> Any:
        model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=MAX_TOKENS, temperature=0)
        return build_graph(model, InMemorySaver(), clock=lambda: FIXED_NOW)

    return make


def inputs() -> dict[str, Any]:
    return turn_input(QUESTION, device_id=THREAD)


def config() -> RunnableConfig:
    return turn_config(THREAD)


def raw_answer(graph: Any) -> str:
    """The model's answer as generate_response stored it, before finalize cleaned it."""
    before_finalize = [s for s in graph.get_state_history(config()) if s.next == ("finalize",)]
    assert len(before_finalize) == 1
    return before_finalize[0].values["response_text"]


async def araw_answer(graph: Any) -> str:
    before_finalize = [s async for s in graph.aget_state_history(config()) if s.next == ("finalize",)]
    assert len(before_finalize) == 1
    return before_finalize[0].values["response_text"]


@pytest.fixture
def reference(fresh_graph: Callable[[], Any]) -> tuple[dict[str, Any], str]:
    """(the final state, the raw model answer) of a plain synchronous ``invoke``."""
    graph = fresh_graph()
    out = graph.invoke(inputs(), config())
    raw = raw_answer(graph)
    assert out["response_source"] == "llm"
    assert out["metrics"]["output_tokens"] == MAX_TOKENS
    assert raw.strip() and out["response_text"] == speakable(raw)
    return out, raw


def model_tokens(items: list[tuple[BaseMessage, dict[str, Any]]]) -> list[str]:
    """The non-empty text chunks that ``stream_mode="messages"`` delivered from the model."""
    tokens = [(chunk, meta) for chunk, meta in items if meta["langgraph_node"] == "generate_response"]
    assert tokens and all(isinstance(chunk, AIMessageChunk) for chunk, _ in tokens)
    assert {meta["thread_id"] for _, meta in tokens} == {THREAD}
    return [chunk.text for chunk, _ in tokens if chunk.text]


def check_stored_pair(items: list[tuple[BaseMessage, dict[str, Any]]], final_text: str) -> None:
    """Apart from the model's tokens, the stream carries only the turn finalize stores."""
    others = [
        (type(m), m.text, meta["langgraph_node"]) for m, meta in items if meta["langgraph_node"] != "generate_response"
    ]
    assert others == [(HumanMessage, QUESTION, "finalize"), (AIMessage, final_text, "finalize")]


async def test_ainvoke_gives_the_answer_of_invoke(
    fresh_graph: Callable[[], Any], reference: tuple[dict[str, Any], str]
) -> None:
    ref, ref_raw = reference
    graph = fresh_graph()
    out = await graph.ainvoke(inputs(), config())
    assert out["response_source"] == "llm" and out["fallback_reason"] is None
    assert await araw_answer(graph) == ref_raw
    assert out["response_text"] == ref["response_text"]
    assert out["metrics"]["output_tokens"] == MAX_TOKENS
    assert [(m.type, m.text) for m in out["messages"]] == [("human", QUESTION), ("ai", ref["response_text"])]


async def test_astream_values_shows_the_raw_answer_then_the_final_one(
    fresh_graph: Callable[[], Any], reference: tuple[dict[str, Any], str]
) -> None:
    ref, ref_raw = reference
    snapshots = [s async for s in fresh_graph().astream(inputs(), config(), stream_mode="values")]
    # after generate_response, before finalize: the model's own text, not yet stored as a turn
    generated = [s for s in snapshots if s.get("response_source") == "llm" and not s.get("messages")]
    assert [s["response_text"] for s in generated] == [ref_raw]
    final = snapshots[-1]
    assert final["response_text"] == ref["response_text"] == speakable(ref_raw)
    assert final["response_source"] == "llm"
    assert [(m.type, m.text) for m in final["messages"]] == [("human", QUESTION), ("ai", ref["response_text"])]
    assert [s.get("raw_text") for s in snapshots] == [QUESTION] * len(snapshots)


def test_stream_messages_yields_the_model_tokens(
    fresh_graph: Callable[[], Any], reference: tuple[dict[str, Any], str]
) -> None:
    ref, ref_raw = reference
    graph = fresh_graph()
    items = list(graph.stream(inputs(), config(), stream_mode="messages"))
    tokens = model_tokens(items)
    assert 1 < len(tokens) <= MAX_TOKENS  # token by token (a character split across tokens comes out whole)
    assert "".join(tokens) == raw_answer(graph) == ref_raw
    final_text = graph.get_state(config()).values["response_text"]
    assert speakable("".join(tokens)) == final_text == ref["response_text"]
    check_stored_pair(items, final_text)


async def test_astream_messages_yields_the_model_tokens(
    fresh_graph: Callable[[], Any], reference: tuple[dict[str, Any], str]
) -> None:
    ref, ref_raw = reference
    graph = fresh_graph()
    items = [item async for item in graph.astream(inputs(), config(), stream_mode="messages")]
    tokens = model_tokens(items)
    assert 1 < len(tokens) <= MAX_TOKENS
    assert "".join(tokens) == await araw_answer(graph) == ref_raw
    final_text = (await graph.aget_state(config())).values["response_text"]
    assert speakable("".join(tokens)) == final_text == ref["response_text"]
    check_stored_pair(items, final_text)


async def test_astream_several_modes_at_once_as_the_cli_and_server_use_it(
    fresh_graph: Callable[[], Any], reference: tuple[dict[str, Any], str]
) -> None:
    ref, ref_raw = reference
    tokens: list[str] = []
    updates: dict[str, Any] = {}
    final: dict[str, Any] = {}
    async for mode, payload in fresh_graph().astream(inputs(), config(), stream_mode=["messages", "updates", "values"]):
        if mode == "messages":
            chunk, meta = payload
            if meta["langgraph_node"] == "generate_response" and chunk.text:
                tokens.append(chunk.text)
        elif mode == "updates":
            updates.update(payload)
        else:
            final = payload
    assert list(updates) == ["process_input", "dispatch_action", "generate_response", "finalize"]
    assert "".join(tokens) == updates["generate_response"]["response_text"] == ref_raw
    assert final["response_text"] == updates["finalize"]["response_text"] == ref["response_text"]
