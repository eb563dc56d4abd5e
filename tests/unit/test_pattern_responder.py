"""The pattern responder: NAILA's model-free answers, spoken as plain friendly sentences."""

from __future__ import annotations

import pytest

from nodes.intent import INTENTS
from nodes.pattern_responder import pattern_response, repeat_request
from nodes.speech import clean_for_speech, ends_with_question

SEEDS = range(200)
REASONS = [None, "model_unavailable", "model_not_found", "model_timeout", "context_overflow", "empty_output"]


def _all_answers(intent: str, **kwargs: object) -> set[str]:
    return {pattern_response(intent, seed=seed, **kwargs) for seed in SEEDS}  # type: ignore[arg-type]


def _every_answer() -> set[str]:
    answers: set[str] = set()
    for intent in INTENTS:
        for has_history in (False, True):
            for reason in REASONS:
                for text in ("", "good morning", "good night"):
                    answers |= _all_answers(intent, has_history=has_history, reason=reason, text=text)
    return answers | {repeat_request(seed) for seed in SEEDS}


@pytest.mark.parametrize("intent", INTENTS)
def test_every_intent_has_at_least_three_variants(intent: str) -> None:
    assert len(_all_answers(intent, has_history=False)) >= 3


def test_the_same_seed_gives_the_same_answer() -> None:
    assert pattern_response("general", has_history=False, seed=7) == pattern_response(
        "general", has_history=False, seed=7
    )


def test_unknown_intent_answers_like_general() -> None:
    assert _all_answers("made_up", has_history=False) == _all_answers("general", has_history=False)


def test_first_greeting_does_not_say_again() -> None:
    assert all("again" not in a.lower() for a in _all_answers("greeting", has_history=False))


def test_greeting_with_history_says_hello_again_or_welcome_back() -> None:
    for answer in _all_answers("greeting", has_history=True):
        assert "again" in answer.lower() or "welcome back" in answer.lower()


def test_good_morning_is_answered_with_good_morning() -> None:
    for answer in _all_answers("greeting", has_history=False, text="Good morning NAILA!"):
        assert answer.startswith("Good morning")


@pytest.mark.parametrize("intent", ["time_query", "weather_query"])
def test_time_and_weather_fallbacks_say_she_cannot_check(intent: str) -> None:
    for answer in _all_answers(intent, has_history=False):
        assert "can't" in answer or "don't have" in answer


@pytest.mark.parametrize("intent", ["question", "general"])
def test_question_and_general_fallbacks_are_honest_and_invite_a_retry(intent: str) -> None:
    for answer in _all_answers(intent, has_history=False):
        lower = answer.lower()
        assert "can't" in lower or "not able" in lower or "fuzzy" in lower
        assert "again" in lower or "another way" in lower or "different way" in lower


def test_model_unavailable_mentions_her_thinking_module() -> None:
    for answer in _all_answers("question", has_history=False, reason="model_unavailable"):
        assert "thinking" in answer.lower()


def test_reason_does_not_change_a_greeting() -> None:
    assert _all_answers("greeting", has_history=False, reason="model_unavailable") == _all_answers(
        "greeting", has_history=False
    )


def test_gratitude_is_answered_with_welcome() -> None:
    for answer in _all_answers("gratitude", has_history=True):
        assert any(word in answer.lower() for word in ("welcome", "pleasure", "anytime"))


def test_goodbye_says_goodbye() -> None:
    for answer in _all_answers("goodbye", has_history=True):
        assert any(word in answer.lower() for word in ("bye", "see you", "take care"))


def test_good_night_is_answered_with_good_night() -> None:
    for answer in _all_answers("goodbye", has_history=True, text="good night"):
        assert "night" in answer.lower()


@pytest.mark.parametrize("intent", ["goodbye", "gratitude"])
def test_closing_answers_do_not_ask_anything(intent: str) -> None:
    for answer in _all_answers(intent, has_history=True, text="bye"):
        assert not ends_with_question(answer)


def test_repeat_request_has_at_least_three_variants() -> None:
    assert len({repeat_request(seed) for seed in SEEDS}) >= 3


def test_repeat_request_asks_to_say_it_again() -> None:
    for answer in {repeat_request(seed) for seed in SEEDS}:
        assert ends_with_question(answer)


def test_answers_are_plain_speakable_text() -> None:
    for answer in _every_answer():
        assert clean_for_speech(answer) == answer


def test_answers_contain_no_numbers() -> None:
    for answer in _every_answer():
        assert not any(ch.isdigit() for ch in answer), answer


def test_answers_do_not_leak_the_reason() -> None:
    for answer in _every_answer():
        assert "_" not in answer and "model" not in answer.lower(), answer
