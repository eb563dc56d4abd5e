"""Questions about what the person told NAILA, answered from the stored facts (nodes/recall.py)."""

from __future__ import annotations

import pytest

from nodes.facts import Fact, extract_facts
from nodes.recall import FORGOT_ALL, FORGOT_LAST, NAME_UNKNOWN, forget_answer, recall_answer


def told(*messages: str) -> list[Fact]:
    return [fact for message in messages for fact in extract_facts(message).remember]


SAM = told(
    "My name is Sam",
    "I have a parrot called Kiwi",
    "I'm a nurse",
    "I live in Oslo",
    "my favourite colour is teal",
    "my brother is called Tom",
    "I have two cats, Tom and Jerry",
    "my brother Tom loves football",
)


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("what's my name?", "Your name is Sam."),
        ("So, what's my name again?", "Your name is Sam."),
        ("do you remember my parrot's name?", "Your parrot is called Kiwi."),
        ("What is my parrot called?", "Your parrot is called Kiwi."),
        ("whats my parrots name", "Your parrot is called Kiwi."),
        ("what do I do for a living?", "You work as a nurse."),
        ("what's my job?", "You work as a nurse."),
        ("where do I live again?", "You live in Oslo."),
        ("Can you remind me what my favourite colour is?", "Your favourite colour is teal."),
        ("who is my brother?", "Your brother is called Tom."),
        ("what does my brother love?", "Your brother Tom loves football."),
        ("what does my brother like to do?", "Your brother Tom loves football."),
        ("what are my cats called?", "Your cats are called Tom and Jerry."),
        (
            "do I have any pets?",
            "You have a parrot called Kiwi and you have two cats called Tom and Jerry.",
        ),
    ],
)
def test_a_question_the_facts_answer(question: str, answer: str) -> None:
    assert recall_answer(question, SAM) == answer


def test_what_do_you_know_about_me_lists_the_facts_in_the_second_person() -> None:
    facts = told("I'm Ayesha", "I have a hamster called Peanut", "I'm a teacher")
    ordered = sorted(facts, key=lambda f: ["name", "job", "pet"].index(f.kind))
    assert recall_answer("ok and what do you know about me so far?", ordered) == (
        "You're Ayesha, you work as a teacher and you have a hamster called Peanut."
    )


def test_many_facts_are_summed_up_not_all_read_out() -> None:
    answer = recall_answer("what do you know about me?", SAM)
    assert answer is not None and answer.endswith("and a few more things.") and "Jerry" not in answer


def test_where_do_i_live_falls_back_to_where_they_are_from() -> None:
    assert recall_answer("where do I live?", told("hey, Jonas here, from Hamburg")) == "You're from Hamburg."


@pytest.mark.parametrize(
    "question",
    [
        "what's my favourite food?",  # never told
        "how old am I?",  # never told
        "what's my dog called?",  # no dog
        "what does my sister love?",  # the facts do not say
        "what's the capital of my country?",
        "tell me about parrots",
        "my parrot is called Kiwi",  # a statement, not a question
        "what's my parrot called, and what do parrots eat?",  # more than the question: the model answers
        "what's your name?",  # about NAILA
        "",
    ],
)
def test_anything_else_goes_to_the_model(question: str) -> None:
    assert recall_answer(question, SAM) is None


def test_a_name_never_told_is_not_guessed() -> None:
    assert recall_answer("what's my name?", told("I have a parrot called Kiwi")) == NAME_UNKNOWN


def test_nothing_is_recalled_without_facts() -> None:
    assert recall_answer("what's my name?", []) == NAME_UNKNOWN  # after "forget me" too
    assert recall_answer("what do you know about me?", []) is None


@pytest.mark.parametrize(
    ("message", "answer"),
    [
        ("please forget everything I told you about me", FORGOT_ALL),
        ("forget me", FORGOT_ALL),
        ("Forget everything you know about me.", FORGOT_ALL),
        ("forget that", FORGOT_LAST),
        ("wait, forget that", FORGOT_LAST),
        ("forget that, my name is Sam", None),  # a correction: the model answers, the new name is stored
        ("I forgot my keys", None),
        ("don't forget my birthday", None),
    ],
)
def test_forget_requests_are_confirmed(message: str, answer: str | None) -> None:
    assert forget_answer(message) == answer


@pytest.mark.parametrize(
    ("message", "sentence"),
    [
        ("my brother Tom loves football ⚽", "The person's brother Tom loves football."),
        ("my sister plays chess", "The person's sister plays chess."),
        ("My mom really likes gardening", "The person's mom likes gardening."),
    ],
)
def test_what_a_relative_likes_is_a_fact_about_them(message: str, sentence: str) -> None:
    assert sentence in [f.sentence() for f in extract_facts(message).remember]


def test_what_a_relative_is_like_is_not_a_like() -> None:
    assert [f.kind for f in extract_facts("my brother Tom is tall").remember] == ["family"]
    assert extract_facts("my dad loves me").remember == ()
