"""The turn layer: everything between "a request is taken" and "the answer is final".

Every front end (the MQTT server, ``naila chat``, the eval runner, the server benchmark) runs a turn
here and consumes the same small typed events; none of them reads the graph's stream itself:

``Token``*  raw model text as it is generated (for front ends that print text, e.g. the CLI)
``Sentence``*  a cleaned, speakable sentence of the answer while the model generates
then exactly one of
``Final``  the answer is final (possibly before memory is written): the last stream text and the state
``Cancelled``  the turn was cancelled (barge-in, shutdown, Ctrl-C): what had been said
``Failed``  the turn raised; ``answered`` says whether a ``Final`` was already out
and, after a ``Final``, one ``Metrics`` with the turn's timeline.

Sentence splitting and cleaning are the ones finalize uses (:func:`nodes.finalize.speakable`), so the
stream and the stored answer agree.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableConfig

from llm.errors import GenerationCancelledError
from naila_graph.graph import turn_config, turn_input
from naila_graph.memory import aprune_thread, prune_thread
from nodes.finalize import speakable, speakable_sentences
from nodes.generate_response import ResponseGenerator
from nodes.guards import answer_passes
from nodes.speech import SentenceSplitter, clean_for_speech, ends_with_question, has_control_markup
from nodes.voice import answer_facts, in_voice

logger = logging.getLogger("naila.turn")

STREAM_MODES = ["messages", "values"]
MODEL_NODE = "generate_response"
BACKGROUND_WAIT_SECONDS = 5.0  # how long shutdown waits for pruning and prefill of finished turns


@dataclass(frozen=True)
class TurnRequest:
    """One turn to answer. ``thread_id`` is the memory thread (the device's, or a conversation's)."""

    text: str
    device_id: str
    thread_id: str
    task_id: str | None = None
    input_type: str = "text"
    confidence: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)  # extra trace metadata (e.g. the eval case)
    received: float = field(default_factory=time.monotonic)

    def graph_input(self) -> dict[str, Any]:
        return turn_input(
            self.text,
            device_id=self.device_id,
            task_id=self.task_id,
            input_type=self.input_type,
            confidence=self.confidence,
        )

    def graph_config(self) -> RunnableConfig:
        extra = {"task_id": self.task_id, "input_type": self.input_type} if self.task_id else {}
        return turn_config(self.thread_id, device_id=self.device_id, **extra, **self.metadata)


@dataclass(frozen=True)
class Token:
    text: str


@dataclass(frozen=True)
class Sentence:
    text: str


@dataclass(frozen=True)
class Final:
    """The answer. ``tail`` is the last stream text (may be empty); with ``replaced`` the listener drops
    what it had been told: ``tail`` is then the whole answer. ``early``: sent before memory is written."""

    text: str
    tail: str
    replaced: bool
    state: dict[str, Any]
    early: bool = False


@dataclass(frozen=True)
class Cancelled:
    partial: str  # the sentences already streamed
    state: dict[str, Any]
    answered: bool  # the final answer was out already: only storing the turn was cancelled


@dataclass(frozen=True)
class Failed:
    error: BaseException
    answered: bool


@dataclass(frozen=True)
class Metrics:
    state: dict[str, Any]
    timeline_ms: dict[str, float]  # ms since the turn started: where the time of an answer goes
    started: float  # time.monotonic() when the turn started (after any queueing)


TurnEvent = Token | Sentence | Final | Cancelled | Failed | Metrics


def early_answer(state: dict[str, Any], raw: str, finish_reason: str) -> dict[str, Any]:
    """The final answer of a turn whose model text passed validation, as finalize will store it."""
    text = speakable(in_voice(raw, answer_facts(state)))
    return {
        **state,
        "response_text": text,
        "response_source": "llm",
        "fallback_reason": None,
        "finish_reason": finish_reason,
        "expects_reply": ends_with_question(text),
    }


class _Speech:
    """The answer's sentences as the model generates them, and how the stream ends."""

    def __init__(self) -> None:
        self.splitter = SentenceSplitter()
        self.sent: list[str] = []
        self.raw = ""
        self.closed = False  # the final stream text went out as soon as the model finished
        self.user_facts: list[str] = []  # the person's facts: "My parrot is Kiwi." is spoken "Your parrot …"

    def _spoken(self, sentence: str) -> str:
        return clean_for_speech(in_voice(sentence, self.user_facts))

    def feed(self, text: str) -> list[str]:
        self.raw += text
        cleaned = (self._spoken(s) for s in self.splitter.feed(text))
        return [s for s in cleaned if s]

    def tail(self) -> str:
        rest = self.splitter.flush()
        return self._spoken(rest) if rest else ""

    def model_done(self, state: dict[str, Any]) -> str | None:
        """The last stream text, to send as soon as the model finished; None when the graph's final
        answer must be awaited (the text will not pass the generate_response validation unchanged: nothing
        to say, control markup, or an answer guard of the turn in ``state`` fires, nodes/guards.py)."""
        if self.closed or not self.raw.strip() or has_control_markup(self.raw) or not answer_passes(self.raw, state):
            return None
        tail = self.tail()
        if not self.sent and not tail:
            return None
        if tail:
            self.sent.append(tail)
        self.closed = True
        return tail

    def finish(self, answer: str) -> tuple[list[str], str, bool]:
        """Sentences still to stream, the final text, and whether it replaces what was streamed."""
        tail = self.tail()
        if self.sent and " ".join([*self.sent, tail] if tail else self.sent) == answer:
            return [], tail, False
        if not self.sent:
            sentences = speakable_sentences(answer) or [answer]
            return sentences[:-1], sentences[-1], False
        return [], answer, True


