"""Questions about what the person told NAILA, answered from the facts stored for the device.

"What's my parrot called?", "where do I live again?", "what do you know about me?": when the message is
clearly such a question and the device's facts (:mod:`naila_graph.user_facts`) hold the answer, NAILA
answers from them, the way it answers "who made you" from its persona's facts: no model can then forget a
name or say it about itself ("my parrot is Kiwi"). A question the facts cannot answer, or a message that
says more than the question, goes to the model, which sees the same facts in its prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from nodes.facts import Fact, extract_facts

MAX_LISTED = 5  # "what do you know about me": the first facts in the prompt's order, then "and more"

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'"})
_LEAD = (
    r"^(?:(?:hey|hi|ok|okay|so|and|um|uh|hmm|naila|please|quick question|wait|btw|by the way|"
    r"oh|well|now|then|lol|haha)\b[\s,:!-]*)*"
)
_ASK = (  # what may stand before the question proper
    r"(?:(?:do|did|can|could|would) you (?:still )?(?:remember|recall|know|tell me|remind me)(?: again)?"
    r"(?: (?:what|who|where|how|when))?\s*"
    r"|(?:can|could) you remind me(?: of)?\s*|remind me(?: of)?\s*|tell me\s*|i forgot\s*|i forget\s*)?"
)
_TAIL = r"(?:\s+(?:again|then|now|already|naila))*\s*[?.!]*$"
_SYMBOLS = re.compile(r"[^\w\s'?.!,-]+")
_TOLD = r"(?:did i (?:tell|say)|have i told)"


def _q(body: str) -> re.Pattern[str]:
    return re.compile(_LEAD + _ASK + "(?:" + body + ")" + _TAIL)


_IS = r"(?:what's|whats|what is|what was|is|was|s)?"
_SLOT_QUESTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("name", _q(rf"{_IS}\s*my name(?: is)?|who am i|what do you call me|what(?:'s| is) my name")),
    ("age", _q(rf"how old am i|{_IS}\s*my age(?: is)?|how old i am")),
    (
        "home",
        _q(r"where (?:do i live|i live|is my home|i'm living|am i living)|where's my home|what city do i live in"),
    ),
    ("origin", _q(r"where (?:am i from|i'm from|i am from|do i come from|i come from)")),
    (
        "job",
        _q(
            rf"what (?:do i do|i do)(?: for (?:a living|work|my job))?|{_IS}\s*my (?:job|profession|work|occupation)"
            r"(?: is)?|what (?:is|'s) my job|what do i work as|what i do for (?:a living|work)|where do i work"
        ),
    ),
    ("birthday", _q(r"when(?:'s| is) my birthday|when my birthday is|what day is my birthday")),
    ("language", _q(r"what languages? (?:do i speak|i speak)")),
    ("allergy", _q(r"what (?:am i|i am|i'm) allergic to|what are my allergies|do i have (?:any )?allergies")),
)
_THING_NAME = re.compile(
    _LEAD
    + _ASK
    + r"(?:(?:what's|whats|what is|what was|who is|who's|is)\s+)?(?:the name of )?my (?P<what>[a-z][a-z ]{1,30}?)"
    + r"(?:'s name| name|'s called| called| is called| is named)?(?: is)?"
    + _TAIL
)
_THING_CALLED = re.compile(
    _LEAD + r"what (?:is|was|'s|are|were) my (?P<what>[a-z][a-z ]{1,30}?) (?:called|named)" + _TAIL
)
_FAVOURITE = re.compile(
    _LEAD + _ASK + r"(?:(?:what's|whats|what is|what was)\s+)?my (?:favou?rite|fave|fav) (?P<what>[a-z][a-z ]{1,30}?)"
    r"(?: is)?" + _TAIL
)
_RELATIVE_LIKES = re.compile(
    _LEAD
    + _ASK
    + r"what (?:does|did) my (?P<what>[a-z][a-z ]{1,20}?) (?:really )?(?:love|like|play|enjoy|adore|do for fun"
    + r"|like (?:to do|doing)|love (?:to do|doing)|be into|is into)"
    + _TAIL
)
_PETS_QUESTION = _q(r"(?:what|which) pets? (?:do i have|i have)|do i have (?:a |any )?pets?")
_EVERYTHING = _q(
    rf"what (?:do|did) you (?:know|remember) about me(?: so far)?|what (?:else )?{_TOLD} you(?: about (?:me|myself))?"
    r"|what you know about me|everything you know about me|what have you learned about me"
)


def _normalized(text: str) -> str:
    return " ".join(_SYMBOLS.sub(" ", text.translate(_APOSTROPHES).lower()).split())


def _your(text: str) -> str:
    """A fact's value (third person where it speaks of the person) as said to them."""
    return re.sub(r"\btheir\b", "your", re.sub(r"\bthey're\b", "you're", re.sub(r"\bthey\b", "you", text)))


