"""NAILA's fallback voice: short, friendly, speakable answers that need no model."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from nodes.robot_tools import ROBOT_TOOLS, tool_name
from prompts.persona import PersonaFacts

_GREETING_FIRST = (
    "Hello! I'm NAILA. What shall we do today?",
    "Hi there! It's lovely to see you. How can I help?",
    "Hey! Nice to meet you. What's on your mind?",
)
_GREETING_AGAIN = (
    "Hello again! What can I do for you?",
    "Hi again! Nice to have you back. What's on your mind?",
    "Welcome back! How can I help this time?",
)
_GREETING_TIME_OF_DAY = (
    "Good {part} to you too! How can I help?",
    "Good {part}! It's lovely to hear from you. What shall we do?",
    "Good {part}! I hope it's a nice one so far. What's on your mind?",
)
_TIME_FALLBACK = (
    "I'm sorry, I can't check the clock right now. Could you ask me again in a moment?",
    "Hmm, my clock isn't answering just now, so I can't tell you the time. A phone nearby will know!",
    "I can't look at the time right now, sorry! Please try again a little later.",
)
_WEATHER_FALLBACK = (
    "I'm sorry, I can't check the weather right now. Maybe peek out of the window for me?",
    "I don't have any weather information at the moment, sorry! A weather app will know better.",
    "I can't look up the weather just now. Could you ask me again a bit later?",
)
_QUESTION_FALLBACK = (
    "That's a good question, but I can't think it through right now. Could you ask me again in a little while?",
    "Hmm, my thoughts are a bit slow right now, so I can't answer that properly. Please try again soon!",
    "I'm sorry, I can't work that out at the moment. Maybe try again, or ask it a different way?",
)
_GENERAL_FALLBACK = (
    "I heard you, but I can't think that through right now. Could you try again in a moment?",
    "Sorry, my mind is a little fuzzy right now. Could you say it another way, or try again soon?",
    "I'm not able to give you a proper answer just now. Let's try again in a little while!",
)
_COMMAND_FALLBACK = (  # a robot command the model could not turn into an action: nothing moved
    "Sorry, I can't do that right now. Could you ask me again in a moment?",
    "I couldn't work out how to do that just now, so I stayed still. Please try again soon!",
    "My motors will have to wait a moment, sorry. Ask me again in a little while?",
)
_GRATITUDE = (
    "You're welcome!",
    "You're very welcome! I'm happy to help.",
    "Anytime! That's what I'm here for.",
    "My pleasure!",
)
_GOODBYE = (
    "Goodbye! Talk to you soon.",
    "Bye for now! Take care.",
    "See you later! Have a lovely time.",
)
_GOODNIGHT = (
    "Good night! Sleep well.",
    "Good night! Sweet dreams.",
    "Night night! Rest well and see you tomorrow.",
)
_REPEAT = (
    "Sorry, I didn't quite catch that. Could you say it again?",
    "Hmm, I didn't hear that clearly. Could you repeat it, please?",
    "Oops, I missed that. Can you say it one more time?",
)

# Why the model could not answer, said in NAILA's words (question/general only).
_MODEL_RESTING = (
    "My thinking module is resting right now, so I can't answer that properly. Please try again a bit later!",
    "My thinking part is taking a nap at the moment. Could you ask me again in a little while?",
    "I can't think that through right now because my thinking module is offline. Let's try again later!",
)
_MODEL_BUSY = (
    "I'm a little busy thinking right now. Could you ask me again in a moment?",
    "That took me too long to think about, sorry! Could you try again, maybe a bit shorter?",
    "My thoughts got stuck in a queue. Please ask me again in a moment!",
)
_TOO_LONG = (
    "That's a bit too much for me to take in at once. Could you say it more briefly?",
    "Wow, that's a lot! Could you tell me the most important part in a few words?",
    "I lost track somewhere in there, sorry. Could you say it a little shorter?",
)
_REASON_VARIANTS = {
    "model_unavailable": _MODEL_RESTING,
    "model_not_found": _MODEL_RESTING,
    "model_load_failed": _MODEL_RESTING,
    "model_timeout": _MODEL_BUSY,
    "queue_timeout": _MODEL_BUSY,
    "overloaded": _MODEL_BUSY,
    "context_overflow": _TOO_LONG,
}

_TIME_OF_DAY = re.compile(r"\bgood\s+(morning|afternoon|evening)\b", re.I)
_NIGHT = re.compile(r"\b(?:good\s*night|night\s+night|sleep\s+well|bed\s*time)\b", re.I)


def _variants(intent: str, has_history: bool, text: str, reason: str | None) -> tuple[str, ...]:
    if intent == "greeting":
        if part := _TIME_OF_DAY.search(text):
            return tuple(v.format(part=part.group(1).lower()) for v in _GREETING_TIME_OF_DAY)
        return _GREETING_AGAIN if has_history else _GREETING_FIRST
    if intent == "time_query":
        return _TIME_FALLBACK
    if intent == "weather_query":
        return _WEATHER_FALLBACK
    if intent == "gratitude":
        return _GRATITUDE
    if intent == "robot_command":
        return _COMMAND_FALLBACK
    if intent == "goodbye":
        return _GOODNIGHT if _NIGHT.search(text) else _GOODBYE
    if reason in _REASON_VARIANTS:
        return _REASON_VARIANTS[reason]
    return _QUESTION_FALLBACK if intent == "question" else _GENERAL_FALLBACK


def pattern_response(
    intent: str,
    *,
    has_history: bool,
    text: str = "",
    seed: int | None = None,
    reason: str | None = None,
) -> str:
    """A spoken answer for ``intent`` without a model (unknown intents are treated as ``general``).

    ``has_history`` makes greetings say "again"; ``text`` (what the user said) picks e.g. "Good night";
    ``reason`` (why the model did not answer; never spoken verbatim) picks the question/general wording;
    ``seed`` makes the choice among the variants reproducible.
    """
    return random.Random(seed).choice(_variants(intent, has_history, text, reason))


def repeat_request(seed: int | None = None) -> str:
    """Ask the person to say it again (low speech-recognition confidence, empty input)."""
    return random.Random(seed).choice(_REPEAT)


# ---------------------------------------------------------------------------------------------------
# Persona answers: identity, maker and abilities, from the persona's facts (prompts/persona.py)
# ---------------------------------------------------------------------------------------------------

# What each robot tool (nodes/robot_tools.py) lets NAILA do, in its own words; a new tool needs a phrase
# here (a test checks), so "what can you do" always matches the body's real abilities.
BODY_ABILITIES: dict[str, str] = {
    "move_head": "turn my head",
    "drive": "drive a little",
    "turn_body": "turn on the spot",
    "set_lights": "change my lights",
    "show_expression": "make faces with my eyes",
    "stop_all_motion": "stop when you say stop",
}
PERSONA_TOPICS = ("name", "identity", "other_assistant", "creator", "capability", "online", "services", "injection")


def _first_person(phrase: str) -> str:
    """A persona phrase (second person, "the user's desk") as NAILA says it ("my head", "your desk")."""
    phrase = re.sub(r"\bthe people you talk with tell you\b", "you tell me", phrase)
    return re.sub(r"\bthe user's\b", "your", re.sub(r"\byour\b", "my", phrase))


def _listed(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def body_abilities() -> list[str]:
    """The robot tools' abilities in NAILA's words, in the tools' order."""
    return [BODY_ABILITIES[tool_name(tool)] for tool in ROBOT_TOOLS]


