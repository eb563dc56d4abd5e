"""The text side of the token loop (llm.generation), without a model: stops, end of turn, budget, timing."""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator, Iterable
from typing import Any

import pytest

from llm.errors import GenerationCancelledError, GenerationTimeoutError
from llm.generation import (
    Done,
    GenerationParams,
    StreamDecoder,
    run_in_own_thread,
    stage_check,
    start_in_thread,
    stream_answer,
)

END = 0  # the end-of-turn token of these tests; every other token is the byte of its id


def sampled(ids: Iterable[int]) -> Generator[int, Any, None]:
    yield from ids


def run(ids: Iterable[int], *, stops: list[str] | None = None, budget: int = 100, **kw: Any) -> list[str | Done]:
    return list(
        stream_answer(
            sampled(ids),
            is_end=lambda t: t == END,
            piece=lambda t: bytes([t]),
            stops=stops or [],
            budget=budget,
            check=kw.pop("check", lambda stage: None),
            started=0.0,
            prompt_tokens=7,
            cached_tokens=3,
        )
    )


def text(events: list[str | Done]) -> str:
    return "".join(e for e in events if isinstance(e, str))


def done(events: list[str | Done]) -> Done:
    assert isinstance(events[-1], Done) and sum(isinstance(e, Done) for e in events) == 1
    return events[-1]


def test_end_of_turn_ends_the_answer_and_never_shows() -> None:
    events = run(b"Hi!" + bytes([END]) + b"more")
    assert text(events) == "Hi!"
    report = done(events)
    assert (report.finish_reason, report.output_tokens, report.input_tokens, report.cached_tokens) == ("stop", 3, 7, 3)


def test_the_budget_ends_the_answer_with_length() -> None:
    events = run(b"abcdefgh", budget=5)
    assert text(events) == "abcde"
    assert done(events).finish_reason == "length" and done(events).output_tokens == 5


def test_a_stop_sequence_split_across_tokens_is_cut_and_never_shown() -> None:
    events = run(b"one. STOP two", stops=["STOP"])
    assert text(events) == "one. "
    assert all("S" not in e for e in events if isinstance(e, str))  # held back, never streamed
    assert done(events).finish_reason == "stop"


def test_a_stop_sequence_at_the_budget_is_still_cut() -> None:
    events = run(b"abXY", stops=["XY"], budget=4)
    assert text(events) == "ab" and done(events).finish_reason == "stop"


def test_text_that_only_starts_like_a_stop_sequence_is_shown() -> None:
    assert text(run(b"a ST b", stops=["STOP"], budget=6)) == "a ST b"


def test_a_character_split_across_tokens_comes_out_whole() -> None:
    pieces = [e for e in run("é!".encode()) if isinstance(e, str)]
    assert pieces == ["é", "!"]


def test_a_failing_check_stops_the_loop_and_closes_the_token_source() -> None:
    closed = threading.Event()

    def source() -> Generator[int, Any, None]:
        try:
            yield from b"abcdef"
        finally:
            closed.set()

    def check(stage: str) -> None:
        raise GenerationCancelledError(f"cancelled during {stage}")

    answer = stream_answer(
        source(), is_end=lambda t: False, piece=lambda t: bytes([t]), stops=[], budget=10, check=check,
        started=0.0, prompt_tokens=1, cached_tokens=0,
    )  # fmt: skip
    assert next(answer) == "a"
    with pytest.raises(GenerationCancelledError, match="during generation"):
        next(answer)
    assert closed.is_set()


def test_stream_decoder_holds_back_only_what_could_start_a_stop() -> None:
    decoder = StreamDecoder(["END"])
    assert [decoder.feed(bytes([b])) for b in b"abcE"] == ["", "", "a", "b"]
    assert decoder.finish(look_for_stops=True) == "cE" and not decoder.stopped


def test_stage_check_names_the_stage_for_cancel_and_deadline() -> None:
    params = GenerationParams(
        stop=[], max_tokens=1, temperature=0, top_p=1, top_k=0, repeat_penalty=1, seed=None, timeout=1.0
    )
    stage_check(params, started=float("inf"))("prompt evaluation")  # within the deadline: no error
    with pytest.raises(GenerationTimeoutError, match=r"1\.0s deadline during prompt evaluation"):
        stage_check(params, started=0.0)("prompt evaluation")
    params.cancel.set()
    with pytest.raises(GenerationCancelledError, match="during generation"):
        stage_check(params, started=float("inf"))("generation")


def test_run_in_own_thread_returns_the_result_or_raises_the_error() -> None:
    caller = threading.get_ident()
    assert run_in_own_thread(threading.get_ident) != caller

    def fail() -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_in_own_thread(fail)


def test_a_cancelled_worker_closes_its_events_at_once_without_the_garbage_collector() -> None:
    """The events hold the model: waiting for the cyclic GC to close them stalled shutdown for seconds."""
    cancel = threading.Event()
    closed = threading.Event()
    got: list[tuple[str, object]] = []

    def events() -> Generator[int, None, None]:
        try:
            yield 1
            cancel.set()  # the consumer goes away while the next event is being made
            yield 2
            yield 3
        finally:
            closed.set()

    gc.disable()
    try:
        start_in_thread(events, cancel, lambda kind, value: got.append((kind, value))).join(5)
        assert closed.is_set()
    finally:
        gc.enable()
    assert got[0] == ("event", 1)
    assert got[1][0] == "error" and isinstance(got[1][1], GenerationCancelledError)
