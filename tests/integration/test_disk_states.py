"""The primed persona's prompt state on disk (llm.disk_states): a restarted server starts with it, the
answers are the same as with the persona evaluated, and a file that does not fit is ignored."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from llm import ChatLlamaCpp
from llm.chat_template import to_chat_dicts
from llm.state_cache import as_tokens
from naila_graph.brain import prime_prompt_cache
from prompts.persona import load_persona


@pytest.fixture
def states(tmp_path: Path) -> Path:
    """The folder the states are kept in (the server's is $NAILA_DATA_DIR/prompt-states)."""
    return tmp_path / "prompt-states"


def _model(path: str) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=path, n_ctx=1024, temperature=0.0, max_tokens=8).load()


def _prime(model: ChatLlamaCpp, states: Path, persona_file: Path | None = None) -> int:
    return asyncio.run(prime_prompt_cache(model, persona_file, None, should_stop=lambda: False, state_dir=states))


def _answer(model: ChatLlamaCpp) -> str:
    reply = model.invoke([SystemMessage(load_persona(None)), HumanMessage("Tell me about the moon.")])
    return str(reply.content)


def test_a_restarted_model_gets_the_primed_persona_from_disk_and_answers_the_same(
    tiny_model: str, states: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _model(tiny_model)
    try:
        evaluated = _prime(first, states)
        assert evaluated > 0
        assert len(list(states.glob("*.npz"))) == 1
        expected = _answer(first)
    finally:
        first.unload()

    second = _model(tiny_model)  # a new process would see the same: a fresh context, the file on disk
    try:
        with caplog.at_level(logging.INFO, logger="naila.server"):
            assert _prime(second, states) == evaluated
        assert "primed the prompt cache from disk" in caplog.text
        assert _answer(second) == expected
        assert second.state_cache_stats.restored_tokens >= evaluated  # the answer started from that state
    finally:
        second.unload()


def test_restoring_twice_keeps_one_state(tiny_model: str, states: Path) -> None:
    model = _model(tiny_model)
    try:
        _prime(model, states)
        before = model.state_cache_stats.entries
        assert model.restore_prefix_from_disk([SystemMessage(load_persona(None))], states) > 0
        assert model.state_cache_stats.entries == before
    finally:
        model.unload()


def test_a_damaged_state_file_is_ignored_and_the_persona_evaluated(
    tiny_model: str, states: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _model(tiny_model)
    try:
        evaluated = _prime(first, states)
    finally:
        first.unload()
    (saved,) = states.glob("*.npz")
    saved.write_bytes(b"not a state")

    second = _model(tiny_model)
    try:
        with caplog.at_level(logging.INFO):
            assert _prime(second, states) == evaluated  # evaluated again, not restored
        assert "ignoring the saved persona state" in caplog.text
        assert "from disk" not in caplog.text
        target = second._session._prefill_target(to_chat_dicts([SystemMessage(load_persona(None))]), "user")
        assert second._session.states is not None and second._session.states.exact(as_tokens(target)) is not None
    finally:
        second.unload()


def test_another_persona_has_a_file_of_its_own(tiny_model: str, states: Path, tmp_path: Path) -> None:
    other = tmp_path / "persona.txt"
    other.write_text("You are a terse lighthouse keeper. Answer in one short sentence.")
    model = _model(tiny_model)
    try:
        _prime(model, states)
        model.clear_prompt_cache()
        assert _prime(model, states, other) > 0  # not the default persona's state
    finally:
        model.unload()
    assert len(list(states.glob("*.npz"))) == 2
