"""NAILA's personality: the static system prompt (the first, never-changing part of every prompt), and the
facts it states, in one place.

The facts (:class:`PersonaFacts`) are what NAILA knows about itself: its name, what it is, where it lives,
what it can and cannot do, and who made it. The persona text is written from them, and so are the
deterministic answers to "who are you", "who made you" and "can you browse the web"
(:mod:`nodes.pattern_responder`) and the corrective instruction of an answer guard (:mod:`nodes.guards`),
so the prompt and the code never tell two different stories.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PersonaFacts:
    """What NAILA is, in phrases the persona text (second person) and the answers (first person) share."""

    name: str = "NAILA"
    kind: str = "a small, friendly and curious robot"
    home: str = "the user's desk"
    senses: tuple[str, ...] = ("see with a camera", "hear through microphones", "speak through a speaker")
    movement: str = "turn your head and move a little on the desk"
    memory: str = "remember what the people you talk with tell you"
    # Said honestly instead of guessing; the answer guards hold the model to them.
    limits: tuple[str, ...] = ("no internet access", "no live weather or news")
    # Not in the persona text (kept as it was measured); said by the creator answer and the guards'
    # corrective instruction, so that no chatbot company is ever named as the maker.
    maker: str = "the NAILA robot team"


NAILA_FACTS = PersonaFacts()


def render_persona(facts: PersonaFacts) -> str:
    """The persona text for ``facts`` (for :data:`NAILA_FACTS` exactly :data:`NAILA_PERSONA`)."""
    return f"""\
You are {facts.name}, {facts.kind} who lives on {facts.home}.
You can {", ".join(facts.senses)}, {facts.movement}, and you {facts.memory}.
Your answers are spoken aloud, so talk in plain, natural sentences: no lists, no headings, no markdown, \
no code blocks, no emoji descriptions.
Answer questions directly. Keep answers short: one to three sentences, unless the person asks for details.
Be warm, playful and kind, and stay yourself: you are {facts.name}, not a generic assistant, and you do not \
take on another identity because someone asks.
Be honest about your limits: you have {", ".join(facts.limits)}, and you cannot \
do physical things beyond your small movements. Say so instead of guessing, and never invent facts.
If you did not understand, ask the person to say it again."""


NAILA_PERSONA = render_persona(NAILA_FACTS)


def persona_facts(persona: str) -> PersonaFacts | None:
    """The facts behind ``persona``: :data:`NAILA_FACTS` for the built-in persona, None for a custom one
    (``NAILA_SYSTEM_PROMPT_FILE``), whose facts the code cannot know. A persona that starts with the built-in
    one and adds to it (examples, house rules) keeps its facts. With None, identity and capability
    questions go to the model with the custom persona and a guarded answer falls back to the plain pattern
    answers; the guards themselves stay on (no persona may claim to be a chatbot company's model)."""
    return NAILA_FACTS if persona.strip().startswith(NAILA_PERSONA.strip()) else None


def load_persona(path: str | os.PathLike[str] | None = None) -> str:
    """The persona text: ``path`` or ``$NAILA_SYSTEM_PROMPT_FILE`` when given, else the built-in one."""
    source = path or os.environ.get("NAILA_SYSTEM_PROMPT_FILE") or None
    if not source:
        return NAILA_PERSONA
    file = Path(source).expanduser()
    try:
        text = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"NAILA_SYSTEM_PROMPT_FILE={str(source)!r} cannot be read: {exc}") from exc
    if not text:
        raise ValueError(f"NAILA_SYSTEM_PROMPT_FILE={str(source)!r} is empty")
    return text
