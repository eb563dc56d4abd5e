"""finalize: speech-first cleaning, the turn stored in memory, and the turn's metrics."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage

from nodes.pattern_responder import repeat_request
from nodes.speech import SentenceSplitter, clean_for_speech, ends_with_question


def speakable(text: str) -> str:
    """The final answer: cleaned sentence by sentence, exactly as the stream publishes it."""
    return " ".join(speakable_sentences(text))


def speakable_sentences(text: str) -> list[str]:
    splitter = SentenceSplitter()
    sentences = splitter.feed(text)
    rest = splitter.flush()
    if rest:
        sentences.append(rest)
    cleaned = (clean_for_speech(s) for s in sentences)
    return [s for s in cleaned if s]


def finalize(state: dict[str, Any]) -> dict[str, Any]:
    text = speakable(state.get("response_text") or "")
    source = state.get("response_source") or "pattern"
    reason = state.get("fallback_reason")
    if not text:  # e.g. an action or pattern answer that cleaned to nothing
        text, source, reason = repeat_request(), "pattern", reason or "empty_output"
    metrics = {**(state.get("metrics") or {}), "source": source}
    update: dict[str, Any] = {
        "response_text": text,
        "response_source": source,
        "fallback_reason": reason,
        "finish_reason": state.get("finish_reason") or "stop",
        "expects_reply": ends_with_question(text),
        "metrics": metrics,
    }
    user_text = state.get("text") or ""
    if user_text:  # every answered turn is stored, as a strict user/assistant pair
        update["messages"] = [
            HumanMessage(content=user_text),
            AIMessage(
                content=text,
                response_metadata={"source": source},
                additional_kwargs={"task_id": state.get("task_id")} if state.get("task_id") else {},
            ),
        ]
    return update
