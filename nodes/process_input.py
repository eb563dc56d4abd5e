"""process_input: normalise the text, detect the intent, and answer unusable input right away."""

from __future__ import annotations

from typing import Any

from naila_graph.settings import NailaSettings
from nodes.intent import detect_intent, normalize_text
from nodes.pattern_responder import repeat_request


def make_process_input(settings: NailaSettings) -> Any:
    def process_input(state: dict[str, Any]) -> dict[str, Any]:
        from naila_graph.state import TURN_DEFAULTS

        update: dict[str, Any] = dict(TURN_DEFAULTS)
        raw = state.get("raw_text") or ""
        text, truncated = normalize_text(raw, settings.max_input_chars)
        update.update(text=text, truncated=truncated)
        confidence = state.get("confidence")
        if not text:
            update.update(
                response_text=repeat_request(),
                response_source="pattern",
                fallback_reason="empty_input",
                finish_reason="stop",
            )
            return update
        if confidence is not None and confidence < settings.confidence_floor:
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