class Turn:
    """One running turn. Iterate :meth:`events`; see :func:`consume` for cancellation."""

    def __init__(self, runner: TurnRunner, request: TurnRequest) -> None:
        self.runner = runner
        self.request = request
        self.started = time.monotonic()
        self.timeline: dict[str, float] = {}
        self.state: dict[str, Any] = {}
        self.answered = False
        self._speech = _Speech()

    def mark(self, name: str) -> None:
        self.timeline.setdefault(name, round((time.monotonic() - self.started) * 1000, 1))

    def cancelled(self) -> Cancelled:
        """The event that ends this turn when it is cancelled."""
        partial = " ".join(self._speech.sent)
        state = {
            **self.state,
            "response_text": partial,
            "finish_reason": "cancelled",
            "response_source": self.state.get("response_source") or ("llm" if partial else None),
        }
        return Cancelled(partial, state, self.answered)

    def _on_model_chunk(self, chunk: AIMessageChunk) -> Iterator[TurnEvent]:
        speech = self._speech
        if chunk.text:
            self.mark("first_token")
            yield Token(chunk.text)
            for sentence in speech.feed(chunk.text):
                yield Sentence(sentence)
                speech.sent.append(sentence)
                self.mark("first_sentence_sent")
        finish_reason = chunk.response_metadata.get("finish_reason")
        if finish_reason:
            self.mark("model_done")
            tail = speech.model_done(self.state)
            if tail is not None:  # final now; memory is written after
                answer = early_answer(self.state, speech.raw, finish_reason)
                self.answered = True
                yield Final(answer["response_text"], tail, False, answer, early=True)
                self.mark("answer_published")

    def _on_item(self, mode: str, payload: Any) -> Iterator[TurnEvent]:
        if mode == "values":
            self.state = payload
            self._speech.user_facts = answer_facts(payload)
            return
        chunk, meta = payload
        if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == MODEL_NODE:
            yield from self._on_model_chunk(chunk)

    def _on_end(self) -> Iterator[TurnEvent]:
        self.mark("graph_done")
        state = self.state
        answer = state.get("response_text", "")
        if not self.answered:
            sentences, tail, replaced = self._speech.finish(answer)
            for sentence in sentences:
                yield Sentence(sentence)
            self.answered = True
            yield Final(answer, tail, replaced, state)
            self.mark("answer_published")
        elif " ".join(self._speech.sent) != answer:
            logger.warning("answer %s: stored text differs from the text sent: %r", self.request.task_id, answer)
        yield Metrics(state, self.timeline, self.started)
        self.runner.after_turn(self.request, state)

    async def events(self) -> AsyncIterator[TurnEvent]:
        """The turn's events. A failure becomes a ``Failed`` event; a cancellation propagates (use
        :func:`consume`, or catch it and take :meth:`cancelled`)."""
        graph = self.runner.graph
        try:
            async for mode, payload in graph.astream(
                self.request.graph_input(), self.request.graph_config(), stream_mode=STREAM_MODES, durability="exit"
            ):
                for event in self._on_item(mode, payload):
                    yield event
        except (asyncio.CancelledError, GenerationCancelledError):
            raise
        except Exception as exc:
            yield Failed(exc, self.answered)
            return
        for event in self._on_end():
            yield event

    def events_sync(self) -> Iterator[TurnEvent]:
        """:meth:`events` for synchronous callers (a sync checkpointer); same events."""
        graph = self.runner.graph
        try:
            for mode, payload in graph.stream(
                self.request.graph_input(), self.request.graph_config(), stream_mode=STREAM_MODES, durability="exit"
            ):
                yield from self._on_item(mode, payload)
        except GenerationCancelledError:
            raise
        except Exception as exc:
            yield Failed(exc, self.answered)
            return
        yield from self._on_end()


