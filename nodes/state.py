"""The graph state. Every key a node writes is declared here (undeclared keys are dropped).

It sits with the nodes (they write it) so that no node imports the orchestrator above them.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.graph import MessagesState

ResponseSource = Literal["llm", "pattern", "action"]


class NailaState(MessagesState, total=False):
    """Conversation history (``messages``, persisted per thread) plus the fields of the current turn."""

    device_id: str
    task_id: str | None
    input_type: str  # "stt" | "text"
    raw_text: str
    text: str  # normalised
    truncated: bool
    confidence: float | None  # STT confidence of the input
    intent: str
    intent_confidence: float
    response_text: str
    response_source: ResponseSource | None
    fallback_reason: str | None
    finish_reason: str | None
    expects_reply: bool
    metrics: dict[str, Any]
    errors: list[str]
    actions: list[str]  # robot actions taken this turn, one line each (nodes/act.py)
    commands: list[dict[str, Any]]  # their naila/command/request commands
    persona_topic: str | None  # a question about NAILA answered from the persona's facts (nodes/intent.py)
    user_facts: list[str]  # the device's facts about the person, third person (naila_graph/user_facts.py)
    facts_changed: list[str]  # the facts this turn's message stored or removed
    tool_calls: list[dict[str, Any]]  # the executed calls ({name, args, id}), stored in memory by finalize


# Reset at the start of every turn so nothing of the previous turn leaks into this one.
TURN_DEFAULTS: dict[str, Any] = {
    "text": "",
    "truncated": False,
    "intent": "general",
    "intent_confidence": 0.0,
    "response_text": "",
    "response_source": None,
    "fallback_reason": None,
    "finish_reason": None,
    "expects_reply": False,
    "metrics": {},
    "errors": [],
    "actions": [],
    "commands": [],
    "persona_topic": None,
    "facts_changed": [],
    "tool_calls": [],
}
