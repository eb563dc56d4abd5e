"""A few real answers from the real 0.5B instruct bundle (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M)."""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path

import psutil
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.checkpoint.sqlite import SqliteSaver

from llm import ChatLlamaCpp
from naila_graph.graph import build_graph, turn_config, turn_input

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def qwen(real_model: str) -> ChatLlamaCpp:
    model = ChatLlamaCpp(model_path=real_model, temperature=0.0, max_tokens=64, n_ctx=2048)
    model.load()
    yield model
    model.unload()


def test_the_real_model_does_arithmetic(qwen: ChatLlamaCpp) -> None:
    answer = qwen.invoke([SystemMessage("You are a helpful assistant."), HumanMessage("What's 12 times 7?")])
    assert "84" in answer.text
    assert answer.response_metadata["finish_reason"] == "stop"  # ended by its own end-of-turn token
    assert "<|im_end|>" not in answer.text


def test_streaming_gives_the_same_text_as_invoke(qwen: ChatLlamaCpp) -> None:
    messages = [HumanMessage("Say hello to a robot in one sentence.")]
    assert "".join(c.text for c in qwen.stream(messages)) == qwen.invoke(messages).text


def test_token_count_matches_what_the_model_evaluates(qwen: ChatLlamaCpp) -> None:
    messages = [SystemMessage("Be brief."), HumanMessage("Hi!")]
    assert qwen.get_num_tokens_from_messages(messages) == qwen.invoke(messages).usage_metadata["input_tokens"]


def test_the_graph_remembers_a_name_across_turns(qwen: ChatLlamaCpp, tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.sqlite", check_same_thread=False)
    graph = build_graph(qwen, SqliteSaver(conn))
    config = turn_config("robot-alex")
    first = graph.invoke(turn_input("Hi! My name is Alex.", device_id="robot-alex"), config)
    second = graph.invoke(turn_input("What's my name?", device_id="robot-alex"), config)
    conn.close()
    assert first["response_source"] == "llm"
    assert second["response_source"] == "llm", second.get("fallback_reason")
    assert "Alex" in second["response_text"]


def test_unload_really_frees_the_memory(real_model: str) -> None:
    proc = psutil.Process()
    model = ChatLlamaCpp(model_path=real_model, use_mmap=False, n_ctx=512)
    gc.collect()
    before = proc.memory_info().rss
    model.load()
    loaded = proc.memory_info().rss
    model.unload()
    gc.collect()
    after = proc.memory_info().rss
    assert loaded - before > 300 * 2**20  # the weights (~490 MB) were really read
    assert loaded - after > 250 * 2**20  # and really released
