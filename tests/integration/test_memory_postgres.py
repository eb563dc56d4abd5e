"""Conversation memory on the machine's PostgreSQL server (DESIGN.md decision 6: Postgres when several servers
share memory). Each test gets a database of its own, created for it and dropped afterwards.

The server is ``NAILA_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``, trust auth);
when it cannot be reached the tests skip and say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from llm import ChatLlamaCpp
from naila_graph.graph import build_graph, turn_config, turn_input
from naila_graph.memory import (
    aprune_thread,
    clear_conversation,
    conversation_messages,
    list_conversations,
    open_async_checkpointer,
    open_checkpointer,
    prune_thread,
)
from tests.support.postgres import fresh_database

FIXED_NOW = datetime(2026, 11, 25, 15, 42)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """``postgresql://…/naila_test_<random>``: a new, empty database, dropped after the test."""
    with fresh_database() as url:
        yield url


def tiny_chat(path: str) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=path, n_ctx=2048, max_tokens=12, temperature=0)


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(a) for a in answers]))


def turn(graph: Any, text: str, device: str = "robot1") -> dict[str, Any]:
    return graph.invoke(turn_input(text, device_id=device), turn_config(device))


async def aturn(graph: Any, text: str, device: str = "robot1") -> dict[str, Any]:
    return await graph.ainvoke(turn_input(text, device_id=device), turn_config(device))


def pairs(messages: list[Any]) -> list[tuple[str, str]]:
    return [(m.type, m.text) for m in messages]


def stored_threads(url: str) -> set[str]:
    """The thread ids that have rows in the database itself (not in some other store)."""
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT thread_id FROM checkpoints")}


def test_postgres_memory_survives_a_restart(pg_url: str, tiny_model: str) -> None:
    with open_checkpointer(pg_url) as saver:
        graph = build_graph(tiny_chat(tiny_model), saver, clock=lambda: FIXED_NOW)
        first = turn(graph, "My name is Alex.")
        second = turn(graph, "Tell me about stars")
    assert first["response_source"] == second["response_source"] == "llm"
    assert second["metrics"]["history_messages"] == 2  # turn 1, read back from Postgres, was in turn 2's prompt
    assert stored_threads(pg_url) == {"robot1"}

    # "restart": a new connection, through the postgres:// spelling of the same URL
    alias = "postgres://" + pg_url.removeprefix("postgresql://")
    with open_checkpointer(alias) as saver:
        stored = conversation_messages(saver, "robot1")
        graph = build_graph(tiny_chat(tiny_model), saver, clock=lambda: FIXED_NOW)
        assert pairs(graph.get_state(turn_config("robot1")).values["messages"]) == pairs(stored)
        third = turn(graph, "And the moon?")
    assert pairs(stored) == [
        ("human", "My name is Alex."),
        ("ai", first["response_text"]),
        ("human", "Tell me about stars"),
        ("ai", second["response_text"]),
    ]
    assert third["response_source"] == "llm"
    assert third["metrics"]["history_messages"] == 4  # the conversation goes on where it was


def test_list_and_clear_conversations_on_postgres(pg_url: str) -> None:
    with open_checkpointer(pg_url) as saver:
        graph = build_graph(fake("Hi Alex!", "Stars are suns.", "Hello Bo!", "Hi again."), saver)
        turn(graph, "My name is Alex.", device="robot1")
        turn(graph, "Tell me about stars", device="robot1")
        turn(graph, "I am Bo.", device="robot2")
        summaries = list_conversations(saver)
        assert [(s.thread_id, s.turns) for s in summaries] == [("robot2", 1), ("robot1", 2)]  # latest first
        assert all(s.last_activity for s in summaries)

        assert clear_conversation(saver, "robot1") is True
        assert conversation_messages(saver, "robot1") == []
        assert clear_conversation(saver, "robot1") is False  # nothing left to forget
        assert [s.thread_id for s in list_conversations(saver)] == ["robot2"]
        fresh = turn(graph, "Who am I?", device="robot1")
        assert fresh["metrics"]["history_messages"] == 0  # a forgotten device starts afresh
    assert stored_threads(pg_url) == {"robot1", "robot2"}

    with open_checkpointer(pg_url) as saver:  # the other device was not touched, also after a restart
        assert pairs(conversation_messages(saver, "robot2")) == [("human", "I am Bo."), ("ai", "Hello Bo!")]
        assert pairs(conversation_messages(saver, "robot1")) == [("human", "Who am I?"), ("ai", "Hi again.")]


