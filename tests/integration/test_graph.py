"""The orchestrator graph: routing, fallbacks for real, memory, prompt-prefix stability."""

from __future__ import annotations

import itertools
import logging
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langgraph.checkpoint.sqlite import SqliteSaver

from llm import ChatLlamaCpp
from llm.errors import (
    ContextOverflowError,
    EmptyGenerationError,
    GenerationCancelledError,
    GenerationTimeoutError,
    LLMError,
    ModelLoadError,
    ModelNotFoundError,
    QueueTimeoutError,
)
from naila_graph.graph import build_graph, turn_config, turn_input
from naila_graph.settings import NailaSettings
from nodes.failures import failure_reason

FIXED_NOW = datetime(2026, 11, 25, 15, 42)


def fake(*answers: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(a) for a in answers]))


@pytest.fixture
def saver(tmp_path: Path) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(tmp_path / "memory.sqlite", check_same_thread=False)
    yield SqliteSaver(conn)
    conn.close()


def turn(graph: Any, text: str, device: str = "robot1", **kw: Any) -> dict[str, Any]:
    return graph.invoke(turn_input(text, device_id=device, **kw), turn_config(device))


def test_question_is_answered_by_the_model(saver: SqliteSaver) -> None:
    graph = build_graph(fake("Paris is the capital of France."), saver, clock=lambda: FIXED_NOW)
    out = turn(graph, "What is the capital of France?")
    assert out["response_source"] == "llm"
    assert out["response_text"] == "Paris is the capital of France."
    assert out["intent"] == "question"
    assert out["fallback_reason"] is None


def test_time_query_is_answered_from_the_clock_not_the_model(saver: SqliteSaver) -> None:
    graph = build_graph(fake("I think it is noon."), saver, clock=lambda: FIXED_NOW)
    out = turn(graph, "what time is it?")
    assert out["response_source"] == "action"
    assert "3:42" in out["response_text"]


def test_weather_is_answered_honestly_by_an_action(saver: SqliteSaver) -> None:
    out = turn(build_graph(fake("Sunny!"), saver), "what's the weather like tomorrow?")
    assert out["response_source"] == "action"
    assert "weather" in out["response_text"].lower()
    assert "Sunny" not in out["response_text"]


def test_sometimes_is_not_a_time_query(saver: SqliteSaver) -> None:
    out = turn(build_graph(fake("Me too."), saver), "sometimes I sing")
    assert out["intent"] != "time_query"
    assert out["response_source"] == "llm"


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_input_gets_a_repeat_request_and_is_not_stored(saver: SqliteSaver, text: str) -> None:
    out = turn(build_graph(fake("x"), saver), text)
    assert out["response_source"] == "pattern"
    assert out["fallback_reason"] == "empty_input"
    assert out["messages"] == []


def test_low_stt_confidence_asks_to_repeat_without_numbers(saver: SqliteSaver) -> None:
    out = turn(build_graph(fake("x"), saver), "blorp", input_type="stt", confidence=0.2)
    assert out["fallback_reason"] == "low_confidence"
    assert out["expects_reply"] is True
    assert not any(ch.isdigit() for ch in out["response_text"])


def test_degraded_mode_answers_with_the_pattern_responder(saver: SqliteSaver) -> None:
    graph = build_graph(None, saver, degraded_reason="model_load_failed")
    out = turn(graph, "Tell me about stars")
    assert out["response_source"] == "pattern"
    assert out["fallback_reason"] == "model_load_failed"
    assert out["response_text"]


def test_missing_model_file_falls_back(saver: SqliteSaver, tmp_path: Path) -> None:
    graph = build_graph(ChatLlamaCpp(model_path=str(tmp_path / "missing.gguf")), saver)
    out = turn(graph, "Tell me about stars")
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "model_not_found")


def test_corrupt_model_falls_back(saver: SqliteSaver, tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 100)
    out = turn(build_graph(ChatLlamaCpp(model_path=str(bad)), saver), "Tell me about stars")
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "model_load_failed")


def test_deadline_falls_back(saver: SqliteSaver, tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=4096, max_tokens=3000, temperature=0, timeout=0.01)
    out = turn(build_graph(model, saver), "Tell me about stars")
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "model_timeout")


