"""The orchestrator: one function assembles the whole flow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.store.base import BaseStore

from llm.capabilities import LocalModel
from naila_graph.settings import NailaSettings
from naila_graph.user_facts import FactsNodes, UserFacts
from nodes.act import COMMAND_INTENT
from nodes.dispatch_action import local_now, make_dispatch_action
from nodes.facts import Fact
from nodes.finalize import make_finalize
from nodes.generate_response import ResponseGenerator
from nodes.process_input import make_process_input
from nodes.recall import forget_answer, recall_answer
from nodes.speech import storable_text
from nodes.state import NailaState
from prompts.persona import load_persona, persona_facts


def _node(name: str, func: Callable[..., Any], afunc: Callable[..., Awaitable[Any]]) -> Runnable:
    """A node with a sync and an async body, wrapped the way LangGraph wraps plain functions.

    LangGraph's own wrapper inspects the function's signature once; ``RunnableLambda`` does it on every
    call, a cost paid per node and turn (docs/PERFORMANCE.md). The wrapper lives in a private module, so
    any LangGraph without it gets the public ``RunnableLambda`` (same behaviour, slower).
    """
    try:
        from langgraph._internal._runnable import RunnableCallable
    except ImportError:  # pragma: no cover - a LangGraph that moved it
        return RunnableLambda(func, afunc=afunc, name=name)
    return RunnableCallable(func, afunc, name=name)


def _cheap_node(name: str, func: Callable[[dict[str, Any]], dict[str, Any]]) -> Runnable:
    """A node of microseconds of pure Python: run it on the event loop in async mode.

    A plain sync node would be sent to a worker thread for every turn; the round trip costs more
    than the node itself (measured by evals/bench/server.py).
    """

    async def on_loop(state: dict[str, Any]) -> dict[str, Any]:
        return func(state)

    return _node(name, func, on_loop)


def _after_input(state: NailaState) -> str:
    return "finalize" if state.get("response_source") else "dispatch_action"


def _after_action(state: NailaState) -> str:
    if state.get("response_source"):
        return "finalize"
    return "act" if state.get("intent") == COMMAND_INTENT else "generate_response"


def _after_act(state: NailaState) -> str:
    return "finalize" if state.get("response_source") else "generate_response"


def build_graph(
    chat_model: BaseChatModel | None,
    checkpointer: BaseCheckpointSaver | None = None,
    *,
    settings: NailaSettings | None = None,
    persona: str | None = None,
    clock: Callable[[], datetime] | None = None,
    degraded_reason: str | None = None,
    generator: ResponseGenerator | None = None,
    store: BaseStore | None = None,
) -> CompiledStateGraph:
    """``process_input → dispatch_action → [act →] generate_response → finalize``; ``act`` takes clear
    robot commands (nodes/act.py) and answers them itself unless it has no model.

    ``chat_model=None`` is degraded mode: the pattern responder answers (``degraded_reason`` says
    why, e.g. ``model_load_failed``). Memory is the ``checkpointer``, keyed by ``thread_id``. With a
    ``store`` (naila_graph/user_facts.py), the facts the person told about themselves are kept per device:
    ``generate_response`` shows them in the prompt, and a ``remember`` node after ``finalize`` stores what
    this turn's message stated (off the answer's path: the server publishes a model's answer first).
    """
    settings = settings or NailaSettings()
    now = clock or _settings_clock(settings)
    if generator is None:
        generator = make_generator(chat_model, settings, persona=persona, clock=now, degraded_reason=degraded_reason)
    process_input = make_process_input(
        max_input_chars=settings.max_input_chars, confidence_floor=settings.confidence_floor
    )

    graph = StateGraph(NailaState)
    graph.add_node("process_input", _cheap_node("process_input", process_input))
    dispatch_action = make_dispatch_action(now, facts=persona_facts(generator.persona))  # facts: built-in persona
    graph.add_node("dispatch_action", _cheap_node("dispatch_action", dispatch_action))
    act = generator.actor  # clear robot commands; it also settles the calls generate_response makes
    graph.add_node("act", _node("act", act.invoke, act.ainvoke))
    facts = _facts_nodes(store, settings, now, chat_model if degraded_reason is None else None)
    graph.add_node("generate_response", _generate_node(generator, facts))
    graph.add_node("finalize", _cheap_node("finalize", make_finalize(settings.memory_max_turns)))
    graph.add_edge(START, "process_input")
    graph.add_conditional_edges("process_input", _after_input, ["dispatch_action", "finalize"])
    graph.add_conditional_edges("dispatch_action", _after_action, ["act", "generate_response", "finalize"])
    graph.add_conditional_edges("act", _after_act, ["generate_response", "finalize"])
    graph.add_edge("generate_response", "finalize")
    if facts is None:
        graph.add_edge("finalize", END)
    else:
        graph.add_node("remember", _node("remember", facts.remember, facts.aremember))
        graph.add_edge("finalize", "remember")
        graph.add_edge("remember", END)
    # Traces carry the model name from the start; finalize adds the turn's outcome (nodes/finalize.py).
    return graph.compile(checkpointer=checkpointer, store=store, name="naila").with_config(
        metadata={"model_name": _model_label(chat_model)}
    )


def _facts_nodes(
    store: BaseStore | None, settings: NailaSettings, now: Callable[[], datetime], chat_model: BaseChatModel | None
) -> FactsNodes | None:
    if store is None or settings.max_user_facts == 0:
        return None
    return FactsNodes(
        UserFacts(store, max_facts=settings.max_user_facts),
        today=lambda: now().date(),
        extraction=settings.fact_extraction,
        chat_model=chat_model,
    )


def _generate_node(generator: ResponseGenerator, facts: FactsNodes | None) -> Runnable:
    """generate_response; with facts, the device's facts are read first: a question they answer ("what's my
    parrot called?") is answered from them (:mod:`nodes.recall`), any other turn's prompt shows them, and the
    turn's state keeps them for the next turn's prefill."""
    if facts is None:
        return _node("generate_response", generator.invoke, generator.ainvoke)

    def known_state(state: dict[str, Any], known: list[Fact] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        told = list(state.get("user_facts") or []) if known is None else [f.sentence() for f in known]
        text = state.get("text") or ""
        answer = forget_answer(text) or (recall_answer(text, known) if known is not None else None)
        if answer is None:
            return {**state, "user_facts": told}, {}
        return state, {
            "response_text": answer,
            "response_source": "action",
            "finish_reason": "stop",
            "user_facts": told,
        }

    def generate(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        turn, recalled = known_state(state, facts.recall(state))
        return recalled or {**generator.invoke(turn, config), "user_facts": turn["user_facts"]}

    async def agenerate(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        turn, recalled = known_state(state, await facts.arecall(state))
        return recalled or {**await generator.ainvoke(turn, config), "user_facts": turn["user_facts"]}

    return _node("generate_response", generate, agenerate)


def make_generator(
    chat_model: BaseChatModel | None,
    settings: NailaSettings,
    *,
    persona: str | None = None,
    clock: Callable[[], datetime] | None = None,
    degraded_reason: str | None = None,
) -> ResponseGenerator:
    """The generate_response node's object; pass it to :func:`build_graph` to keep a handle on it."""
    return ResponseGenerator(
        chat_model,
        persona=persona if persona is not None else load_persona(settings.system_prompt_file),
        clock=clock or _settings_clock(settings),
        max_turns=settings.max_turns,
        degraded_reason=degraded_reason,
        robot_tools=settings.robot_tools,
    )


