"""Long-term memory of the person on the real 0.5B instruct bundle: a fact told early is answered from the
facts block many turns later, by the model itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm import ChatLlamaCpp
from naila_graph.graph import build_graph, turn_config, turn_input
from naila_graph.memory import open_checkpointer
from naila_graph.settings import NailaSettings
from naila_graph.user_facts import open_store
from prompts.templates import FACTS_HEADER

pytestmark = pytest.mark.real_model

UNRELATED = [
    "Why is the sky blue?",
    "Tell me a short fun fact about octopuses.",
    "What is the capital of Japan?",
    "How many legs does a spider have?",
    "Can you suggest a name for a new houseplant?",
]
# Not only a question about the facts (that one is answered from them without the model: nodes/recall.py)
QUESTION = "What's my parrot called, and what do parrots like to eat?"


@pytest.fixture(scope="module")
def qwen(real_model: str) -> Iterator[ChatLlamaCpp]:
    model = ChatLlamaCpp(model_path=real_model, temperature=0.0, max_tokens=64, n_ctx=2048)
    model.load()
    yield model
    model.unload()


def test_a_pet_told_six_turns_ago_is_answered_by_the_model(qwen: ChatLlamaCpp, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'memory.sqlite'}"
    settings = NailaSettings(data_dir=tmp_path, max_turns=4)  # the telling turn is out of the history window
    with open_checkpointer(url) as saver, open_store(url) as store:
        graph = build_graph(qwen, saver, settings=settings, store=store)
        config = turn_config("desk-sam")
        first = graph.invoke(turn_input("My name is Sam and I have a parrot called Kiwi", device_id="desk-sam"), config)
        assert first["user_facts"] == ["The person's name is Sam.", "The person has a parrot called Kiwi."]
        for text in UNRELATED:
            graph.invoke(turn_input(text, device_id="desk-sam"), config)
        answer = graph.invoke(turn_input(QUESTION, device_id="desk-sam"), config)
        history = graph.get_state(config).values["messages"]
    assert answer["response_source"] == "llm", answer.get("fallback_reason")
    assert "Kiwi" in answer["response_text"], answer["response_text"]
    assert FACTS_HEADER not in answer["response_text"]
    # the model read it from the facts block: the turn that told it is no longer in the prompt's history
    before = history[:-2]  # this turn's question and answer come last
    shown = answer["metrics"]["history_messages"]
    assert shown < len(before)
    assert "Kiwi" not in " ".join(m.text for m in before[len(before) - shown :])