async def consume(turn: Turn, handle: Callable[[TurnEvent], Awaitable[None]]) -> None:
    """Feed ``turn``'s events to ``handle``. A cancellation of the calling task (also while ``handle`` runs)
    or of the generation ends the turn with one :class:`Cancelled` event instead."""
    events = turn.events()
    try:
        async for event in events:
            await handle(event)
    except (asyncio.CancelledError, GenerationCancelledError):
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        await events.aclose()  # type: ignore[attr-defined]
        await handle(turn.cancelled())


@dataclass
class PrefillStats:
    prefills: int = 0
    prefill_tokens: int = 0


class TurnRunner:
    """Runs turns of one graph and the housekeeping after them (pruning old checkpoints, and prefilling
    the next turn's prompt while the robot speaks). ``busy()`` says when a request is waiting: prefill
    then gives way. ``aclose()`` waits for that background work."""

    def __init__(
        self,
        graph: Any,
        *,
        saver: Any = None,
        generator: ResponseGenerator | None = None,
        busy: Callable[[], bool] = lambda: False,
        prefill: bool = True,
        stats: PrefillStats | None = None,
    ) -> None:
        self.graph = graph
        self.saver = saver
        self.generator = generator
        self.model = generator.local_model if generator is not None else None  # None in degraded mode
        self.busy = busy
        self.prefill = prefill and self.model is not None
        self.stats = stats if stats is not None else PrefillStats()
        self._background: set[asyncio.Task[Any]] = set()

    def start(self, request: TurnRequest) -> Turn:
        return Turn(self, request)

    def run_sync(self, request: TurnRequest) -> list[TurnEvent]:
        """All events of one turn, for synchronous callers; old checkpoints are pruned at once."""
        return list(self.start(request).events_sync())

    def after_turn(self, request: TurnRequest, state: dict[str, Any]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a synchronous turn: prune now, no prefill
            self._prune_now(request.thread_id)
            return
        if self.prefill and state.get("messages"):
            self._spawn(loop, self._prefill_next_turn(request, state["messages"], state.get("user_facts")))
        if self.saver is not None:
            self._spawn(loop, self._prune(request.thread_id))

    def _spawn(self, loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        task = loop.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        """Wait (up to ``BACKGROUND_WAIT_SECONDS``) for the housekeeping of finished turns."""
        if self._background:
            await asyncio.wait(self._background, timeout=BACKGROUND_WAIT_SECONDS)

    def _prune_now(self, thread_id: str) -> None:
        if self.saver is None:
            return
        try:
            prune_thread(self.saver, thread_id)
        except Exception:  # housekeeping: never fail a turn for it
            logger.exception("could not prune the old checkpoints of %s", thread_id)

    async def _prune(self, thread_id: str) -> None:
        """Drop the thread's older checkpoints (each holds the whole conversation); off the answer's path."""
        try:
            removed = await aprune_thread(self.saver, thread_id)
        except Exception:  # housekeeping: never fail a turn for it
            logger.exception("could not prune the old checkpoints of %s", thread_id)
            return
        if removed:
            logger.debug("pruned %d old checkpoint rows of %s", removed, thread_id)

    async def _prefill_next_turn(
        self, request: TurnRequest, messages: list[Any], user_facts: list[str] | None = None
    ) -> None:
        """While the robot speaks the answer, evaluate what the device's next prompt starts with (persona +
        history including this turn), so its next turn only evaluates the new guidance and message.
        Gives way to any request: skipped when one waits, stopped between small chunks when one comes."""
        model, generator = self.model, self.generator
        if model is None or generator is None or self.busy():
            return
        started = time.perf_counter()
        try:
            prefix = await asyncio.to_thread(generator.next_turn_prefix, messages, user_facts)
            if self.busy():
                return
            evaluated = await model.aprefill(
                prefix,
                should_stop=self.busy,
                conversation=request.thread_id,
                next_role="human",
                tools=generator.prompt_tools,
            )
        except Exception as exc:  # an optimisation only: the next turn evaluates its whole prompt
            logger.warning("device=%s prefill of the next turn failed: %s", request.device_id, exc)
            return
        if evaluated:
            self.stats.prefills += 1
            self.stats.prefill_tokens += evaluated
            logger.debug(
                "device=%s prefilled %d tokens of the next turn in %.0f ms",
                request.device_id,
                evaluated,
                (time.perf_counter() - started) * 1000,
            )
