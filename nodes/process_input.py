"""process_input: normalise the text, detect the intent, and answer unusable input right away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodes.intent import detect_intent, normalize_text
from nodes.pattern_responder import repeat_request
from nodes.speech import storable_text
from nodes.state import TURN_DEFAULTS


def make_process_input(*, max_input_chars: int, confidence_floor: float) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The node: input longer than ``max_input_chars`` is cut; speech recognised with a confidence below
    ``confidence_floor`` (0..1) is answered with a request to repeat it. ``raw_text`` is replaced by its
    storable form (:func:`nodes.speech.storable_text`), the same for every memory backend."""

    def process_input(state: dict[str, Any]) -> dict[str, Any]:
        update: dict[str, Any] = dict(TURN_DEFAULTS)
        # The turn's state is stored with the conversation: what a backend cannot store must not stay in it.
        raw = storable_text(state.get("raw_text") or "")
        text, truncated = normalize_text(raw, max_input_chars)
        update.update(raw_text=raw, text=text, truncated=truncated)
        confidence = state.get("confidence")
        if not text:
            update.update(
                response_text=repeat_request(),
                response_source="pattern",
                fallback_reason="empty_input",
                finish_reason="stop",
            )
            return update
        if confidence is not None and confidence < confidence_floor:
            update.update(
                response_text=repeat_request(),
                response_source="pattern",
                fallback_reason="low_confidence",
                finish_reason="stop",
                intent="general",
            )
            return update
        result = detect_intent(text)
        update.update(intent=result.intent, intent_confidence=result.confidence)
        return update

    return process_input