def _sync_listing(url: str) -> dict[str, int]:
    with open_checkpointer(url) as saver:
        return {s.thread_id: s.turns for s in list_conversations(saver)}


async def test_async_postgres_memory_survives_a_restart(pg_url: str, tiny_model: str) -> None:
    async with open_async_checkpointer(pg_url) as saver:
        graph = build_graph(tiny_chat(tiny_model), saver, clock=lambda: FIXED_NOW)
        first = await aturn(graph, "My name is Alex.")
        second = await aturn(graph, "Tell me about stars")
        # two devices at once, as the server runs them: one model (queued), one saver, separate memories
        a, b = await asyncio.gather(aturn(graph, "Hello from A", "robotA"), aturn(graph, "Hello from B", "robotB"))
    assert {first["response_source"], second["response_source"], a["response_source"], b["response_source"]} == {"llm"}
    assert second["metrics"]["history_messages"] == 2

    async with open_async_checkpointer(pg_url) as saver:
        graph = build_graph(None, saver)
        restored = (await graph.aget_state(turn_config("robot1"))).values["messages"]
        restored_a = (await graph.aget_state(turn_config("robotA"))).values["messages"]
        restored_b = (await graph.aget_state(turn_config("robotB"))).values["messages"]
    assert pairs(restored) == [
        ("human", "My name is Alex."),
        ("ai", first["response_text"]),
        ("human", "Tell me about stars"),
        ("ai", second["response_text"]),
    ]
    assert pairs(restored_a) == [("human", "Hello from A"), ("ai", a["response_text"])]
    assert pairs(restored_b) == [("human", "Hello from B"), ("ai", b["response_text"])]
    # what the server (async) wrote, `naila memory list` (sync) reads
    assert await asyncio.to_thread(_sync_listing, pg_url) == {"robot1": 2, "robotA": 1, "robotB": 1}


def _rows(url: str, table: str, thread: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE thread_id = %s", (thread,)).fetchone()
        assert row is not None
        return int(row[0])


def test_pruning_on_postgres_keeps_the_newest_checkpoint_and_its_blobs(pg_url: str) -> None:
    with open_checkpointer(pg_url) as saver:
        graph = build_graph(fake("Hi Alex!", "Stars are suns.", "Hello Bo!", "Moons orbit."), saver)
        turn(graph, "My name is Alex.", device="robot1")
        turn(graph, "I am Bo.", device="robot2")
        turn(graph, "Tell me about stars", device="robot1")
        turn(graph, "And moons?", device="robot1")
        expected = pairs(conversation_messages(saver, "robot1"))
        before = {t: _rows(pg_url, t, "robot1") for t in ("checkpoints", "checkpoint_blobs", "checkpoint_writes")}
        other = {t: _rows(pg_url, t, "robot2") for t in ("checkpoints", "checkpoint_blobs")}
        assert before["checkpoints"] > 3

        assert prune_thread(saver, "robot1") > 0
        assert _rows(pg_url, "checkpoints", "robot1") == 1
        assert _rows(pg_url, "checkpoint_writes", "robot1") == 0
        assert 0 < _rows(pg_url, "checkpoint_blobs", "robot1") < before["checkpoint_blobs"]
        assert {t: _rows(pg_url, t, "robot2") for t in other} == other  # the other device is untouched
        assert pairs(conversation_messages(saver, "robot1")) == expected
        turn(graph, "Who am I?", device="robot1")  # the conversation goes on from what was kept
        assert len(conversation_messages(saver, "robot1")) == len(expected) + 2


async def test_async_pruning_on_postgres(pg_url: str) -> None:
    async with open_async_checkpointer(pg_url) as saver:
        graph = build_graph(fake("Hi Alex!", "Stars are suns."), saver)
        await aturn(graph, "My name is Alex.")
        await aturn(graph, "Tell me about stars")
        state = await graph.aget_state(turn_config("robot1"))
        assert await aprune_thread(saver, "robot1") > 0
        assert _rows(pg_url, "checkpoints", "robot1") == 1
        assert pairs((await graph.aget_state(turn_config("robot1"))).values["messages"]) == pairs(
            state.values["messages"]
        )