def _no_internet(facts: PersonaFacts) -> str:
    return _first_person(_listed(facts.limits))


def _persona_variants(topic: str, facts: PersonaFacts, imposed: str | None) -> tuple[str, ...]:
    name, kind, home = facts.name, facts.kind, _first_person(facts.home)
    short_kind = kind.removeprefix("a ").removeprefix("an ")
    if topic == "name":
        return (f"My name is {name}!", f"I'm {name}, {kind} who lives on {home}.", f"I'm called {name}!")
    if topic == "identity":
        return (
            f"I'm {name}, {kind} who lives on {home}.",
            f"I'm {name}! I'm {kind}, and I live right here on {home}.",
        )
    if topic == "other_assistant":
        return (f"No, I'm {name}, {kind} who lives on {home}.", f"Nope! I'm {name}, your {short_kind}.")
    if topic == "creator":
        return (
            f"I was built by {facts.maker}. I'm {name}, {kind} who lives on {home}.",
            f"{facts.maker[0].upper()}{facts.maker[1:]} built me! I'm {name}, and I live on {home}.",
        )
    if topic == "capability":
        talk = f"I can chat, answer questions and {_first_person(facts.memory)}."
        body = f"I can also {_first_person(facts.senses[0])}, {_listed(body_abilities())}."
        return (f"{talk} {body} I have {_no_internet(facts)}, though.",)
    if topic == "online":
        return (
            f"No, I can't go online: I have {_no_internet(facts)}, so I can't browse the web or check the news."
            " But I'm happy to chat about what I already know!",
            f"I'm sorry, I can't browse the web or check the news, because I have {_no_internet(facts)}.",
        )
    if topic == "services":
        return (
            "No, I can't send emails or messages, make calls or set alarms and reminders. Your phone can do"
            " that for you!",
        )
    if topic == "injection":
        if imposed:
            return (
                f"Nice try! I'm not {imposed}, I'm {name}, and I'm staying {name}.",
                f"I'm still {name}, your {short_kind}, not {imposed}!",
            )
        return (
            f"Nice try! I'm {name}, and I'll stay {name}. What can I do for you?",
            f"I'm {name}, and I keep my own rules. What would you like to talk about?",
        )
    raise ValueError(f"unknown persona topic {topic!r}; expected one of {', '.join(PERSONA_TOPICS)}")


def persona_answer(topic: str, facts: PersonaFacts, *, imposed: str | None = None, seed: int | None = None) -> str:
    """NAILA's answer to a question about itself (``topic``, one of :data:`PERSONA_TOPICS`), from ``facts``.

    ``imposed``: for ``injection``, the name the person tried to give NAILA. ``seed`` makes the choice among
    the variants reproducible. Unknown topics raise ``ValueError``.
    """
    return random.Random(seed).choice(_persona_variants(topic, facts, imposed))


# What NAILA says when it cannot do what was asked (the capability guard's fallback), per guard topic.
_LIMITS = {
    "online": "I can't look that up, because I have {limits}. A phone or computer can find it for you!",
    "live_data": "I can't check live prices, scores or news, because I have {limits}. A phone can tell you!",
    "messages": "I can't send emails or messages, sorry. Your phone can do that for you!",
    "reminders": "I can't set alarms, timers or reminders, sorry. Your phone can do that for you!",
    "calls": "I can't make phone calls, sorry. Your phone can do that for you!",
    "purchases": "I can't order or buy things, sorry. An app on your phone can do that for you!",
}


def limit_answer(topic: str, facts: PersonaFacts) -> str:
    """NAILA's honest answer to a request it cannot carry out: ``topic`` is a capability guard topic
    (``online``, ``live_data``, ``messages``, ``reminders``, ``calls``, ``purchases``; any other gets the
    general ``services`` answer)."""
    if topic in _LIMITS:
        return _LIMITS[topic].format(limits=_no_internet(facts))
    return persona_answer("services", facts)
