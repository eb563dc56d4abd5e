"""Input normalisation and rule-based intent detection."""

from __future__ import annotations

import time

import pytest

from nodes.intent import INTENTS, IntentResult, detect_intent, normalize_text
from nodes.process_input import make_process_input

# ----------------------------------------------------------------------------------------------------
# normalize_text
# ----------------------------------------------------------------------------------------------------


def test_strips_and_collapses_all_whitespace_runs() -> None:
    assert normalize_text("  Hello \n\n\tthere\r\n  friend \u00a0 ", 100) == ("Hello there friend", False)


def test_removes_control_characters() -> None:
    assert normalize_text("he\x00ll\x07o\x1b wor\x7fld\ufeff", 100) == ("hello world", False)


def test_nul_inside_a_word_is_removed_so_every_memory_backend_can_store_the_text() -> None:
    assert normalize_text("hi\u0000there", 100) == ("hithere", False)  # PostgreSQL text refuses U+0000


def test_a_lone_surrogate_becomes_the_replacement_character() -> None:
    # json.loads('"\\ud800"') gives a lone surrogate, which UTF-8 (and so every backend) cannot encode
    assert normalize_text("hi \ud800 there \udcff", 100) == ("hi \ufffd there \ufffd", False)


def test_a_surrogate_pair_becomes_the_character_it_encodes() -> None:
    assert normalize_text("smile \ud83d\ude00", 100) == ("smile 😀", False)


@pytest.mark.parametrize("code", [*range(0x20), 0x7F, 0xD800, 0xDBFF, 0xDC00, 0xDFFF])
def test_normalised_text_is_utf8_and_free_of_c0_controls(code: int) -> None:
    text, _ = normalize_text(f"a{chr(code)}b {chr(code)}", 100)
    text.encode("utf-8")  # raises for a surrogate
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text), ascii(text)


def test_process_input_stores_only_the_storable_raw_text() -> None:
    process_input = make_process_input(max_input_chars=100, confidence_floor=0.5)
    update = process_input({"raw_text": "hi\u0000there \ud800", "confidence": 0.1})
    assert update["raw_text"] == "hithere \ufffd" and update["text"] == "hithere \ufffd"
    assert update["fallback_reason"] == "low_confidence"


def test_keeps_emoji_sequences_intact() -> None:
    text = "Family 👨\u200d👩\u200d👧 and thumbs 👍🏽 and flag 🏳️\u200d🌈"
    assert normalize_text(text, 100) == (text, False)


@pytest.mark.parametrize("text", ["¿Qué hora es?", "Привет, как дела?", "こんにちは", "مرحبا", "नमस्ते"])
def test_keeps_non_latin_scripts(text: str) -> None:
    assert normalize_text(text, 100) == (text, False)


def test_text_within_the_limit_is_not_truncated() -> None:
    assert normalize_text("exactly ten", 11) == ("exactly ten", False)


def test_long_text_is_cut_at_a_word_boundary() -> None:
    assert normalize_text("one two three four", 10) == ("one two", True)


def test_cut_that_falls_on_a_space_keeps_the_whole_last_word() -> None:
    assert normalize_text("one two three", 7) == ("one two", True)


def test_a_single_long_word_is_cut_hard() -> None:
    assert normalize_text("a" * 50, 10) == ("a" * 10, True)


def test_hard_cut_does_not_split_an_emoji_sequence() -> None:
    text, truncated = normalize_text("👍🏽" * 10, 5)
    assert truncated
    assert text == "👍🏽👍🏽"


def test_whitespace_collapse_happens_before_measuring() -> None:
    assert normalize_text("a" + " " * 100 + "b", 3) == ("a b", False)


def test_huge_input_is_truncated_quickly() -> None:
    text = ("word " * 40_000)[:200_000]
    start = time.perf_counter()
    result, truncated = normalize_text(text, 4000)
    assert time.perf_counter() - start < 1.0
    assert truncated
    assert len(result) <= 4000
    assert result.endswith("word")


def test_empty_and_whitespace_only_input_give_empty_text() -> None:
    assert normalize_text(" \n\t ", 10) == ("", False)


def test_max_chars_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        normalize_text("hi", 0)


# ----------------------------------------------------------------------------------------------------
# detect_intent: each intent
# ----------------------------------------------------------------------------------------------------


def _intent(text: str) -> str:
    return detect_intent(text).intent


@pytest.mark.parametrize(
    "text",
    [
        "what time is it",
        "What's the time?",
        "what’s the time",
        "Do you know the time in Paris?",
        "could you tell me the time please",
        "What time?",
        "hi, what time is it?",
    ],
)
def test_time_questions_are_time_queries(text: str) -> None:
    assert _intent(text) == "time_query"


@pytest.mark.parametrize(
    "text",
    [
        "will it rain tomorrow",
        "What's the weather like?",
        "Is it going to snow tonight?",
        "do I need an umbrella today",
        "how cold is it outside",
        "Hey NAILA, what's the weather like?",
    ],
)
def test_weather_questions_are_weather_queries(text: str) -> None:
    assert _intent(text) == "weather_query"


@pytest.mark.parametrize(
    "text", ["hello", "Hi there!", "good morning", "hey NAILA", "Hallo", "hi, how are you?", "Good evening, robot."]
)
def test_greetings_are_greetings(text: str) -> None:
    assert _intent(text) == "greeting"