def test_empty_model_output_falls_back(saver: SqliteSaver, tiny_model_eot: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model_eot, n_ctx=1024, temperature=0)
    out = turn(build_graph(model, saver), "Tell me about stars")
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "empty_output")


def test_leaked_control_markup_falls_back(saver: SqliteSaver) -> None:
    out = turn(build_graph(fake("Sure!<|eot_id|><|start_header_id|>user"), saver), "Tell me about stars")
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "empty_output")


def _raising(error: BaseException) -> GenericFakeChatModel:
    class Broken(GenericFakeChatModel):
        def _generate(self, *a: Any, **k: Any) -> Any:
            raise error

    return Broken(messages=iter([]))


def test_a_model_error_falls_back_with_its_reason(saver: SqliteSaver) -> None:
    out = turn(build_graph(_raising(LLMError("GPU on fire")), saver), "Tell me about stars")
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "model_error")


def test_a_specific_model_error_keeps_its_own_reason(saver: SqliteSaver) -> None:
    out = turn(build_graph(_raising(QueueTimeoutError("waited 30 s")), saver), "Tell me about stars")
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "queue_timeout")


def test_a_bug_still_gets_an_answer_but_is_logged_with_its_traceback(
    saver: SqliteSaver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="nodes.generate_response")
    out = turn(build_graph(_raising(ZeroDivisionError("division by zero")), saver), "Tell me about stars")
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "internal_error")
    assert out["response_text"]  # the robot answers all the same
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError
    assert "Traceback" in caplog.text and "_generate" in caplog.text  # where the bug is, not just its name


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ModelNotFoundError("x"), "model_not_found"),
        (ModelLoadError("x"), "model_load_failed"),
        (GenerationTimeoutError("x"), "model_timeout"),
        (QueueTimeoutError("x"), "queue_timeout"),
        (EmptyGenerationError("x"), "empty_output"),
        (ContextOverflowError("x"), "context_overflow"),
        (GenerationCancelledError("x"), "model_error"),
        (LLMError("x"), "model_error"),
        (KeyError("x"), "internal_error"),
        (RuntimeError("x"), "internal_error"),
    ],
)
def test_every_failure_has_one_stable_reason(error: BaseException, reason: str) -> None:
    assert failure_reason(error) == reason


def test_the_tiny_gguf_answers_through_the_real_llama_path(saver: SqliteSaver, tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=32, temperature=0)
    out = turn(build_graph(model, saver), "Tell me about stars")
    assert out["response_source"] == "llm"
    assert out["metrics"]["output_tokens"] == 32


def test_markdown_is_cleaned_for_speech(saver: SqliteSaver) -> None:
    out = turn(build_graph(fake("## Tips\n- **Drink** water\n- Sleep well"), saver), "any health tips?")
    assert "#" not in out["response_text"] and "*" not in out["response_text"]
    assert "Drink water" in out["response_text"]


def test_every_turn_is_stored_with_strict_alternation(saver: SqliteSaver) -> None:
    graph = build_graph(fake("Nice to meet you!", "Sure."), saver, clock=lambda: FIXED_NOW)
    turn(graph, "Hello, I'm Alex")
    turn(graph, "what time is it")  # action answer: stored too
    turn(graph, "Tell me about stars")  # model answer
    messages = graph.get_state(turn_config("robot1")).values["messages"]
    kinds = [m.type for m in messages]
    assert kinds == ["human", "ai"] * 3
    assert "3:42" in messages[3].text


def test_history_reaches_the_model_on_the_next_turn(saver: SqliteSaver) -> None:
    model = fake("Nice to meet you, Alex!", "Your name is Alex.")
    graph = build_graph(model, saver)
    turn(graph, "My name is Alex.")
    turn(graph, "What's my name?")
    # the fake model records nothing, so inspect the stored thread the prompt is built from
    stored = graph.get_state(turn_config("robot1")).values["messages"]
    assert stored[0].text == "My name is Alex." and stored[1].text == "Nice to meet you, Alex!"