def clause(fact: Fact) -> str:
    """``fact`` said to the person, lower-case start: "your parrot is called Kiwi"."""
    v, d = fact.value, fact.detail
    match fact.kind:
        case "name":
            return f"your name is {v}"
        case "age":
            return f"you're {v} years old"
        case "language":
            return f"you speak {v}"
        case "home":
            return f"you live in {v}"
        case "origin":
            return f"you're from {v}"
        case "job":
            return f"you work {v}"
        case "birthday":
            return f"your birthday is {v}"
        case "family":
            return f"your {d} is called {v}" if v else f"you have a {d}"
        case "family_like":
            return f"your {d} {v}"
        case "pets":
            return f"you have {d} called {v}" if v else f"you have {d}"
        case "pet":
            return f"you have a {d} called {v}" if v else f"you have a {d}"
        case "like":
            return f"your favourite {d} is {v}" if d else f"you like {v}"
        case "dislike":
            return f"you don't like {v}"
        case "allergy":
            return f"you're allergic to {v}"
        case "plan":
            return f"you said you're {_your(v)}" + (f" ({d})" if d else "")
    return f"you told me: {_your(v)}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def _listed(clauses: Sequence[str]) -> str:
    return clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]


def _of_kind(facts: Sequence[Fact], kind: str) -> Fact | None:
    return next((f for f in facts if f.kind == kind and f.value), None)


def _about(facts: Sequence[Fact], what: str) -> str | None:
    """The answer about "my <what>": a pet of that species, a relative, or the pets."""
    what = what.strip()
    singular = what[:-1] if what.endswith("s") else what
    for fact in facts:
        if not fact.value:
            continue
        if fact.kind == "pet" and fact.detail in (what, singular):
            return f"Your {fact.detail} is called {fact.value}."
        if fact.kind == "family" and fact.detail in (what, singular):
            return f"Your {fact.detail} is called {fact.value}."
        if fact.kind == "pets" and (singular in fact.detail or what in ("pets", "pet")):
            return f"Your {fact.detail.split(' ', 1)[-1]} are called {fact.value}."
    if what in ("pet", "pets"):
        return _pets(facts)
    return None


def _pets(facts: Sequence[Fact]) -> str | None:
    pets = [clause(f) for f in facts if f.kind in ("pet", "pets")]
    return _sentence(_listed(pets)) if pets else None


NAME_UNKNOWN = "You haven't told me your name yet. What should I call you?"
FORGOT_ALL = "Okay, I've forgotten everything you told me about yourself. It's a fresh start!"
FORGOT_LAST = "Okay, I've forgotten that."


def forget_answer(text: str) -> str | None:
    """The confirmation of "forget me" / "forget that" (the remember node removes the facts, finalize the
    conversation for "forget me"); None when ``text`` asks for neither, or also states new facts."""
    update = extract_facts(text)
    if update.remember:
        return None
    if update.forget_all:
        return FORGOT_ALL
    return FORGOT_LAST if update.forget_last else None


def recall_answer(text: str, facts: Sequence[Fact]) -> str | None:
    """The answer to ``text`` from ``facts`` (all the device's facts) when ``text`` is only a question about
    them and they answer it, or asks for the name never told; None otherwise (the model answers)."""
    said = _normalized(text)
    if not said or len(said) > 120:
        return None
    if not facts:  # nothing told (or all forgotten): only the name is worth saying so
        return NAME_UNKNOWN if _SLOT_QUESTIONS[0][1].match(said) else None
    if _EVERYTHING.match(said):
        listed = [clause(f) for f in facts[:MAX_LISTED]]
        if facts[0].kind == "name":  # "You're Sam, you have a parrot called Kiwi and …"
            listed[0] = f"you're {facts[0].value}"
        more = " and a few more things" if len(facts) > MAX_LISTED else ""
        return _sentence(_listed(listed) + more)
    for kind, pattern in _SLOT_QUESTIONS:
        if pattern.match(said):
            fact = _of_kind(facts, kind)
            if fact is None and kind == "home":  # "where do I live?" told only "I'm from Hamburg"
                fact = _of_kind(facts, "origin")
            if fact is None and kind == "name":  # the name is always stored when told ("I'm Sam", "Sam here")
                return NAME_UNKNOWN
            return _sentence(clause(fact)) if fact is not None else None
    if match := _RELATIVE_LIKES.match(said):
        relation = match["what"].strip()
        likes = [clause(f) for f in facts if f.kind == "family_like" and f.detail.split(" ")[0] == relation]
        return _sentence(_listed(likes)) if likes else None
    if _PETS_QUESTION.match(said):
        return _pets(facts)
    if match := _FAVOURITE.match(said):
        what = match["what"].strip()
        fact = next((f for f in facts if f.kind == "like" and f.detail in (what, what.rstrip("s"))), None)
        return _sentence(clause(fact)) if fact is not None else None
    if match := _THING_CALLED.match(said) or _THING_NAME.match(said):
        return _about(facts, match["what"])
    return None
