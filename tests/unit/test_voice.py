"""NAILA's voice in the model's words (nodes/voice.py): whose facts, and no generic assistant greeting."""

from __future__ import annotations

import pytest

from nodes.voice import answer_facts, in_voice

FACTS = [
    "The person's name is Marta.",
    "The person has a parrot called Kiwi.",
    "The person works as a teacher.",
    "The person's favourite food is ramen.",
    "The person lives in Oslo.",
    "The person is from Hamburg.",
]


@pytest.mark.parametrize(
    ("answer", "spoken"),
    [
        ("My parrot is Kiwi.", "Your parrot is Kiwi."),
        ("Hi! I'm Marta, nice to meet you.", "Hi! You're Marta, nice to meet you."),
        ("I am Marta.", "You're Marta."),
        ("Hello Marta! Oh, I'm Marta too.", "Hello Marta! Oh, you're Marta too."),
        ("Hello! How can I assist you today?", "Hello! What shall we do today?"),
        ("how may I assist you?", "What shall we do today?"),
        ("I am a teacher, and I love it.", "You're a teacher, and I love it."),
        ("Oh nice, I work as a teacher too!", "Oh nice, you work as a teacher too!"),
        ("So my favourite food is ramen.", "So your favourite food is ramen."),
        ("I'm a robot, not a teacher.", "I'm a robot, not a teacher."),
        ("My favourite food is sunshine.", "My favourite food is sunshine."),
        # unchanged: NAILA's own name, other names, a parrot that is NAILA's own, help without "assist"
        ("I'm NAILA, your desk robot.", "I'm NAILA, your desk robot."),
        ("I'm Martina's friend.", "I'm Martina's friend."),
        ("My favourite bird is the robin.", "My favourite bird is the robin."),
        ("How can I help?", "How can I help?"),
        ("Hi there! You're Nina, and I live in Oslo.", "Hi there! You're Nina, and you live in Oslo."),
        ("I'm from Hamburg too!", "You're from Hamburg too!"),
        ("I live in a desk drawer.", "I live in a desk drawer."),
        # NAILA has no pets, family or bank account: those are the person's, whatever the facts say
        ("I don't know my cat's name.", "I don't know your cat's name."),
        ("My brother Tom loves football.", "Your brother Tom loves football."),
        ("My bank account balance is $1,000.", "Your bank account balance is $1,000."),
        ("I'm NAILA, a robot that lives on the user's desk.", "I'm NAILA, a robot that lives on your desk."),
        ("Hello, I'm NAILA. How can I help you tonight?", "Hello, I'm NAILA. What shall we do tonight?"),
        # NAILA's own body, and friends, stay NAILA's
        ("I can turn my head and change my lights.", "I can turn my head and change my lights."),
        ("Hello, my friend!", "Hello, my friend!"),
        ("My catchphrase is beep.", "My catchphrase is beep."),
    ],
)
def test_the_answer_is_spoken_in_naila_voice(answer: str, spoken: str) -> None:
    assert in_voice(answer, FACTS) == spoken


def test_facts_the_message_states_count_before_they_are_stored() -> None:
    """The first turn: "Hi, I'm Marta" is stored only after the answer, but the answer may already mirror it."""
    facts = answer_facts({"text": "Hi, I'm Marta!", "user_facts": ["The person has a parrot called Kiwi."]})
    assert facts == ["The person has a parrot called Kiwi.", "The person's name is Marta."]
    assert in_voice("Hello! I'm Marta.", facts) == "Hello! You're Marta."
    assert answer_facts({}) == []