def test_devices_never_see_each_others_memory(saver: SqliteSaver) -> None:
    graph = build_graph(fake(*[f"answer {i}" for i in range(6)]), saver)
    for i, device in zip(range(6), itertools.cycle(["a", "b", "c"]), strict=False):
        turn(graph, f"Tell me about topic {device}{i}", device=device)
    for device in "abc":
        texts = [m.text for m in graph.get_state(turn_config(device)).values["messages"] if m.type == "human"]
        assert texts and all(f"topic {device}" in t for t in texts)


def test_memory_survives_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite"
    conn = sqlite3.connect(db, check_same_thread=False)
    turn(build_graph(fake("Hi Alex!"), SqliteSaver(conn)), "My name is Alex.")
    conn.close()
    conn2 = sqlite3.connect(db, check_same_thread=False)
    graph = build_graph(fake("x"), SqliteSaver(conn2))
    stored = graph.get_state(turn_config("robot1")).values["messages"]
    conn2.close()
    assert [m.text for m in stored] == ["My name is Alex.", "Hi Alex!"]


def _prompt(model: ChatLlamaCpp, graph: Any, device: str) -> tuple[list[int], list[int], list[Any]]:
    """(full prompt ids, ids of persona + history alone, the history) for the next turn."""
    from langchain_core.messages import SystemMessage

    from llm.chat_template import to_chat_dicts
    from nodes.generate_response import ResponseGenerator

    gen = ResponseGenerator(model, persona="You are NAILA.", clock=lambda: FIXED_NOW, max_turns=10)
    state = graph.get_state(turn_config(device)).values
    inputs = gen.inputs({**state, "text": "next question please", "intent": "question"})
    full = model.prompt_tokens(gen._prompt.format_messages(**{k: inputs[k] for k in ("history", "guidance", "input")}))
    assert model._template is not None
    base = model._template.tokenize(
        to_chat_dicts([SystemMessage("You are NAILA."), *inputs["history"]]),
        model._tokenize,
        add_generation_prompt=False,
    )
    return full, base, inputs["history"]


def test_consecutive_prompts_share_the_persona_and_history_prefix(saver: SqliteSaver, tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=4096, max_tokens=16, temperature=0)
    settings = NailaSettings(max_turns=10)
    graph = build_graph(model, saver, settings=settings, persona="You are NAILA.", clock=lambda: FIXED_NOW)
    block_drops = kept_prefix = 0
    previous: tuple[list[int], list[int], list[Any]] | None = None
    for i in range(16):
        turn(graph, f"Tell me fact number {i}")
        current = _prompt(model, graph, "robot1")
        if previous is not None:
            _, prev_base, prev_history = previous
            if prev_history and current[2][0] != prev_history[0]:
                block_drops += 1  # trimming kicked in: a whole block of old turns left at once
            else:
                assert current[0][: len(prev_base)] == prev_base  # persona + history is a stable prefix
                kept_prefix += 1
        previous = current
    assert len(previous[2]) // 2 <= 10  # the turn cap holds
    assert block_drops >= 1  # trimming did happen in 12 turns...
    assert kept_prefix >= 2 * block_drops  # ...in blocks, not one turn per turn


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_chatml_model", "real_model"])
def test_history_token_counts_are_never_below_the_real_prompt(request: pytest.FixtureRequest, fixture: str) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    from naila_graph.graph import make_generator

    model = ChatLlamaCpp(model_path=request.getfixturevalue(fixture), n_ctx=2048)
    generator = make_generator(model, NailaSettings())
    history: list[Any] = []
    for i in range(6):
        history += [HumanMessage(f"Question {i}: why is the sky blue? ünïcödé 🌈"), AIMessage(f"Answer {i}. Light!")]
    # prompts always start with the persona (a template may add its own default system turn otherwise)
    for messages in (
        [SystemMessage("persona text")],
        [SystemMessage("persona text"), *history[:4], HumanMessage("now?")],
        [SystemMessage("persona text"), *history, SystemMessage("guidance"), HumanMessage("now?")],
    ):
        real = len(model.prompt_tokens(messages))
        counted = generator._count(messages)
        counted_again = generator._count(messages)  # from the remembered per-message counts
        assert counted == counted_again
        assert real <= counted <= real + 40, (fixture, real, counted)  # at most the template's empty system turn
    frame = generator._count([])
    assert generator._count(history) == generator._count(history[:5]) + generator._count(history[5:]) - frame
    model.unload()


