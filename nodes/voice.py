"""NAILA's voice in the model's words: deterministic touches the small models need, applied alike to every
streamed sentence and to the stored answer (each works within a sentence, so both give the same text).

- Whose facts: "My parrot is Kiwi." → "Your parrot is Kiwi.", "I'm Marta" → "You're Marta", "I am a
  teacher" → "You're a teacher", "I live in Oslo" → "you live in Oslo", "my favourite food is ramen" →
  "your favourite food is ramen" when those are
  the person's (:func:`nodes.facts.reattributed` for names); the facts are those stored for the device and
  those the person states in this very message.
- NAILA has no pets, family or bank account: "my cat", "my brother" in its answer are the person's ("your
  cat"), and the persona's "the user's desk", parroted, is "your desk".
- The generic assistant's "How can I assist you today?" (Qwen's default greeting) becomes NAILA's
  "What shall we do today?".
"""

from __future__ import annotations

import re
from typing import Any

from nodes.facts import PETS, RELATIONS, extract_facts, reattributed

_ASSIST = re.compile(
    r"\b(?:How|how) (?:can|may) I (?:assist|be of assistance to|help) you"
    r"(?: today| now| (?P<when>tonight|this (?:morning|afternoon|evening)))?\s*\?"
)
# NAILA is a robot: it has no pets, no family and no bank account, so "my cat" in its answer is the
# person's ("I don't know my cat's name" → "your cat's name"). Friends are left alone ("hello, my friend").
_NOT_ROBOTS = "|".join(
    w
    for w in (*PETS.split("|"), *RELATIONS.split("|"), "pets?", "family", "bank account", "breakfast")
    if "friend" not in w
)
_THEIRS = re.compile(rf"\b([Mm])y (?=(?:{_NOT_ROBOTS})(?:'s|s)?\b)")
_USERS = re.compile(r"\b([Tt])he user's\b")  # the persona's "the user's desk", parroted
_NAME = re.compile(r"^The person's name is (?P<name>[^.]+)\.$")
_JOB = re.compile(r"^The person works as (?P<article>an?) (?P<job>[^.]+)\.$")
_HOME = re.compile(r"^The person lives in (?P<place>[^.]+)\.$")
_ORIGIN = re.compile(r"^The person is from (?P<place>[^.]+)\.$")
_FAVOURITE = re.compile(r"^The person's favourite (?P<what>[^.]+?) is (?P<value>[^.]+)\.$")


def answer_facts(state: dict[str, Any]) -> list[str]:
    """The person's facts an answer may mirror: the device's stored ones and what this message states."""
    stored = list(state.get("user_facts") or [])
    text = state.get("text") or ""
    said = [fact.sentence() for fact in extract_facts(text).remember] if text else []
    return stored + [s for s in said if s not in stored]


def in_voice(text: str, facts: list[str]) -> str:
    """``text`` as NAILA says it (see the module docstring)."""
    out = _ASSIST.sub(lambda m: f"What shall we do {m['when'] or 'today'}?", reattributed(text, facts))
    out = _THEIRS.sub(lambda m: "Your " if m[1] == "M" else "your ", out)
    out = _USERS.sub(lambda m: "Your" if m[1] == "T" else "your", out)
    for sentence in facts:
        if match := _NAME.match(sentence):
            name = re.escape(match["name"])
            out = _to_you(rf"\bI(?:'m| am|’m) (?={name}\b)", "you're ", out)
        elif match := _JOB.match(sentence):
            job = rf"{match['article']} {re.escape(match['job'])}\b"
            out = _to_you(rf"\bI(?:'m| am|’m) (?={job})", "you're ", out)
            out = _to_you(rf"\bI work as (?={job})", "you work as ", out)
        elif match := _HOME.match(sentence):
            out = _to_you(rf"\bI live in (?={re.escape(match['place'])}\b)", "you live in ", out)
        elif match := _ORIGIN.match(sentence):
            out = _to_you(rf"\bI(?:'m| am|’m) from (?={re.escape(match['place'])}\b)", "you're from ", out)
        elif match := _FAVOURITE.match(sentence):
            what, value = re.escape(match["what"]), re.escape(match["value"])
            out = re.sub(
                rf"\b([Mm])y (?=favou?rite {what} is {value}\b)", lambda m: "Your " if m[1] == "M" else "your ", out
            )
    return out


def _to_you(pattern: str, words: str, text: str) -> str:
    """``pattern`` replaced by ``words``, capitalised where a sentence starts."""

    def replace(match: re.Match[str]) -> str:
        before = text[: match.start()].rstrip()
        return words[0].upper() + words[1:] if not before or before[-1] in ".!?" else words

    return re.sub(pattern, replace, text)
