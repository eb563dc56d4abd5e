"""What `naila memory list | show | clear` see agrees (issue #12 defect 9): a thread whose checkpoint holds
no message (an empty input answered by the pattern responder stores one) is no conversation to any of them."""

from __future__ import annotations

from pathlib import Path

from naila_graph.graph import build_graph, turn_config, turn_input
from naila_graph.memory import clear_conversation, conversation_messages, list_conversations, open_checkpointer
from tests.integration.test_memory_postgres import fake


def test_a_thread_without_messages_is_neither_listed_nor_shown_nor_cleared(tmp_path: Path) -> None:
    with open_checkpointer(f"sqlite:///{tmp_path / 'memory.sqlite'}") as saver:
        graph = build_graph(fake("Hi Alex!"), saver)
        empty = graph.invoke(turn_input("   ", device_id="blank"), turn_config("blank"))
        assert empty["fallback_reason"] == "empty_input"
        assert saver.get_tuple(turn_config("blank")) is not None  # the checkpoint that listed it with 0 turns
        graph.invoke(turn_input("My name is Alex.", device_id="talker"), turn_config("talker"))

        assert [(s.thread_id, s.turns) for s in list_conversations(saver)] == [("talker", 1)]
        assert conversation_messages(saver, "blank") == []
        assert clear_conversation(saver, "blank") is False  # nothing the list showed was forgotten
        assert saver.get_tuple(turn_config("blank")) is None  # yet its rows are gone
        assert clear_conversation(saver, "talker") is True