def test_memory_keeps_the_newest_turns_in_strict_pairs(saver: SqliteSaver) -> None:
    settings = NailaSettings(max_turns=2, memory_max_turns=3)
    graph = build_graph(fake(*[f"answer {i}" for i in range(5)]), saver, settings=settings)
    for i in range(5):
        turn(graph, f"question {i}")
    stored = graph.get_state(turn_config("robot1")).values["messages"]
    assert [(m.type, m.text) for m in stored] == [
        ("human", "question 2"),
        ("ai", "answer 2"),
        ("human", "question 3"),
        ("ai", "answer 3"),
        ("human", "question 4"),
        ("ai", "answer 4"),
    ]


def test_memory_bound_below_the_prompt_window_is_refused() -> None:
    with pytest.raises(ValueError, match="NAILA_MEMORY_MAX_TURNS \\(5\\) must be at least NAILA_MAX_TURNS \\(20\\)"):
        NailaSettings(memory_max_turns=5)


def _rows(db: Path, table: str, thread: str) -> int:
    with sqlite3.connect(db) as conn:
        count: int = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE thread_id = ?", (thread,)).fetchone()[0]
        return count


def test_pruning_keeps_only_the_newest_checkpoint_of_a_thread(tmp_path: Path) -> None:
    from naila_graph.memory import open_checkpointer, prune_thread

    db = tmp_path / "m.sqlite"
    with open_checkpointer(f"sqlite:///{db}") as saver:
        graph = build_graph(fake(*[f"answer {i}" for i in range(6)]), saver)
        for i, device in enumerate(["a", "b", "a", "b", "a", "b"]):
            turn(graph, f"question {i} from {device}", device=device)  # default durability: a checkpoint per step
        before_a, before_b = _rows(db, "checkpoints", "a"), _rows(db, "checkpoints", "b")
        assert before_a > 3 and before_b > 3 and _rows(db, "writes", "a") > 0
        expected = graph.get_state(turn_config("a")).values["messages"]

        assert prune_thread(saver, "a") > 0
        assert _rows(db, "checkpoints", "a") == 1 and _rows(db, "writes", "a") == 0
        assert _rows(db, "checkpoints", "b") == before_b  # the other thread is untouched
        assert graph.get_state(turn_config("a")).values["messages"] == expected
        assert prune_thread(saver, "a") == 0  # nothing left to drop

        turn(graph, "and one more", device="a")  # the conversation goes on from the kept checkpoint
        texts = [m.text for m in graph.get_state(turn_config("a")).values["messages"] if m.type == "human"]
        assert texts == ["question 0 from a", "question 2 from a", "question 4 from a", "and one more"]


async def test_async_pruning_bounds_the_database_of_a_long_conversation(tmp_path: Path) -> None:
    """The server's path: durability="exit" + aprune_thread after each turn. The database stops growing
    with the conversation's age once the stored turns reach NAILA_MEMORY_MAX_TURNS."""
    from naila_graph.memory import aprune_thread, open_async_checkpointer

    db = tmp_path / "m.sqlite"
    settings = NailaSettings(max_turns=2, memory_max_turns=4)
    answers = itertools.cycle([AIMessage("A fairly ordinary answer of a few words. " * 4)])
    sizes: list[int] = []
    async with open_async_checkpointer(f"sqlite:///{db}") as saver:
        graph = build_graph(GenericFakeChatModel(messages=answers), saver, settings=settings)
        for i in range(60):
            await graph.ainvoke(turn_input(f"question {i}", device_id="d"), turn_config("d"), durability="exit")
            await aprune_thread(saver, "d")
            if i % 20 == 19:
                with sqlite3.connect(db) as reader:  # WAL: a second connection reads what was committed
                    sizes.append(reader.execute("SELECT SUM(LENGTH(checkpoint)) FROM checkpoints").fetchone()[0])
        state = await graph.aget_state(turn_config("d"))
    assert _rows(db, "checkpoints", "d") == 1
    assert [m.text for m in state.values["messages"] if m.type == "human"] == [f"question {i}" for i in range(56, 60)]
    assert max(sizes) - min(sizes) < 200, sizes  # the one checkpoint left holds 4 turns, whatever the age
