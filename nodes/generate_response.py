"""generate_response: ``(prompt | model | validate).with_fallbacks([pattern])`` (DESIGN.md decision 5)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda

from llm.capabilities import LocalModel
from llm.errors import EmptyGenerationError, GenerationCancelledError, LLMError
from nodes.failures import INTERNAL_ERROR, failure_reason
from nodes.pattern_responder import pattern_response
from nodes.speech import has_control_markup
from prompts.templates import build_prompt, select_history, turn_guidance

logger = logging.getLogger(__name__)

_INLINE_INPUT_CHARS = 2000  # longer messages are tokenized in a worker thread, off the event loop
_COUNT_CACHE_SIZE = 4096  # messages whose token counts are remembered (a few turns of many devices)
# A chat model without the LocalModel extras does not say its window: assume a common small one.
_GENERIC_N_CTX = 4096
_GENERIC_MAX_TOKENS = 512


def validate(message: AIMessage) -> AIMessage:
    """Reject only what cannot be spoken: empty/whitespace text or leaked control markup."""
    text = message.text
    if not text.strip():
        raise EmptyGenerationError("the model produced no text")
    if has_control_markup(text):
        raise EmptyGenerationError("the model's answer contains chat-template control markup")
    return message


def _pattern_answer(inputs: dict[str, Any]) -> AIMessage:
    error = inputs.get("error")
    if isinstance(error, GenerationCancelledError):
        raise error  # barge-in: nobody wants a substitute answer
    reason = inputs.get("degraded_reason") or (failure_reason(error) if error is not None else "model_unavailable")
    if reason == INTERNAL_ERROR:  # a bug, not a model failure: never let it hide behind the pattern answer
        logger.error("generate_response failed unexpectedly; pattern responder answers", exc_info=error)
    elif error is not None:
        logger.warning("model failed (%s: %s); pattern responder answers", reason, error)
    text = pattern_response(
        inputs.get("intent", "general"),
        has_history=bool(inputs.get("history")),
        text=inputs.get("input", ""),
        reason=reason,
    )
    return AIMessage(
        content=text,
        response_metadata={"naila_source": "pattern", "fallback_reason": reason, "finish_reason": "stop"},
    )


def build_response_chain(chat_model: BaseChatModel | None, persona: str) -> Runnable:
    """The runnable the node calls; input keys: history, guidance, input, intent."""
    pattern = RunnableLambda(_pattern_answer, name="pattern_responder")
    if chat_model is None:
        return pattern
    primary = build_prompt(persona) | chat_model | RunnableLambda(validate, name="validate")
    # Everything is caught (the robot must always answer); _pattern_answer logs what is not an LLMError.
    return primary.with_fallbacks([pattern], exceptions_to_handle=(Exception,), exception_key="error")


class ResponseGenerator:
    """The generate_response node (sync and async) with its collaborators.

    ``chat_model`` may be any LangChain chat model; one that is a :class:`~llm.capabilities.LocalModel`
    has the history counted with its own tokenizer and template, any other with approximate counts in
    an assumed 4096-token window. ``chat_model=None`` is degraded mode (``degraded_reason`` says why).
    """

    def __init__(
        self,
        chat_model: BaseChatModel | None,
        *,
        persona: str,
        clock: Callable[[], datetime],
        max_turns: int,
        degraded_reason: str | None = None,
    ) -> None:
        self.chat_model = chat_model
        self.local_model: LocalModel | None = chat_model if isinstance(chat_model, LocalModel) else None
        self.clock = clock
        self.max_turns = max_turns
        self.degraded_reason = degraded_reason if chat_model is None else None
        self.persona = persona
        self.chain = build_response_chain(chat_model, persona)
        self._prompt = build_prompt(persona)
        self._frame: int | None = None
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._counts_lock = threading.Lock()

    def _count(self, messages: list[BaseMessage]) -> int:
        """Tokens of ``messages`` as a prompt, with the model's own tokenizer and chat template.

        History selection counts many overlapping lists per turn; each message's tokens are counted once
        (rendered after an empty system message, minus that) and remembered, so a turn tokenizes only
        its new messages. Slightly high, never low: the empty system message is counted as well.
        """
        model = self.local_model
        if model is not None:
            try:
                return self._frame_tokens(model) + sum(self._message_tokens(model, m) for m in messages)
            except LLMError as exc:  # the model is unusable; the fallback will answer and say why
                logger.debug("counting tokens approximately: the model cannot tokenize (%s)", exc)
        return count_tokens_approximately(messages)

    def _frame_tokens(self, model: LocalModel) -> int:
        """BOS, template preamble and the assistant header: what every prompt has besides its messages."""
        if self._frame is None:
            self._frame = len(model.prompt_tokens([SystemMessage("")]))
        return self._frame

    def _message_tokens(self, model: LocalModel, message: BaseMessage) -> int:
        key = (message.type, message.text)
        with self._counts_lock:
            if key in self._counts:
                self._counts.move_to_end(key)
                return self._counts[key]
        empty = SystemMessage("")
        n = len(model.prompt_tokens([empty, message], add_generation_prompt=False)) - len(
            model.prompt_tokens([empty], add_generation_prompt=False)
        )
        with self._counts_lock:
            self._counts[key] = n
            while len(self._counts) > _COUNT_CACHE_SIZE:
                self._counts.popitem(last=False)
        return n

    def _history(self, messages: list[BaseMessage], guidance: str, text: str) -> list[BaseMessage]:
        model = self.local_model
        n_ctx, max_tokens = (model.n_ctx, model.max_tokens) if model else (_GENERIC_N_CTX, _GENERIC_MAX_TOKENS)
        fixed = self._count(self._prompt.format_messages(history=[], guidance=guidance, input=text))
        return select_history(
            messages,
            max_turns=self.max_turns,
            token_counter=self._count,
            token_budget=n_ctx - max_tokens - fixed,
        )

    def inputs(self, state: dict[str, Any]) -> dict[str, Any]:
        guidance = turn_guidance(
            intent=state.get("intent", "general"), now=self.clock(), truncated=bool(state.get("truncated"))
        )
        text = state.get("text", "")
        history = self._history(state.get("messages", []), guidance, text)
        return {
            "history": history,
            "guidance": guidance,
            "input": text,
            "intent": state.get("intent", "general"),
            "degraded_reason": self.degraded_reason,
        }

    def next_turn_prefix(self, messages: list[BaseMessage]) -> list[BaseMessage]:
        """The messages the next prompt of this conversation most likely starts with: the persona, the
        history as the next turn will select it, and the guidance as it reads now for a message without
        an intent hint. Saved prompt states are matched token by token, so when the next turn's
        guidance differs (another minute, an intent hint) everything up to the difference still counts."""
        guidance = turn_guidance(intent="general", now=self.clock())
        history = self._history(messages, guidance, "")
        return self._prompt.format_messages(history=history, guidance=guidance, input="")[: len(history) + 2]

    @staticmethod
    def update(message: AIMessage, inputs: dict[str, Any]) -> dict[str, Any]:
        meta = message.response_metadata or {}
        source = meta.get("naila_source", "llm")
        metrics: dict[str, Any] = {"history_messages": len(inputs["history"])}
        if source == "llm":
            usage: dict[str, Any] = dict(message.usage_metadata or {})
            metrics.update(
                model_name=meta.get("model_name"),
                input_tokens=usage.get("input_tokens"),
                output_tokens=usage.get("output_tokens"),
                cached_tokens=meta.get("prompt_tokens_cached"),
                time_to_first_token_ms=meta.get("time_to_first_token_ms"),
                inference_time_ms=meta.get("inference_time_ms"),
                tokens_per_second=meta.get("tokens_per_second"),
            )
        return {
            "response_text": message.text,
            "response_source": source,
            "fallback_reason": meta.get("fallback_reason") if source != "llm" else None,
            "finish_reason": meta.get("finish_reason") or "stop",
            "metrics": metrics,
        }

    def invoke(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        inputs = self.inputs(state)
        return self.update(self.chain.invoke(inputs, config), inputs)

    async def ainvoke(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        if self._inputs_are_cheap(state):  # a thread hop would cost more than the work
            inputs = self.inputs(state)
        else:  # tokenizing may load the model, or take a while for a long message
            inputs = await asyncio.to_thread(self.inputs, state)
        return self.update(await self.chain.ainvoke(inputs, config), inputs)

    def _inputs_are_cheap(self, state: dict[str, Any]) -> bool:
        """Loaded model, short message: tokenizing the few new messages takes well under a millisecond
        (the history's counts are remembered)."""
        model = self.local_model
        short = len(state.get("text") or "") <= _INLINE_INPUT_CHARS
        return model is not None and model.is_loaded and self._frame is not None and short
