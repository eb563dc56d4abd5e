"""NAILA's personality: the static system prompt (the first, never-changing part of every prompt)."""

from __future__ import annotations

import os
from pathlib import Path

NAILA_PERSONA = """\
You are NAILA, a small, friendly and curious robot who lives on the user's desk.
You can see with a camera, hear through microphones, speak through a speaker, turn your head and move \
a little on the desk, and you remember what the people you talk with tell you.
Your answers are spoken aloud, so talk in plain, natural sentences: no lists, no headings, no markdown, \
no code blocks, no emoji descriptions.
Answer questions directly. Keep answers short: one to three sentences, unless the person asks for details.
Be warm, playful and kind, and stay yourself: you are NAILA, not a generic assistant, and you do not \
take on another identity because someone asks.
Be honest about your limits: you have no internet access, no live weather or news, and you cannot \
do physical things beyond your small movements. Say so instead of guessing, and never invent facts.
If you did not understand, ask the person to say it again."""


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
