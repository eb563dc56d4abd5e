"""Text a memory backend cannot store (issue #12, defect 1): NUL and lone surrogates, from the robot or from the
model, are made storable the same way for SQLite and PostgreSQL, so the turn is answered and stored.

Turns run as the server runs them: the turn layer over the async checkpointer (``durability="exit"``).
PostgreSQL is ``NAILA_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``, trust auth),
a database created for each test and dropped afterwards; when it cannot be reached those tests skip.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from naila_graph.graph import build_graph
from naila_graph.memory import conversation_messages, open_async_checkpointer, open_checkpointer
from naila_graph.turn import Failed, Final, Sentence, TurnEvent, TurnRequest, TurnRunner, consume
from tests.support.postgres import fresh_database

MODEL_ANSWER = "Hello\x00 there. Nice to\x00 meet you\ud800!"
CONFIDENCE_FLOOR = 0.5  # NailaSettings' default: 0.1 takes the low-confidence path, 0.9 the model's


@pytest.fixture(params=["sqlite", "postgres"])
def memory_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty memory: a SQLite file, or a PostgreSQL database of its own (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'memory.sqlite'}"
        return
    with fresh_database() as url:
        yield url


async def _turn(url: str, text: str, confidence: float) -> list[TurnEvent]:
    model = GenericFakeChatModel(messages=itertools.cycle([AIMessage(MODEL_ANSWER)]))
    request = TurnRequest(
        text=text, device_id="robot_nul", thread_id="robot_nul", task_id="t-1", input_type="stt", confidence=confidence
    )
    events: list[TurnEvent] = []

    async def keep(event: TurnEvent) -> None:
        events.append(event)

    async with open_async_checkpointer(url) as saver:
        runner = TurnRunner(build_graph(model, saver), saver=saver)
        await consume(runner.start(request), keep)
        await runner.aclose()
    return events


def _storable(text: str) -> bool:
    return "\x00" not in text and not any("\ud800" <= ch <= "\udfff" for ch in text)


@pytest.mark.parametrize("confidence", [0.1, 0.9], ids=["low_confidence", "confident"])
@pytest.mark.parametrize("heard", ["hi\u0000there", "hi\u0000there \udcff"], ids=["nul", "nul_and_surrogate"])
async def test_a_turn_with_unstorable_characters_is_answered_and_stored(
    memory_url: str, heard: str, confidence: float
) -> None:
    events = await _turn(memory_url, heard, confidence)

    assert not [e for e in events if isinstance(e, Failed)], events
    final = next(e for e in events if isinstance(e, Final))
    spoken = [e.text for e in events if isinstance(e, Sentence)] + [final.text]
    assert final.text and all(_storable(t) for t in spoken), spoken
    expected_source = "pattern" if confidence < CONFIDENCE_FLOOR else "llm"
    assert final.state["response_source"] == expected_source
    if expected_source == "llm":
        assert final.text == "Hello there. Nice to meet you\ufffd!"

    with open_checkpointer(memory_url) as saver:  # read back by a new connection, as after a restart
        stored = conversation_messages(saver, "robot_nul")
    assert [m.type for m in stored] == ["human", "ai"]
    assert stored[0].text.startswith("hithere") and stored[1].text == final.text
    assert all(_storable(m.text) for m in stored)


def test_a_direct_graph_run_that_checkpoints_every_step_stores_the_input_too(memory_url: str) -> None:
    # LangGraph Studio and plain `graph.invoke` checkpoint the input before process_input cleans it.
    from naila_graph.graph import turn_config, turn_input

    model = GenericFakeChatModel(messages=itertools.cycle([AIMessage("Hello there.")]))
    with open_checkpointer(memory_url) as saver:
        result = build_graph(model, saver).invoke(
            turn_input("hi\u0000there", device_id="robot_d"), turn_config("robot_d")
        )
        stored = conversation_messages(saver, "robot_d")
    assert result["response_source"] == "llm" and _storable(result["raw_text"])
    assert [m.type for m in stored] == ["human", "ai"] and stored[0].text == "hithere"
