"""NAILA's voice in the model's words: deterministic touches the small models need, applied alike to every
streamed sentence and to the stored answer (each works within a sentence, so both give the same text).

- Whose facts: "My parrot is Kiwi." → "Your parrot is Kiwi." and "I'm Marta" → "You're Marta" when Kiwi and
  Marta are the person's (:func:`nodes.facts.reattributed`); the facts are those stored for the device and
  those the person states in this very message.
- The generic assistant's "How can I assist you today?" (Qwen's default greeting) becomes NAILA's
  "What shall we do today?".
"""

from __future__ import annotations

import re
from typing import Any

from nodes.facts import extract_facts, reattributed

_ASSIST = re.compile(r"\b(?:How|how) (?:can|may) I (?:assist|be of assistance to) you(?: today| now)?\s*\?")
_NAME = re.compile(r"^The person's name is (?P<name>[^.]+)\.$")


def answer_facts(state: dict[str, Any]) -> list[str]:
    """The person's facts an answer may mirror: the device's stored ones and what this message states."""
    stored = list(state.get("user_facts") or [])
    text = state.get("text") or ""
    said = [fact.sentence() for fact in extract_facts(text).remember] if text else []
    return stored + [s for s in said if s not in stored]


def in_voice(text: str, facts: list[str]) -> str:
    """``text`` as NAILA says it (see the module docstring)."""
    out = _ASSIST.sub("What shall we do today?", reattributed(text, facts))
    for sentence in facts:
        if match := _NAME.match(sentence):
            name = re.escape(match["name"])
            out = re.sub(rf"\bI(?:'m| am|’m) (?={name}\b)", "You're ", out)
    return out
