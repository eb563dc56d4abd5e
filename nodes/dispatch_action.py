"""dispatch_action: answers an LLM cannot know come from code (the clock; honesty about weather)."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

Clock = Callable[[], datetime]


def local_now(zone: tzinfo | None = None) -> datetime:
    """Now in ``zone``, or in the machine's local zone when None (NAILA_TIMEZONE unset)."""
    return datetime.now(zone) if zone else datetime.now().astimezone()


def spoken_time(now: datetime) -> str:
    hour = now.hour % 12 or 12
    suffix = "in the morning" if now.hour < 12 else ("in the afternoon" if now.hour < 18 else "in the evening")
    return f"{hour}:{now.minute:02d} {suffix}"


def make_dispatch_action(clock: Clock) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The node; ``clock`` gives the local time the time answers tell."""

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
            text = rng.choice(
                [
                    "I don't have any weather data, so I can't tell you the forecast. A weather app or a"
                    " look out of the window will know better than me!",
                    "I can't check the weather because I'm not connected to any weather service."
                    " Maybe peek outside for me?",
                ]
            )
        else:
            return {}
        return {"response_text": text, "response_source": "action", "finish_reason": "stop"}

    return dispatch_action
