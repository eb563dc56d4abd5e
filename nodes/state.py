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
}
