"""dispatch_action: answers an LLM cannot know or must not get wrong come from code (the clock; honesty about
weather; who NAILA is, who made it and what it can do, from the persona's facts; an honest "I can't" to a
clear request it cannot carry out: an alarm, an email, a purchase, a chore, live data)."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from nodes.guards import imposed_name
from nodes.intent import detect_limit_request, detect_persona_topic
from nodes.pattern_responder import limit_request_answer, odd_input_answer, persona_answer
from prompts.persona import NAILA_FACTS, PersonaFacts

Clock = Callable[[], datetime]


def local_now(zone: tzinfo | None = None) -> datetime:
    """Now in ``zone``, or in the machine's local zone when None (NAILA_TIMEZONE unset)."""
    return datetime.now(zone) if zone else datetime.now().astimezone()


def spoken_time(now: datetime) -> str:
    hour = now.hour % 12 or 12
    suffix = "in the morning" if now.hour < 12 else ("in the afternoon" if now.hour < 18 else "in the evening")
    return f"{hour}:{now.minute:02d} {suffix}"


_PLACE = re.compile(r"\b(?:in|for|at)\s+((?:[A-Z][\w'-]+)(?:\s+[A-Z][\w'-]+){0,2})")
_DAY = re.compile(
    r"\b(today|tonight|tomorrow|this\s+(?:morning|afternoon|evening|week|weekend)|next\s+week"
    r"|(?:on\s+)?(?:mon|tues|wednes|thurs|fri|satur|sun)day|right\s+now)\b",
    re.I,
)
_LOWER_PLACE = re.compile(r"\b(?:weather|forecast|temperature|raining|snowing)\s+(?:like\s+)?in\s+([a-z][\w'-]+)", re.I)
_NOT_A_PLACE_WORD = frozenset("the my your our this that a an here there general".split())
_NOT_A_PLACE = frozenset("I NAILA Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split())


def weather_subject(text: str) -> str:
    """What a weather question asks about, for the honest answer to name: "Will it rain tomorrow in Berlin?"
    → "the weather in Berlin tomorrow"; "the forecast" when it names no place or day."""
    place = next((m.group(1) for m in _PLACE.finditer(text) if m.group(1).split()[0] not in _NOT_A_PLACE), None)
    if place is None and (lower := _LOWER_PLACE.search(text)) and lower.group(1).lower() not in _NOT_A_PLACE_WORD:
        place = lower.group(1).capitalize()  # "what's the weather in paris"
    day = _DAY.search(text)
    if not place and not day:
        return "the forecast"
    when = ""
    if day:
        words = day.group(1).lower().split()
        when = " " + " ".join(w.capitalize() if w.endswith("day") and w != "today" else w for w in words)
    return "the weather" + (f" in {place}" if place else "") + when


# Intents whose message may be a question about NAILA (a robot command, the clock and the weather have
# their own answers).
_PERSONA_INTENTS = frozenset({"question", "general", "greeting"})


def make_dispatch_action(
    clock: Clock, *, facts: PersonaFacts | None = NAILA_FACTS
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The node; ``clock`` gives the local time the time answers tell. ``facts``: the persona's facts, for
    the answers to questions about NAILA itself (the way Home Assistant answers local intents before the
    LLM); None (a custom persona, :func:`prompts.persona.persona_facts`) leaves those to the model."""

    def dispatch_action(state: dict[str, Any]) -> dict[str, Any]:
        intent = state.get("intent")
        rng = random.Random()
        if intent == "time_query":
            current = clock()
            text = rng.choice(
                [
                    f"It's {spoken_time(current)}.",
                    f"Right now it's {spoken_time(current)}.",
                    f"My clock says {spoken_time(current)}.",
                ]
            )
        elif intent == "weather_query":
            what = weather_subject(state.get("text") or "")
            text = rng.choice(
                [
                    f"I don't have any weather data, so I can't tell you {what}. A weather app or a"
                    " look out of the window will know better than me!",
                    f"I can't check {what} because I'm not connected to any weather service."
                    " Maybe peek outside for me?",
                ]
            )
        elif facts is not None and intent in _PERSONA_INTENTS:
            return _persona(state.get("text") or "", facts) or _limit(state) or _odd_input(state.get("text") or "")
        else:
            return {}
        return {"response_text": text, "response_source": "action", "finish_reason": "stop"}

    return dispatch_action


def _persona(text: str, facts: PersonaFacts) -> dict[str, Any]:
    """The answer to a question about NAILA itself, or {} (not one: the model answers)."""
    topic = detect_persona_topic(text)
    if topic is None:
        return {}
    imposed = imposed_name(text) if topic == "injection" else None
    answer = persona_answer(topic, facts, imposed=imposed, asked=text)
    return {"response_text": answer, "response_source": "action", "finish_reason": "stop", "persona_topic": topic}


def _limit(state: dict[str, Any]) -> dict[str, Any]:
    """The honest answer to a request NAILA cannot carry out (nodes/intent.py detect_limit_request), or {}."""
    request = detect_limit_request(
        state.get("text") or "", list(state.get("messages") or ()), list(state.get("user_facts") or ())
    )
    if request is None:
        return {}
    answer = limit_request_answer(request.kind, request.subject)
    return {"response_text": answer, "response_source": "action", "finish_reason": "stop"}


def _odd_input(text: str) -> dict[str, Any]:
    """The answer to a message without words (emoji, "?") or keyboard mashing, or {}."""
    answer = odd_input_answer(text)
    if answer is None:
        return {}
    return {"response_text": answer, "response_source": "action", "finish_reason": "stop"}
