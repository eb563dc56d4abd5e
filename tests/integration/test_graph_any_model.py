"""Any LangChain chat model can be the brain (DESIGN.md decision 11): without the LocalModel extras the
graph still answers from the model, with approximate token counts and no prefill."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import count_tokens_approximately
from langgraph.checkpoint.sqlite import SqliteSaver
from pydantic import Field

import nodes.generate_response
from llm.capabilities import LocalModel
from naila_graph.graph import build_graph, make_generator, turn_config, turn_input
from naila_graph.settings import NailaSettings

FIXED_NOW = datetime(2026, 11, 25, 15, 42)


class RecordingFakeModel(GenericFakeChatModel):
    """LangChain's fake chat model, keeping the prompts it was given."""

    prompts: list[list[BaseMessage]] = Field(default_factory=list)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.prompts.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def recording(*answers: str) -> RecordingFakeModel:
    return RecordingFakeModel(messages=iter([AIMessage(a) for a in answers]))


@pytest.fixture
def saver(tmp_path: Path) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(tmp_path / "memory.sqlite", check_same_thread=False)
    yield SqliteSaver(conn)
    conn.close()


@pytest.fixture
def approximate_counts(monkeypatch: pytest.MonkeyPatch) -> list[list[BaseMessage]]:
    """The message lists generate_response counted approximately, in order."""
    counted: list[list[BaseMessage]] = []

    def spy(messages: Any, **kwargs: Any) -> int:
        counted.append(list(messages))
        return count_tokens_approximately(messages, **kwargs)

    monkeypatch.setattr(nodes.generate_response, "count_tokens_approximately", spy)
    return counted


def turn(graph: Any, text: str) -> dict[str, Any]:
    return dict(graph.invoke(turn_input(text, device_id="robot1"), turn_config("robot1")))


def test_a_plain_langchain_model_is_not_a_local_model() -> None:
    assert not isinstance(recording(), LocalModel)  # the premise of this file


def test_two_turns_are_answered_by_any_chat_model(
    saver: SqliteSaver, approximate_counts: list[list[BaseMessage]]
) -> None:
    model = recording("Nice to meet you, Alex!", "Your name is Alex.")
    graph = build_graph(model, saver, clock=lambda: FIXED_NOW)
    first = turn(graph, "My name is Alex.")
    second = turn(graph, "What's my name?")

    assert (first["response_source"], first["response_text"]) == ("llm", "Nice to meet you, Alex!")
    assert (second["response_source"], second["response_text"]) == ("llm", "Your name is Alex.")
    assert second["fallback_reason"] is None
    stored = graph.get_state(turn_config("robot1")).values["messages"]
    assert [(m.type, m.text) for m in stored] == [
        ("human", "My name is Alex."),
        ("ai", "Nice to meet you, Alex!"),
        ("human", "What's my name?"),
        ("ai", "Your name is Alex."),
    ]
    # the second prompt carries the first turn, selected with approximate token counts
    assert [m.text for m in model.prompts[1]][1:3] == ["My name is Alex.", "Nice to meet you, Alex!"]
    assert any(
        [m.text for m in counted] == ["My name is Alex.", "Nice to meet you, Alex!"] for counted in approximate_counts
    )


def test_history_over_the_assumed_window_is_trimmed_by_approximate_counts(
    saver: SqliteSaver, approximate_counts: list[list[BaseMessage]]
) -> None:
    settings = NailaSettings(max_input_chars=100_000)
    long_message = "word " * 4000  # ~5000 tokens by the approximation: over the assumed 4096-token window
    model = recording("That was long!", "Hello!")
    graph = build_graph(model, saver, settings=settings, clock=lambda: FIXED_NOW)
    turn(graph, long_message)
    out = turn(graph, "Hello there, how are you?")

    assert out["response_source"] == "llm"
    assert len(graph.get_state(turn_config("robot1")).values["messages"]) == 4  # memory keeps both turns
    assert out["metrics"]["history_messages"] == 0  # ...but the prompt could not hold the first
    assert [m.type for m in model.prompts[1]] == ["system", "system", "human"]
    assert any(long_message.strip() in [m.text for m in counted] for counted in approximate_counts)


def test_a_plain_model_gets_no_local_model_handle() -> None:
    generator = make_generator(recording(), NailaSettings(), persona="You are NAILA.", clock=lambda: FIXED_NOW)
    assert generator.local_model is None  # so no exact counts and no prefill are attempted
