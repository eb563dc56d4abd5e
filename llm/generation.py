"""What one generation is: its options, its text as tokens arrive, its final report, its thread.

Without llama.cpp or LangChain: the chat model builds :class:`GenerationParams`; the llama session
feeds sampled tokens to :func:`stream_answer`, which yields text pieces and one :class:`Done`.

Threads matter for speed: llama.cpp computes with OpenMP, which keeps a team of worker threads for
every thread that ever computed, for as long as that thread lives; one idle team of a long-lived
thread is enough for libgomp to count more threads than CPUs and let its barriers sleep instead of
spin, which slows every later generation (docs/PERFORMANCE.md, parts 1 and 3). So sync calls compute
in the caller's own thread, as raw llama-cpp-python does, and async generation and prefill in threads
that end with them (:func:`start_in_thread`, :func:`run_in_own_thread`). Mixing sync calls from a
long-lived thread with async ones in one process slows both (the server never does).
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from llm.errors import GenerationCancelledError, GenerationTimeoutError

FinishReason = Literal["stop", "length"]
_T = TypeVar("_T")


@dataclass
class GenerationParams:
    """The effective options of one generation (the chat model's fields merged with per-call kwargs)."""

    stop: list[str]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repeat_penalty: float
    seed: int | None
    timeout: float | None
    cancel: threading.Event = field(default_factory=threading.Event)
    conversation: str | None = None  # the memory thread id (from the run's metadata), for the state cache
    log_prompt: bool = False
    tools: list[dict[str, Any]] | None = None  # OpenAI-style tool dicts the chat template renders (llm.tool_calls)
    # A GBNF grammar (root rule ``root``) the answer must follow (llm.constrained); no repeat penalty under it.
    grammar: str | None = None
    # Lazy grammar: sampled freely until the text contains one of these; the grammar then constrains the
    # text from the trigger on (it describes the text starting with the trigger). "^x": x only at the start.
    grammar_triggers: list[str] | None = None


@dataclass
class Done:
    """Final event of a generation: why it ended, usage and timings."""

    finish_reason: FinishReason
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    time_to_first_token_ms: float | None
    inference_time_ms: float
    tokens_per_second: float | None


class Utf8Decoder:
    """Bytes of token pieces in, text out; a character split across tokens comes out whole."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StreamDecoder:
    """Token bytes in, text pieces safe to show out, cut before the first stop sequence.

    Text that could be the start of a stop sequence is held back until the next piece decides it.
    After :attr:`stopped` turns true, nothing more is emitted until :meth:`finish`.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = stops
        self._holdback = max((len(s) for s in stops), default=1) - 1
        self._decoder = Utf8Decoder()
        self._pending = ""
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        """The text that can be shown now ("" while held back or once a stop sequence was found)."""
        self._pending += self._decoder.feed(piece)
        if not self._stops:
            emit_upto = len(self._pending)
        else:
            hit = _first_stop(self._pending, self._stops)
            if hit is not None:
                self._pending = self._pending[:hit]
                self.stopped = True
                return ""
            emit_upto = max(0, len(self._pending) - self._holdback)
        shown, self._pending = self._pending[:emit_upto], self._pending[emit_upto:]
        return shown

    def finish(self, look_for_stops: bool) -> str:
        """The rest of the text; with ``look_for_stops`` cut at a stop sequence found in it (see
        :attr:`stopped`)."""
        rest = self._pending + self._decoder.flush()
        self._pending = ""
        if rest and look_for_stops and self._stops:
            hit = _first_stop(rest, self._stops)
            if hit is not None:
                rest, self.stopped = rest[:hit], True
        return rest


def stream_answer(
    tokens: Generator[int, Any, Any],
    *,
    is_end: Callable[[int], bool],
    piece: Callable[[int], bytes],
    stops: list[str],
    budget: int,
    check: Callable[[str], None],
    started: float,
    prompt_tokens: int,
    cached_tokens: int,
) -> Generator[str | Done, None, None]:
    """Text pieces of the sampled ``tokens``, then one :class:`Done`; closes ``tokens``.

    Ends at an end-of-generation token (``is_end``), a stop sequence, ``budget`` tokens, or when
    ``check("generation")`` raises (cancel, deadline). ``started`` (perf_counter) is when the request
    got the model: time to first token and inference time count from there.
    """
    text = StreamDecoder(stops)
    produced = 0
    first_at: float | None = None
    last_at = started
    finish: FinishReason = "length"
    try:
        for token in tokens:
            now = time.perf_counter()
            if first_at is None:
                first_at = now
            if is_end(token):
                finish = "stop"
                break
            produced += 1
            last_at = now
            shown = text.feed(piece(token))
            if text.stopped:
                finish = "stop"
                break
            if shown:
                yield shown
            if produced >= budget:
                break
            check("generation")
    finally:
        tokens.close()
    rest = text.finish(look_for_stops=finish == "length")
    if text.stopped:
        finish = "stop"
    if rest:
        yield rest
    end = time.perf_counter()
    decode_s = last_at - first_at if first_at is not None else 0.0
    yield Done(
        finish_reason=finish,
        input_tokens=prompt_tokens,
        output_tokens=produced,
        cached_tokens=cached_tokens,
        time_to_first_token_ms=(first_at - started) * 1000 if first_at is not None else None,
        inference_time_ms=(end - started) * 1000,
        tokens_per_second=(produced - 1) / decode_s if produced > 1 and decode_s > 0 else None,
    )


def stage_check(params: GenerationParams, started: float) -> Callable[[str], None]:
    """A check to call between steps of a generation (the stage names the step in the message):
    raises once ``params.cancel`` is set or ``params.timeout`` seconds have passed since ``started``."""
    deadline = None if not params.timeout else started + float(params.timeout)

    def check(stage: str) -> None:
        if params.cancel.is_set():
            raise GenerationCancelledError(f"generation cancelled during {stage}")
        if deadline is not None and time.perf_counter() > deadline:
            raise GenerationTimeoutError(
                f"generation exceeded its {params.timeout}s deadline during {stage} (LLM_MAX_INFERENCE_TIME_SECONDS)"
            )

    return check


def start_in_thread(
    events: Callable[[], Iterable[object]], cancel: threading.Event, put: Callable[[str, Any], None]
) -> threading.Thread:
    """Iterate ``events()`` in a new thread that ends with them (async callers): each event goes to
    ``put("event", e)``, then ``put("end", None)`` or ``put("error", exc)``. Once ``cancel`` is set the
    next event raises GenerationCancelledError instead."""

    def work() -> None:
        try:
            # Made here and held by nothing else: a raise closes it at once, which frees the model (the
            # error and this frame form a reference cycle that only the garbage collector would break).
            for event in events():
                if cancel.is_set():
                    raise GenerationCancelledError("generation cancelled by the caller")
                put("event", event)
        except BaseException as exc:
            put("error", exc)
        else:
            put("end", None)

    worker = threading.Thread(target=work, name="llama-generation", daemon=True)
    worker.start()
    return worker


def run_in_own_thread(work: Callable[[], _T], name: str = "llama-prefill") -> _T:
    """``work()`` computed in a new thread that ends with it; its exception is raised here."""
    outcome: list[_T | BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None
