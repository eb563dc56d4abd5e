"""The ChatPromptTemplate and history trimming.

Layout (DESIGN.md decision 2): static persona → facts about the person → history → per-turn guidance →
user message, so the persona, the facts (they change only when the person tells a new one) and the history
form a token prefix that llama.cpp can reuse from one turn to the next.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, trim_messages
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

TokenCounter = Callable[[list[BaseMessage]], int]

INTENT_HINTS = {
    "greeting": "The person is greeting you; greet them back warmly.",
    "gratitude": "The person is thanking you; acknowledge it kindly.",
    "goodbye": "The person is saying goodbye; say goodbye warmly.",
    "question": "",  # the persona's standing rule: answer questions directly
    "time_query": "The person asked about the time.",
    "weather_query": "The person asked about the weather; you have no weather data.",
    "robot_command": (
        "The person asked you to do something with your body: call the robot tool that does it."
        " Pan turns your head left (negative degrees) or right (positive); tilt looks down (negative) or up"
        " (positive)."
    ),
    "general": "",
}


FACTS_HEADER = "What the person you are talking with has told you about themselves (their facts, not yours):"


def facts_messages(sentences: Sequence[str]) -> list[BaseMessage]:
    """The prompt's block of facts about the person (third-person sentences, nodes/facts.py), or nothing.

    A system message of its own right after the persona: the persona's tokens stay the same for everyone,
    and the block changes only when the person tells a new fact, so the saved prompt states (persona, facts,
    history) stay valid from one turn to the next."""
    if not sentences:
        return []
    return [SystemMessage(content="\n".join([FACTS_HEADER, *sentences]))]


def build_prompt(persona: str) -> ChatPromptTemplate:
    """``persona`` is inserted verbatim (braces in it are not template variables); the optional ``facts``
    are :func:`facts_messages`."""
    return ChatPromptTemplate.from_messages(
        [
            SystemMessage(content=persona),
            MessagesPlaceholder("facts", optional=True),
            MessagesPlaceholder("history", optional=True),
            ("system", "{guidance}"),
            ("human", "{input}"),
        ]
    )


def turn_guidance(
    *,
    intent: str,
    now: datetime,
    truncated: bool = False,
    context: str | None = None,
) -> str:
    """Per-turn instructions; they go after the history, never into the persona.

    The tokens here come before the first word of every answer. Most of them are predictable, so they go
    first: the length reminder (small models drift without it; the persona carries the other standing
    rules), then the time, then what depends on this turn's message. The server evaluates the
    predictable start ahead of time (``ResponseGenerator.next_turn_prefix``).
    """
    parts = [
        "Answer in at most three short sentences.",
        f"Current local time: {now.strftime('%A, %d %B %Y, %H:%M')}.",
    ]
    hint = INTENT_HINTS.get(intent, "")
    if hint:
        parts.append(hint)
    if truncated:
        parts.append("The person's message was very long and was cut; you may mention that.")
    if context:
        parts.append(f"Relevant context: {context}")
    return " ".join(parts)


def group_turns(history: Sequence[BaseMessage]) -> list[list[BaseMessage]]:
    """Split history into turns, each starting at a human message."""
    turns: list[list[BaseMessage]] = []
    for message in history:
        if isinstance(message, HumanMessage) or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def select_history(
    history: Sequence[BaseMessage],
    *,
    max_turns: int,
    token_counter: TokenCounter,
    token_budget: int,
) -> list[BaseMessage]:
    """The history to show the model: at most ``max_turns`` turns within ``token_budget`` tokens.

    Oldest turns go first, a block at a time: the cut point moves in steps of ~40 % of
    ``max_turns`` turns, so the kept history (and the prompt prefix) stays the same for many turns
    instead of sliding by one each turn. Turns are never split. ``trim_messages`` with the model's
    own token counter is the final guard (a no-op when the block fits).
    """
    turns = group_turns(history)
    if not turns or token_budget <= 0:
        return []
    block = max(1, math.ceil(max_turns * 0.4))
    start = 0
    while start < len(turns):
        kept = turns[start:]
        if len(kept) <= max_turns and token_counter([m for t in kept for m in t]) <= token_budget:
            break
        start += block
    kept_messages = [m for t in turns[start:] for m in t]
    if not kept_messages:
        return []
    return trim_messages(
        kept_messages,
        max_tokens=token_budget,
        token_counter=token_counter,
        strategy="last",
        start_on="human",
        allow_partial=False,
    )
