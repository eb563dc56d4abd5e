"""generate_response: ``(prompt | model | validate).with_fallbacks([pattern])`` (DESIGN.md decision 5)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from inspect import signature
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda, RunnablePassthrough

from llm.capabilities import LocalModel, WindowedModel
from llm.errors import EmptyGenerationError, GenerationCancelledError, LLMError
from nodes.act import COMMAND_INTENT, ActionTaker, can_call_tools
from nodes.failures import INTERNAL_ERROR, failure_reason
from nodes.guards import (
    MIN_RETRY_SECONDS,
    GuardContext,
    GuardViolation,
    corrective_instruction,
    guard_context,
    guard_names,
    injection_guidance,
    is_online_request,
    service_kind,
    trimmed,
)
from nodes.pattern_responder import limit_answer, pattern_response, persona_answer
from nodes.robot_tools import call_schemas, robot_tool_schemas
from nodes.speech import has_control_markup
from nodes.voice import answer_facts, in_voice
from prompts.persona import persona_facts
from prompts.templates import build_prompt, facts_messages, select_history, turn_guidance

logger = logging.getLogger(__name__)

_INLINE_INPUT_CHARS = 2000  # longer messages are tokenized in a worker thread, off the event loop
_COUNT_CACHE_SIZE = 4096  # messages whose token counts are remembered (a few turns of many devices)
# A chat model that does not say its window (not a WindowedModel): assume a common small one.
_GENERIC_N_CTX = 4096
_GENERIC_MAX_TOKENS = 512
RobotTools = Literal["auto", "commands", "off"]  # NAILA_ROBOT_TOOLS
_NO_STREAM = "nostream"  # LangGraph's tag (langgraph.constants.TAG_NOSTREAM): the run's tokens are not streamed
MAX_TOOLS_SHARE = 0.3  # auto: the tools in every prompt only when they take at most this share of the window


def validate(message: AIMessage, guard: GuardContext | None = None) -> AIMessage:
    """Reject what cannot be spoken: empty/whitespace text or leaked control markup; with the turn's
    ``guard`` context also what NAILA must never say (:mod:`nodes.guards`: another identity or maker, an
    ability it lacks, too long), as :class:`~nodes.guards.GuardViolation`. An answer that calls the robot
    tools (valid or cut off) passes: the node checks and settles its calls."""
    if message.tool_calls or message.invalid_tool_calls:
        return message
    text = message.text
    if not text.strip():
        raise EmptyGenerationError("the model produced no text")
    if has_control_markup(text):
        raise EmptyGenerationError("the model's answer contains chat-template control markup")
    if guard is not None and (violations := guard.violations(text)):
        guard.fired.extend(name for name in guard_names(violations) if name not in guard.fired)
        raise GuardViolation(message, violations)
    return message


def _validate_turn(inputs: dict[str, Any]) -> AIMessage:
    return validate(inputs["answer"], inputs.get("guard"))


def _guarded_answer(inputs: dict[str, Any], error: GuardViolation) -> AIMessage:
    """The answer after the regeneration tripped a guard too: a too long answer cut to the budget (still the
    model's words), else the persona's answer (the pattern answer for a custom persona)."""
    guard = inputs.get("guard") or GuardContext()
    fired = list(guard.fired) or guard_names(error.violations)
    first = error.violations[0]
    logger.info("the %s guard fired again (%r); answering without the model's text", first.guard, first.evidence)
    if all(v.guard == "length" for v in error.violations):
        meta = {**(error.message.response_metadata or {}), "naila_guards": fired, "naila_trimmed": True}
        text = trimmed(error.message.text, guard.budget)
        return AIMessage(content=text, response_metadata=meta, usage_metadata=error.message.usage_metadata)
    reason = f"guard_{first.guard}"
    # what was asked: a lookup or a service NAILA cannot do gets its limit answer whatever the last guard was
    asked = service_kind(guard.request) or ("online" if is_online_request(guard.request) else None)
    if guard.facts is not None and first.guard == "identity":
        text = persona_answer("identity", guard.facts)
    elif guard.facts is not None and (first.guard == "capability" or asked):
        text = limit_answer(first.topic if first.guard == "capability" else str(asked), guard.facts)
    else:  # a custom persona, or a leak of the instructions: the plain pattern answer
        text = pattern_response(inputs.get("intent", "general"), has_history=True, text=guard.request, reason=reason)
    meta = {"naila_source": "pattern", "fallback_reason": reason, "finish_reason": "stop", "naila_guards": fired}
    return AIMessage(content=text, response_metadata=meta)


def _pattern_answer(inputs: dict[str, Any]) -> AIMessage:
    error = inputs.get("error")
    if isinstance(error, GenerationCancelledError):
        raise error  # barge-in: nobody wants a substitute answer
    if isinstance(error, GuardViolation):
        return _guarded_answer(inputs, error)
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


def build_response_chain(chat_model: Runnable | None, persona: str) -> Runnable:
    """The runnable the node calls; input keys: history, guidance, input, intent, and ``guard`` (the turn's
    :class:`~nodes.guards.GuardContext`; without it no guard applies).

    ``(prompt | model | validate).with_fallbacks([regenerate, pattern])``: an answer that trips a guard is
    generated once more with a corrective system message after the person's message (what was wrong, who
    NAILA is), if the turn's deadline leaves time; that answer is not streamed (the listener gets it as the
    final answer, replacing what was streamed). If it trips a guard too, the pattern step answers from the
    persona's facts. Any other failure skips the regeneration.
    """
    pattern = RunnableLambda(_pattern_answer, name="pattern_responder")
    if chat_model is None:
        return pattern
    prompt = build_prompt(persona)
    checked = RunnableLambda(_validate_turn, name="validate")
    primary = RunnablePassthrough.assign(answer=prompt | chat_model) | checked
    corrected = prompt + ChatPromptTemplate.from_messages([("system", "{correction}")])

    def regeneration(inputs: dict[str, Any]) -> tuple[Runnable, dict[str, Any]]:
        error, guard = inputs.get("error"), inputs.get("guard")
        if not isinstance(error, GuardViolation) or not isinstance(guard, GuardContext):
            raise error if isinstance(error, BaseException) else RuntimeError("no error to recover from")
        remaining = guard.remaining()
        if remaining is not None and remaining < MIN_RETRY_SECONDS:
            raise error  # no time for another answer: the persona's answer it is
        model = chat_model.bind(timeout=remaining) if remaining is not None else chat_model
        quiet = model.with_config(tags=[_NO_STREAM], run_name="regenerate")
        retry_inputs = {k: v for k, v in inputs.items() if k != "error"}
        retry_inputs["correction"] = corrective_instruction(error.violations, guard.facts)
        return RunnablePassthrough.assign(answer=corrected | quiet) | checked, retry_inputs

    def regenerate(inputs: dict[str, Any], config: RunnableConfig) -> AIMessage:
        chain, retry_inputs = regeneration(inputs)
        return chain.invoke(retry_inputs, config)

    async def aregenerate(inputs: dict[str, Any], config: RunnableConfig) -> AIMessage:
        chain, retry_inputs = regeneration(inputs)
        return await chain.ainvoke(retry_inputs, config)

    retry = RunnableLambda(regenerate, afunc=aregenerate, name="guard_retry")
    # Everything is caught (the robot must always answer); _pattern_answer logs what is not an LLMError.
    return primary.with_fallbacks([retry, pattern], exceptions_to_handle=(Exception,), exception_key="error")


def tools_in_prompt(robot_tools: RobotTools, chat_model: BaseChatModel | None) -> list[dict[str, Any]] | None:
    """The tools every ordinary turn's prompt renders, or None: NAILA_ROBOT_TOOLS=auto, a model that can call
    tools, and (for a local model) tools whose descriptions take at most ``MAX_TOOLS_SHARE`` of its context
    window; a smaller window keeps them for clear commands only. Saved prompt states must be made with the
    same tools, or they never match. Tokenizes with the model (loads it); raises its ``LLMError``."""
    if robot_tools != "auto" or not can_call_tools(chat_model):
        return None
    tools = robot_tool_schemas()
    if isinstance(chat_model, LocalModel):
        cost = tools_cost(chat_model, tools)
        if cost > chat_model.n_ctx * MAX_TOOLS_SHARE:
            logger.info(
                "the robot tools take %d of the %d-token context: bound for clear commands only", cost, chat_model.n_ctx
            )
            return None
    return tools


def tools_cost(model: LocalModel, tools: list[dict[str, Any]]) -> int:
    """Tokens the tools' descriptions add to a prompt. Templates put them in the system turn (Qwen2.5) or
    in the first user message (Llama 3.1), so it is measured on a prompt that has both."""
    frame = [SystemMessage(""), HumanMessage("")]
    return len(model.prompt_tokens(frame, tools=tools)) - len(model.prompt_tokens(frame))


def _calls_tools(message: AIMessage) -> bool:
    source = (message.response_metadata or {}).get("naila_source", "llm")
    return source == "llm" and bool(message.tool_calls or message.invalid_tool_calls)


class ResponseGenerator:
    """The generate_response node (sync and async) with its collaborators.

    ``chat_model`` may be any LangChain chat model; one that is a :class:`~llm.capabilities.LocalModel`
    has the history counted with its own tokenizer and template, any other with approximate counts, in the
    window it reports (:class:`~llm.capabilities.WindowedModel`: an LLM server's context per slot) or else an
    assumed 4096-token one. ``chat_model=None`` is degraded mode (``degraded_reason`` says why).
    """

    def __init__(
        self,
        chat_model: BaseChatModel | None,
        *,
        persona: str,
        clock: Callable[[], datetime],
        max_turns: int,
        degraded_reason: str | None = None,
        robot_tools: RobotTools = "commands",
    ) -> None:
        self.chat_model = chat_model
        self.local_model: LocalModel | None = chat_model if isinstance(chat_model, LocalModel) else None
        self.windowed: WindowedModel | None = chat_model if isinstance(chat_model, WindowedModel) else None
        self.clock = clock
        self.max_turns = max_turns
        self.degraded_reason = degraded_reason if chat_model is None else None
        self.persona = persona
        # The robot tools: bound in every turn (``auto``: the model may call them) or only for clear
        # commands (the act node, which shares this prompt, history selection and tools).
        self.tools: list[dict[str, Any]] = robot_tool_schemas() if robot_tools != "off" else []
        self._auto: bool | None = None if robot_tools == "auto" and can_call_tools(chat_model) else False
        self.chain = build_response_chain(chat_model, persona)
        self._bound: Runnable | None = None  # the model with the tools bound, tool_choice="auto"
        self._narrows = chat_model is not None and "call_schemas" in signature(type(chat_model).bind_tools).parameters
        self._tools_chain = self.chain
        if chat_model is not None and self._auto is None:
            self._bound = chat_model.bind_tools(self.tools, tool_choice="auto")
            self._tools_chain = build_response_chain(self._bound, persona)
        self.actor = ActionTaker(chat_model, self)
        self._prompt = build_prompt(persona)
        self._frames: dict[bool, int] = {}
        self._counts: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._counts_lock = threading.Lock()

    @property
    def prompt_tools(self) -> list[dict[str, Any]] | None:
        """The tools every ordinary turn's prompt renders, or None (see :func:`tools_in_prompt`); decided
        once the model can tokenize."""
        if self._auto is None:
            try:
                self._auto = tools_in_prompt("auto", self.chat_model) is not None
            except LLMError:  # the model is unusable: this turn falls back anyway; decide on a later one
                return None
        return self.tools if self._auto else None

    def _count(self, messages: list[BaseMessage], with_tools: bool = False) -> int:
        """Tokens of ``messages`` as a prompt (``with_tools``: the robot tools bound), with the model's own
        tokenizer and chat template.

        History selection counts many overlapping lists per turn; each message's tokens are counted once
        (rendered after an empty system message, minus that) and remembered, so a turn tokenizes only
        its new messages. Slightly high, never low: the empty system message is counted as well.
        """
        model = self.local_model
        if model is not None:
            try:
                return self._frame_tokens(model, with_tools) + sum(self._message_tokens(model, m) for m in messages)
            except LLMError as exc:  # the model is unusable; the fallback will answer and say why
                logger.debug("counting tokens approximately: the model cannot tokenize (%s)", exc)
        return count_tokens_approximately(messages)

    def _frame_tokens(self, model: LocalModel, with_tools: bool) -> int:
        """BOS, template preamble (with the tools' descriptions) and the assistant header: what every
        prompt has besides its messages."""
        if with_tools not in self._frames:
            frame = len(model.prompt_tokens([SystemMessage("")]))
            self._frames[with_tools] = frame + (tools_cost(model, self.tools) if with_tools else 0)
        return self._frames[with_tools]

    def _message_tokens(self, model: LocalModel, message: BaseMessage) -> int:
        calls = getattr(message, "tool_calls", None) or []  # a stored robot action renders its call
        key = (message.type, message.text, repr([(c["name"], c["args"]) for c in calls]))
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

    def _history(
        self,
        messages: list[BaseMessage],
        guidance: str,
        text: str,
        with_tools: bool,
        facts: list[BaseMessage] | None = None,
    ) -> list[BaseMessage]:
        n_ctx, max_tokens = self._window()
        prompt = self._prompt.format_messages(facts=facts or [], history=[], guidance=guidance, input=text)
        fixed = self._count(prompt, with_tools)  # the facts block takes its share of the window first
        return select_history(
            messages,
            max_turns=self.max_turns,
            token_counter=lambda selected: self._count(selected, with_tools),
            token_budget=n_ctx - max_tokens - fixed,
        )

    def _window(self) -> tuple[int, int]:
        """The model's context in tokens and the most tokens an answer may take: its own where it says them
        (an LLM server's context per slot), else a common small window."""
        model = self.local_model
        if model is not None:
            return model.n_ctx, model.max_tokens
        n_ctx = self.windowed.context_window if self.windowed is not None else _GENERIC_N_CTX
        answer = getattr(self.chat_model, "max_tokens", None)
        return n_ctx, answer if isinstance(answer, int) and answer > 0 else _GENERIC_MAX_TOKENS

    def inputs(self, state: dict[str, Any]) -> dict[str, Any]:
        intent = state.get("intent", "general")
        guidance = turn_guidance(intent=intent, now=self.clock(), truncated=bool(state.get("truncated")))
        text = state.get("text", "")
        tools = self.prompt_tools is not None  # the model may call the robot tools in this turn
        acting = bool(self.tools) and intent == COMMAND_INTENT  # the act node binds them for this one
        facts = facts_messages(state.get("user_facts") or [])  # naila_graph/user_facts.py
        history = self._history(state.get("messages", []), guidance, text, tools or acting, facts)
        return {
            "facts": facts,
            "history": history,
            "guidance": guidance,
            "input": text,
            "intent": intent,
            "degraded_reason": self.degraded_reason,
            "tools": tools,
            "user_facts": answer_facts(state),
        }

    def next_turn_prefix(self, messages: list[BaseMessage], user_facts: list[str] | None = None) -> list[BaseMessage]:
        """The messages the next prompt of this conversation most likely starts with: the persona, the
        facts about the person (``user_facts``, the turn's state keeps them), the history as the next turn
        will select it, and the guidance as it reads now for a message without
        an intent hint. Saved prompt states are matched token by token, so when the next turn's
        guidance differs (another minute, an intent hint) everything up to the difference still counts."""
        guidance = turn_guidance(intent="general", now=self.clock())
        facts = facts_messages(user_facts or [])
        history = self._history(messages, guidance, "", self.prompt_tools is not None, facts)
        prompt = self._prompt.format_messages(facts=facts, history=history, guidance=guidance, input="")
        return prompt[: len(facts) + len(history) + 2]

    def prompt_messages(self, inputs: dict[str, Any]) -> list[BaseMessage]:
        """The prompt of a turn, from :meth:`inputs`."""
        return self._prompt.format_messages(
            facts=inputs.get("facts") or [],
            history=inputs["history"],
            guidance=inputs["guidance"],
            input=inputs["input"],
        )

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
        text: str = str(message.text)
        if source == "llm":  # the small models mirror "my parrot": the person's facts go back to them
            text = in_voice(text, list(inputs.get("user_facts") or []))
        return {
            "response_text": text,
            "response_source": source,
            "fallback_reason": meta.get("fallback_reason") if source != "llm" else None,
            "finish_reason": meta.get("finish_reason") or "stop",
            "metrics": metrics,
        }

    def invoke(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        inputs = self._guarded(self.inputs(state), state)
        chain, bound = self._chain(inputs)
        message = chain.invoke(inputs, config)
        if _calls_tools(message):  # the model acted on its own: check the calls, repair, or answer in words
            settled = self.actor.settle(state, bound, self.prompt_messages(inputs), message, config)
            if isinstance(settled, dict):
                return settled
            message = self._checked(settled, inputs)
        return self._with_guards(self.update(message, inputs), inputs)

    async def ainvoke(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        if self._inputs_are_cheap(state):  # a thread hop would cost more than the work
            inputs = self.inputs(state)
        else:  # tokenizing may load the model, or take a while for a long message
            inputs = await asyncio.to_thread(self.inputs, state)
        inputs = self._guarded(inputs, state)
        chain, bound = self._chain(inputs)
        message = await chain.ainvoke(inputs, config)
        if _calls_tools(message):
            settled = await self.actor.asettle(state, bound, self.prompt_messages(inputs), message, config)
            if isinstance(settled, dict):
                return settled
            message = self._checked(settled, inputs)
        return self._with_guards(self.update(message, inputs), inputs)

    def _guarded(self, inputs: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
        """``inputs`` with the turn's guard context (nodes/guards.py) and, in a conversation where someone
        tried to change who NAILA is, a guidance line telling the model not to go along with it."""
        facts = persona_facts(self.persona)
        timeout = getattr(self.chat_model, "timeout", None)  # the generation deadline bounds the whole turn
        deadline = timeout if isinstance(timeout, int | float) else None
        guard = guard_context(state, facts=facts, timeout=deadline)
        note = injection_guidance(state.get("text") or "", guard.imposed, facts)
        guidance = f"{inputs['guidance']} {note}" if note else inputs["guidance"]
        return {**inputs, "guidance": guidance, "guard": guard}

    @staticmethod
    def _with_guards(update: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        """The node's update with the guards that fired this turn in its metrics (``metrics["guards"]``)."""
        guard = inputs.get("guard")
        if isinstance(guard, GuardContext) and guard.fired:
            update["metrics"] = {**update.get("metrics", {}), "guards": list(guard.fired)}
        return update

    def _chain(self, inputs: dict[str, Any]) -> tuple[Runnable, Runnable | None]:
        """The turn's chain and its model with the tools bound (None without tools). What the message's words
        fix (nodes/robot_tools.call_schemas: "left", "purple", "rainbow") narrows a call the model makes,
        for a model whose ``bind_tools`` takes ``call_schemas``; the prompt stays the same."""
        if not inputs["tools"] or self.chat_model is None:
            return self.chain, None
        if self._narrows:
            names = [t["function"]["name"] for t in self.tools]
            narrowed = call_schemas(inputs["input"], names)
            if narrowed:
                bound = self.chat_model.bind_tools(self.tools, tool_choice="auto", call_schemas=narrowed)
                return build_response_chain(bound, self.persona), bound
        return self._tools_chain, self._bound

    @staticmethod
    def _checked(message: AIMessage, inputs: dict[str, Any]) -> AIMessage:
        """A words answer given after a refused call: spoken if it passes ``validate``, else the pattern's."""
        try:
            return validate(message)
        except Exception as exc:
            return _pattern_answer({**inputs, "error": exc})

    def _inputs_are_cheap(self, state: dict[str, Any]) -> bool:
        """Loaded model, short message: tokenizing the few new messages takes well under a millisecond
        (the history's counts are remembered)."""
        model = self.local_model
        short = len(state.get("text") or "") <= _INLINE_INPUT_CHARS
        return model is not None and model.is_loaded and bool(self._frames) and short