def _settings_clock(settings: NailaSettings) -> Callable[[], datetime]:
    """Now in NAILA_TIMEZONE (the machine's zone when unset)."""
    zone = settings.zone()
    return lambda: local_now(zone)


def _model_label(chat_model: BaseChatModel | None) -> str:
    if chat_model is None:
        return "none"
    return chat_model.model_name if isinstance(chat_model, LocalModel) else type(chat_model).__name__


def turn_input(
    text: str,
    *,
    device_id: str,
    task_id: str | None = None,
    input_type: str = "text",
    confidence: float | None = None,
) -> dict[str, Any]:
    """The input of one turn."""
    return {
        "raw_text": storable_text(text),  # checkpointed before process_input: must be storable already
        "device_id": device_id,
        "task_id": task_id,
        "input_type": input_type,
        "confidence": confidence,
    }


def turn_config(thread_id: str, **metadata: Any) -> RunnableConfig:
    """Config of one turn: the memory thread plus tracing metadata (``device_id``, ``task_id`` …).

    The trace is named ``naila_turn`` and tagged ``naila`` and ``device:<id>``; the outcome of the turn
    (intent, source, fallback) is added by finalize once it is known.
    """
    tags = ["naila"]
    if metadata.get("device_id"):
        tags.append(f"device:{metadata['device_id']}")
    return {
        "configurable": {"thread_id": thread_id},
        "run_name": "naila_turn",
        "metadata": {"thread_id": thread_id, **metadata},
        "tags": tags,
    }