@pytest.mark.parametrize("text", ["thanks", "Thank you so much!", "cheers", "that was great, thank you", "thx naila"])
def test_thanks_are_gratitude(text: str) -> None:
    assert _intent(text) == "gratitude"


@pytest.mark.parametrize("text", ["bye", "Goodbye!", "see you later", "good night", "bye bye NAILA", "ok, bye!"])
def test_farewells_are_goodbyes(text: str) -> None:
    assert _intent(text) == "goodbye"


def test_thanks_followed_by_bye_is_a_goodbye() -> None:
    assert _intent("thanks, bye!") == "goodbye"


@pytest.mark.parametrize(
    "text",
    [
        "Why is the sky blue?",
        "how do magnets work",
        "Can you tell me a joke",
        "Should I learn Python",
        "the capital of France is?",
        "¿Qué hora es?",
    ],
)
def test_questions_are_questions(text: str) -> None:
    assert _intent(text) == "question"


@pytest.mark.parametrize("text", ["tell me a joke", "I like turtles", "Make me a sandwich."])
def test_anything_else_is_general(text: str) -> None:
    assert _intent(text) == "general"


# ----------------------------------------------------------------------------------------------------
# detect_intent: word boundaries and priorities
# ----------------------------------------------------------------------------------------------------


def test_sometimes_is_not_a_time_query() -> None:
    assert _intent("sometimes I sing") == "general"


def test_having_a_great_time_is_not_a_time_query() -> None:
    assert _intent("I had a great time today") == "general"


def test_this_does_not_contain_the_greeting_hi() -> None:
    assert _intent("this is fun") == "general"


def test_a_name_starting_with_hi_is_not_a_greeting() -> None:
    assert _intent("Hilary is my friend") == "general"


def test_thanksgiving_is_not_gratitude() -> None:
    assert _intent("thanksgiving dinner recipe") == "general"


def test_no_thanks_is_not_gratitude() -> None:
    assert _intent("no thanks") != "gratitude"


def test_cheers_inside_a_sentence_is_not_gratitude() -> None:
    assert _intent("the crowd cheers when the team scores a goal") == "general"


def test_talking_about_the_weather_without_asking_is_not_a_weather_query() -> None:
    assert _intent("I really love this kind of weather in spring") == "general"


def test_greeting_followed_by_a_long_statement_is_not_a_greeting() -> None:
    assert _intent("hello I want to tell you about my very long day at work") == "general"


def test_greeting_followed_by_a_long_question_is_a_question() -> None:
    assert _intent("Hello, can you explain how photosynthesis works in plants?") == "question"


def test_time_wins_over_question() -> None:
    assert detect_intent("What time is it?").intent == "time_query"


def test_weather_wins_over_question() -> None:
    assert detect_intent("Will it rain tomorrow?").intent == "weather_query"


def test_thanks_with_a_following_question_is_a_question() -> None:
    assert _intent("thanks! can you also help me with my math homework?") == "question"


def test_matching_is_case_insensitive() -> None:
    assert _intent("WHAT TIME IS IT") == "time_query"


# ----------------------------------------------------------------------------------------------------
# detect_intent: confidence and robustness
# ----------------------------------------------------------------------------------------------------


def test_empty_text_is_general_with_zero_confidence() -> None:
    assert detect_intent("   ") == IntentResult("general", 0.0)


def test_general_has_confidence_one_half() -> None:
    assert detect_intent("I like turtles") == IntentResult("general", 0.5)


def test_whole_utterance_greeting_is_very_confident() -> None:
    assert detect_intent("hello") == IntentResult("greeting", 0.95)


def test_greeting_at_the_start_of_a_longer_sentence_is_less_confident() -> None:
    assert detect_intent("hi, how are you?").confidence < detect_intent("hi there").confidence


def test_question_mark_and_question_word_together_are_more_confident_than_either() -> None:
    both = detect_intent("Why is the sky blue?").confidence
    assert both > detect_intent("the sky is blue?").confidence
    assert both > detect_intent("why is the sky blue").confidence


@pytest.mark.parametrize(
    "text",
    ["🎉🎉🎉", "👋", "¿Qué hora es?", "Hallo, wie geht's?", "你好", "????", "...", "a" * 5000, "\x00\x01"],
)
def test_any_input_gives_a_known_intent_and_confidence_in_range(text: str) -> None:
    result = detect_intent(text)
    assert result.intent in INTENTS
    assert 0.0 <= result.confidence <= 1.0


def test_result_is_immutable() -> None:
    result = detect_intent("hello")
    with pytest.raises(AttributeError):
        result.intent = "general"  # type: ignore[misc]


@pytest.mark.parametrize(
    "text",
    [
        "Turn your head to the left.",
        "Please make your lights blue",
        "Naila, smile!",
        "Look to the right!",
        "look up",
        "Drive forward 10 centimetres",
        "Move back a bit",
        "turn around",
        "Stop!",
        "Could you turn your head a little?",
        "Show me a happy face",
    ],
)
def test_clear_commands_to_the_body_are_robot_commands(text: str) -> None:
    assert detect_intent(text).intent == "robot_command"


@pytest.mark.parametrize(
    "text",
    [
        "What colour are your lights?",
        "Tell me about turning points in history",
        "Could you look up when the museum opens?",
        "Let's go back to the story",
        "Go forward to the next chapter",
        "Look over my essay please",
        "Stop talking about cats",
        "I will look up the answer",
    ],
)
def test_phrases_that_only_sound_like_commands_are_not(text: str) -> None:
    assert detect_intent(text).intent != "robot_command"
