"""LangSmith tracing checked offline: a local server records what the client posts (FACTS.md).

With LANGSMITH_TRACING=true every graph run is one trace named ``naila_turn``, tagged and carrying the
device, the task, the model and the turn's outcome (intent, source, fallback) as metadata; the LLM
run inside it holds the rendered prompt. With tracing off nothing is sent. LLM_LOG_PROMPTS logs the
rendered prompt locally.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver

from llm import ChatLlamaCpp, LLMSettings, load_chat_model
from naila_graph.graph import build_graph, turn_config, turn_input
from nodes.finalize import speakable
from prompts.persona import NAILA_PERSONA
from tests.support.langsmith import LangSmithRecorder, langsmith_recorder, tracing_to

FIXED_NOW = datetime(2026, 11, 25, 15, 42)


def _turn(graph: Any, text: str, task_id: str, device: str = "robot1") -> dict[str, Any]:
    return graph.invoke(
        turn_input(text, device_id=device, task_id=task_id), turn_config(device, device_id=device, task_id=task_id)
    )


def _root(recorder: LangSmithRecorder, task_id: str) -> dict[str, Any]:
    roots = [r for r in recorder.named("naila_turn") if r["extra"]["metadata"].get("task_id") == task_id]
    assert len(roots) == 1, [r.get("name") for r in recorder.runs().values()]
    return roots[0]


def _children(recorder: LangSmithRecorder, root: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in recorder.runs().values() if r.get("trace_id") == root["id"] and r["id"] != root["id"]]


def test_a_traced_turn_holds_the_rendered_prompt_the_answer_and_the_metadata(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with langsmith_recorder() as recorder, tracing_to(recorder, monkeypatch):
        model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=12, temperature=0)
        graph = build_graph(model, InMemorySaver(), clock=lambda: FIXED_NOW)
        first = _turn(graph, "My name is Alex.", "task-1")
        out = _turn(graph, "What are the stars made of?", "task-2")
    assert out["response_source"] == "llm"

    root = _root(recorder, "task-2")
    metadata = root["extra"]["metadata"]
    assert metadata["device_id"] == "robot1" and metadata["thread_id"] == "robot1"
    assert metadata["intent"] == "question"
    assert metadata["response_source"] == "llm"
    assert "fallback_reason" in metadata and metadata["fallback_reason"] is None
    assert metadata["model_name"] == "tiny-llama3-test"  # the GGUF's general.name
    assert {"naila", "device:robot1", "source:llm", "intent:question"} <= set(root["tags"])
    assert root["outputs"]["response_text"] == out["response_text"]
    assert root.get("error") is None and root.get("end_time")

    nodes = [r["name"] for r in _children(recorder, root) if r.get("parent_run_id") == root["id"]]
    assert sorted(nodes) == ["dispatch_action", "finalize", "generate_response", "process_input"]  # one run each
    llm = [r for r in _children(recorder, root) if r.get("run_type") == "llm"]
    assert len(llm) == 1
    prompt = json.dumps(llm[0]["inputs"])
    for part in (
        NAILA_PERSONA.splitlines()[0],  # static persona first
        "My name is Alex.",  # history: the earlier turn ...
        json.dumps(first["response_text"])[1:-1],  # ... and what NAILA answered
        "Current local time: Wednesday, 25 November 2026, 15:42.",  # per-turn guidance
        "What are the stars made of?",  # the user message
    ):
        assert part in prompt, part
    assert (
        prompt.index("My name is Alex.")
        < prompt.index("Current local time")
        < prompt.index("What are the stars made of?")
    )
    generated = llm[0]["outputs"]["generations"][0][0]["text"]
    assert generated and speakable(generated) == out["response_text"]  # the traced text is what was answered
    assert llm[0]["extra"]["metadata"]["ls_model_name"] == "tiny-llama3-test"


async def test_a_fallback_is_filterable_on_the_async_path(tiny_model_eot: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with langsmith_recorder() as recorder, tracing_to(recorder, monkeypatch):
        model = ChatLlamaCpp(model_path=tiny_model_eot, n_ctx=1024, temperature=0)
        graph = build_graph(model, InMemorySaver())
        config = turn_config("robot2", device_id="robot2", task_id="task-9")
        out = await graph.ainvoke(turn_input("Tell me about stars", device_id="robot2", task_id="task-9"), config)
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "empty_output")
    root = _root(recorder, "task-9")
    metadata = root["extra"]["metadata"]
    assert (metadata["response_source"], metadata["fallback_reason"]) == ("pattern", "empty_output")
    assert metadata["device_id"] == "robot2" and metadata["intent"] == "general"
    assert {"fallback", "fallback:empty_output", "source:pattern", "device:robot2"} <= set(root["tags"])


def test_an_action_answer_is_traced_with_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    with langsmith_recorder() as recorder, tracing_to(recorder, monkeypatch):
        model = GenericFakeChatModel(messages=iter([AIMessage("unused")]))
        out = _turn(build_graph(model, InMemorySaver(), clock=lambda: FIXED_NOW), "what time is it?", "task-3")
    assert out["response_source"] == "action"
    metadata = _root(recorder, "task-3")["extra"]["metadata"]
    assert (metadata["intent"], metadata["response_source"]) == ("time_query", "action")
    assert metadata["model_name"] == "GenericFakeChatModel"  # the graph's label: no model answered


def test_nothing_is_sent_when_tracing_is_off(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with langsmith_recorder() as recorder, tracing_to(recorder, monkeypatch, enabled=False):
        model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=4, temperature=0)
        out = _turn(build_graph(model, InMemorySaver()), "Tell me about stars", "task-4")
    assert out["response_source"] == "llm"
    assert recorder.requests == []


def test_llm_log_prompts_logs_the_rendered_prompt_locally(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLM_LOG_PROMPTS", "true")
    model = load_chat_model(LLMSettings(model_path=tiny_model, max_tokens=4, context_size=2048))
    assert model.log_prompts is True
    graph = build_graph(model, InMemorySaver(), clock=lambda: FIXED_NOW)
    with caplog.at_level(logging.INFO, logger="llm"):  # whichever module of llm renders it
        _turn(graph, "What is a comet?", "task-5")
    prompts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("prompt (")]
    assert len(prompts) == 1
    assert NAILA_PERSONA.splitlines()[0] in prompts[0]
    assert "Current local time" in prompts[0] and "What is a comet?" in prompts[0]
    assert "<|start_header_id|>" in prompts[0]  # the text exactly as the template renders it


def test_prompts_are_not_logged_by_default(tiny_model: str, caplog: pytest.LogCaptureFixture) -> None:
    model = load_chat_model(LLMSettings(model_path=tiny_model, max_tokens=4, context_size=2048))
    with caplog.at_level(logging.INFO, logger="llm"):  # whichever module of llm renders it
        _turn(build_graph(model, InMemorySaver()), "What is a comet?", "task-6")
    assert not [r for r in caplog.records if r.getMessage().startswith("prompt (")]
