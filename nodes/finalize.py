"""finalize: speech-first cleaning, the turn stored in memory, and the turn's metrics."""

from __future__ import annotations

import logging
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage

from nodes.pattern_responder import repeat_request
from nodes.robot_tools import tool_turn
from nodes.speech import clean_for_speech, ends_with_question, split_sentences
from prompts.templates import group_turns

logger = logging.getLogger(__name__)


def speakable(text: str) -> str:
    """The final answer: cleaned sentence by sentence, exactly as the stream publishes it."""
    return " ".join(speakable_sentences(text))


def speakable_sentences(text: str) -> list[str]:
    """The sentences of ``text`` cleaned for speech; those that clean to nothing are left out."""
    cleaned = (clean_for_speech(s) for s in split_sentences(text))
    return [s for s in cleaned if s]


def make_finalize(memory_max_turns: int) -> Any:
    """finalize with the conversation bounded to the newest ``memory_max_turns`` turns (NAILA_MEMORY_MAX_TURNS)."""

    def finalize_bounded(state: dict[str, Any]) -> dict[str, Any]:
        update = finalize(state)
        if "messages" in update:
            update["messages"] = [
                *forget_oldest(state.get("messages") or [], memory_max_turns - 1),
                *update["messages"],
            ]
        return update

    finalize_bounded.__name__ = "finalize"
    return finalize_bounded


def forget_oldest(messages: list[BaseMessage], keep_turns: int) -> list[RemoveMessage]:
    """Removals that leave the newest ``keep_turns`` turns of ``messages``.

    Without a bound every turn would load and write the whole conversation ever held: turn time and the
    database would grow with the conversation's age (docs/PERFORMANCE.md).
    A turn is a user message and what followed it (the robot's tool calls and their results, the answer),
    so the cut falls on a user message and a call is never kept without its result.
    """
    turns = group_turns(messages)
    excess = len(turns) - max(0, keep_turns)
    if excess <= 0:
        return []
    return [RemoveMessage(id=m.id) for turn in turns[:excess] for m in turn if m.id is not None]


def finalize(state: dict[str, Any]) -> dict[str, Any]:
    text = speakable(state.get("response_text") or "")
    source = state.get("response_source") or "pattern"
    reason = state.get("fallback_reason")
    if not text:  # e.g. an action or pattern answer that cleaned to nothing
        text, source, reason = repeat_request(), "pattern", reason or "empty_output"
    metrics = {**(state.get("metrics") or {}), "source": source}
    update: dict[str, Any] = {
        "response_text": text,
        "response_source": source,
        "fallback_reason": reason,
        "finish_reason": state.get("finish_reason") or "stop",
        "expects_reply": ends_with_question(text),
        "metrics": metrics,
    }
    user_text = state.get("text") or ""
    if user_text:  # every answered turn is stored: the user's message, the robot's actions, the answer
        extra: dict[str, Any] = {"task_id": state.get("task_id")} if state.get("task_id") else {}
        actions = list(state.get("actions") or [])
        if actions:  # what the robot did, one line each (for listings); the calls themselves come before
            extra["actions"] = actions
        calls = list(state.get("tool_calls") or [])
        done = tool_turn(calls, [f"Done: {line}." for line in actions]) if len(calls) == len(actions) else []
        update["messages"] = [
            HumanMessage(content=user_text),
            *done,
            AIMessage(content=text, response_metadata={"source": source}, additional_kwargs=extra),
        ]
    annotate_trace(trace_outcome(state, update))
    return update


def trace_outcome(state: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """The turn's outcome as trace metadata: what one filters traces by (intent, source, fallbacks)."""
    outcome = {
        "intent": state.get("intent"),
        "response_source": update["response_source"],
        "fallback_reason": update["fallback_reason"],
        "finish_reason": update["finish_reason"],
    }
    guards = (update.get("metrics") or {}).get("guards")
    if guards:  # the answer guards that fired (nodes/guards.py): regenerated, or a persona answer
        outcome["guards"] = list(guards)
    model_name = (update.get("metrics") or {}).get("model_name")
    if model_name:  # the loaded model's own name (the graph's label may be a file stem)
        outcome["model_name"] = model_name
    return outcome


def annotate_trace(outcome: dict[str, Any]) -> None:
    """Add ``outcome`` to the metadata of this node's run and of the graph run (``naila_turn``) while they
    are still open, so the patch that closes them sends it; also tags the graph run ``source:<s>``,
    ``intent:<i>`` and ``fallback:<reason>``. A no-op when tracing is off; never fails the turn."""
    try:
        from langchain_core.runnables.config import ensure_config
        from langchain_core.tracers.langchain import LangChainTracer
        from langsmith.run_helpers import get_current_run_tree

        run = get_current_run_tree()  # this node's run: LangChain makes it current while a traced node runs
        if run is None:
            return
        run.metadata.update(outcome)
        tags = [f"source:{outcome['response_source']}", f"intent:{outcome['intent']}"]
        if outcome.get("fallback_reason"):
            tags += ["fallback", f"fallback:{outcome['fallback_reason']}"]
        tags += [f"guard:{name}" for name in outcome.get("guards") or []]
        handlers = getattr(ensure_config().get("callbacks"), "handlers", None) or []
        tracer = next((h for h in handlers if isinstance(h, LangChainTracer)), None)
        # Walk up to the graph run: the first ancestor that is not part of a node (LangGraph marks
        # node runs with ``langgraph_node``); it may itself sit inside a caller's trace.
        parent: Any = run
        while tracer is not None and parent is not None and "langgraph_node" in parent.metadata:
            parent_id = parent.parent_run_id
            parent = tracer.run_map.get(str(parent_id)) if parent_id is not None else None
        if parent is not None and parent is not run:
            parent.metadata.update(outcome)
            parent.tags = list(dict.fromkeys([*(parent.tags or []), *tags]))
    except Exception:
        logger.warning("could not add the turn's outcome to the trace", exc_info=True)
