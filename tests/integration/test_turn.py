"""The turn layer (naila_graph/turn.py): the events every front end consumes, on real graphs with real
SQLite memory. Fake chat models stand in for the LLM where a test needs a scripted answer or failure."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from naila_graph.graph import build_graph
from naila_graph.memory import conversation_messages, open_async_checkpointer, open_checkpointer
from naila_graph.turn import (
    Cancelled,
    Failed,
    Final,
    Metrics,
    Sentence,
    Token,
    TurnEvent,
    TurnRequest,
    TurnRunner,
    consume,
)

ANSWER = "Hello there! It is nice to talk with you. What shall we do today?"


class _BreaksMidway(BaseChatModel):
    """Streams two sentences, then fails: the fallback must replace what was streamed."""

    @property
    def _llm_type(self) -> str:
        return "breaks-midway"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("unused"))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for piece in ["The sky ", "is blue. ", "The grass ", "is green. "]:
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
        raise RuntimeError("the model broke after streaming")


def _fake() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=itertools.cycle([AIMessage(ANSWER)]))


def _request(text: str = "Tell me something", device: str = "robot_t", **kw: Any) -> TurnRequest:
    return TurnRequest(text=text, device_id=device, thread_id=device, task_id=kw.pop("task_id", "t-1"), **kw)


async def _events(model: BaseChatModel, tmp_path: Path, request: TurnRequest) -> list[TurnEvent]:
    async with open_async_checkpointer(f"sqlite:///{tmp_path / 'memory.sqlite'}") as saver:
        runner = TurnRunner(build_graph(model, saver), saver=saver)
        events: list[TurnEvent] = []

        async def keep(event: TurnEvent) -> None:
            events.append(event)

        await consume(runner.start(request), keep)
        await runner.aclose()
    return events


async def test_a_model_answer_streams_sentences_then_one_final_then_metrics(tmp_path: Path) -> None:
    events = await _events(_fake(), tmp_path, _request())
    kinds = [type(e).__name__ for e in events if not isinstance(e, Token)]
    assert kinds == ["Sentence", "Sentence", "Final", "Metrics"]
    sentences = [e.text for e in events if isinstance(e, Sentence)]
    final = next(e for e in events if isinstance(e, Final))
    assert sentences == ["Hello there!", "It is nice to talk with you."]
    assert final.tail == "What shall we do today?" and not final.replaced
    assert " ".join([*sentences, final.tail]) == final.text == ANSWER
    assert final.state["response_source"] == "llm"
    assert "".join(e.text for e in events if isinstance(e, Token)) == ANSWER
    metrics = events[-1]
    assert isinstance(metrics, Metrics) and metrics.state["response_text"] == ANSWER
    timeline = metrics.timeline_ms
    assert timeline["first_token"] <= timeline["first_sentence_sent"] <= timeline["answer_published"]
    assert timeline["graph_done"] <= timeline["answer_published"]  # not early: the fake gives no finish_reason


async def test_a_failure_after_streaming_replaces_what_was_said(tmp_path: Path) -> None:
    events = await _events(_BreaksMidway(), tmp_path, _request())
    said = [e.text for e in events if isinstance(e, Sentence)]
    final = next(e for e in events if isinstance(e, Final))
    assert said == ["The sky is blue."]
    assert final.replaced and not final.early
    assert final.state["response_source"] == "pattern" and final.state["fallback_reason"] == "internal_error"
    assert final.tail == final.text and final.text not in ("", "The sky is blue.")


async def test_an_action_answer_is_streamed_sentence_by_sentence_at_the_end(tmp_path: Path) -> None:
    events = await _events(_fake(), tmp_path, _request("what time is it"))
    final = next(e for e in events if isinstance(e, Final))
    assert final.state["response_source"] == "action"
    assert not any(isinstance(e, Token) for e in events)
    streamed = [e.text for e in events if isinstance(e, Sentence)]
    assert " ".join([*streamed, final.tail]) == final.text and not final.replaced


async def test_cancelling_the_consumer_ends_the_turn_with_one_cancelled_event(tmp_path: Path) -> None:
    started = asyncio.Event()
    events: list[TurnEvent] = []

    async def slow(event: TurnEvent) -> None:
        events.append(event)
        if isinstance(event, Sentence):
            started.set()
            await asyncio.sleep(30)  # the robot is slow to take the sentence: a barge-in arrives meanwhile

    async with open_async_checkpointer(f"sqlite:///{tmp_path / 'memory.sqlite'}") as saver:
        runner = TurnRunner(build_graph(_fake(), saver), saver=saver)
        task = asyncio.create_task(consume(runner.start(_request()), slow))
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        await asyncio.wait_for(task, 10)  # consume swallows the cancellation: the caller goes on
        await runner.aclose()
    cancelled = [e for e in events if isinstance(e, Cancelled)]
    assert len(cancelled) == 1 and events[-1] is cancelled[0]
    assert not any(isinstance(e, Final) for e in events)
    assert cancelled[0].state["finish_reason"] == "cancelled" and not cancelled[0].answered
    with open_checkpointer(f"sqlite:///{tmp_path / 'memory.sqlite'}") as saver:
        assert conversation_messages(saver, "robot_t") == []  # a cancelled turn is not stored


def test_the_sync_path_gives_the_same_answer_and_stores_the_turn(tmp_path: Path) -> None:
    with open_checkpointer(f"sqlite:///{tmp_path / 'memory.sqlite'}") as saver:
        runner = TurnRunner(build_graph(_fake(), saver), saver=saver)
        events = runner.run_sync(_request())
        stored = conversation_messages(saver, "robot_t")
    final = next(e for e in events if isinstance(e, Final))
    assert final.text == ANSWER and isinstance(events[-1], Metrics)
    assert [m.type for m in stored] == ["human", "ai"] and stored[1].text == ANSWER


def test_a_graph_that_raises_gives_one_failed_event(tmp_path: Path) -> None:
    class Broken:
        def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            yield ("values", {"response_text": ""})
            raise ValueError("checkpointer exploded")

    events = TurnRunner(Broken()).run_sync(_request())
    assert len(events) == 1 and isinstance(events[0], Failed)
    assert isinstance(events[0].error, ValueError) and not events[0].answered


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_input_is_answered_by_a_final_pattern_reply(tmp_path: Path, text: str) -> None:
    with open_checkpointer(f"sqlite:///{tmp_path / 'memory.sqlite'}") as saver:
        events = TurnRunner(build_graph(_fake(), saver), saver=saver).run_sync(_request(text))
    final = next(e for e in events if isinstance(e, Final))
    assert final.state["response_source"] == "pattern" and final.state["fallback_reason"] == "empty_input"
    assert final.text


async def test_streamed_turns_keep_at_most_two_prompt_states_per_conversation(tmp_path: Path, tiny_model: str) -> None:
    # Streaming graph runs call the model without a run manager: the thread id must still reach the
    # state cache, or every turn's state is kept until the whole budget is full.
    from llm import ChatLlamaCpp
    from llm.state_cache import PER_CONVERSATION

    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=16, temperature=0.0, seed=1)
    devices = [f"robot_{i}" for i in range(4)]

    async def ignore(event: TurnEvent) -> None:
        return None

    async with open_async_checkpointer(f"sqlite:///{tmp_path / 'memory.sqlite'}") as saver:
        runner = TurnRunner(build_graph(model, saver), saver=saver)
        for i in range(24):
            device = devices[i % len(devices)]
            request = _request(f"turn {i}: tell me something", device, task_id=f"task-{i}")
            await consume(runner.start(request), ignore)
        await runner.aclose()
    stats = model.state_cache_stats
    model.unload()
    assert 0 < stats.entries <= PER_CONVERSATION * len(devices), stats
