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
from llm.disk_states import restore_from_disk, states_dir
from llm.state_cache import as_tokens
from naila_graph.brain import prime_prompt_cache
from prompts.persona import load_persona


@pytest.fixture(autouse=True)
def _own_states_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAILA_MODELS_DIR", str(tmp_path / "models"))


def _model(path: str) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=path, n_ctx=1024, temperature=0.0, max_tokens=8).load()


def _prime(model: ChatLlamaCpp, persona_file: Path | None = None) -> int:
    return asyncio.run(prime_prompt_cache(model, persona_file, None, should_stop=lambda: False))


def _answer(model: ChatLlamaCpp) -> str:
    reply = model.invoke([SystemMessage(load_persona(None)), HumanMessage("Tell me about the moon.")])
    return str(reply.content)


def test_a_restarted_model_gets_the_primed_persona_from_disk_and_answers_the_same(
    tiny_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = _model(tiny_model)
    try:
        evaluated = _prime(first)
        assert evaluated > 0
        assert len(list(states_dir().glob("*.npz"))) == 1
        expected = _answer(first)
    finally:
        first.unload()

    second = _model(tiny_model)  # a new process would see the same: a fresh context, the file on disk
    try:
        with caplog.at_level(logging.INFO, logger="naila.server"):
            assert _prime(second) == evaluated
        assert "primed the prompt cache from disk" in caplog.text
        assert _answer(second) == expected
        assert second.state_cache_stats.restored_tokens >= evaluated  # the answer started from that state
    finally:
        second.unload()


def test_restoring_twice_keeps_one_state(tiny_model: str) -> None:
    model = _model(tiny_model)
    try:
        _prime(model)
        chats = to_chat_dicts([SystemMessage(load_persona(None))])
        before = model.state_cache_stats.entries
        assert restore_from_disk(model._session, chats, "user") > 0
        assert model.state_cache_stats.entries == before
    finally:
        model.unload()


def test_a_damaged_state_file_is_ignored_and_the_persona_evaluated(
    tiny_model: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = _model(tiny_model)
    try:
        evaluated = _prime(first)
    finally:
        first.unload()
    (saved,) = states_dir().glob("*.npz")
    saved.write_bytes(b"not a state")

    second = _model(tiny_model)
    try:
        with caplog.at_level(logging.INFO):
            assert _prime(second) == evaluated  # evaluated again, not restored
        assert "ignoring the saved persona state" in caplog.text
        assert "from disk" not in caplog.text
        target = second._session._prefill_target(to_chat_dicts([SystemMessage(load_persona(None))]), "user")
        assert second._session.states is not None and second._session.states.exact(as_tokens(target)) is not None
    finally:
        second.unload()


def test_another_persona_has_a_file_of_its_own(tiny_model: str, tmp_path: Path) -> None:
    other = tmp_path / "persona.txt"
    other.write_text("You are a terse lighthouse keeper. Answer in one short sentence.")
    model = _model(tiny_model)
    try:
        _prime(model)
        model.clear_prompt_cache()
        assert _prime(model, other) > 0  # not the default persona's state
    finally:
        model.unload()
    assert len(list(states_dir().glob("*.npz"))) == 2
