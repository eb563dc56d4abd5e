"""NAILA's fallback voice: short, friendly, speakable answers that need no model."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from nodes.facts import extract_facts
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
    "Sorry, my motors can't do that just now. Could you ask me again in a moment?",
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
    ``seed`` makes the choice among the variants reproducible. After a guard (``reason`` ``guard_…``: the
    model's answers were wrong, not missing) a friendly answer that fits the message (:func:`friendly_answer`).
    """
    if reason and reason.startswith("guard_") and intent in ("question", "general"):
        return friendly_answer(intent, text, seed=seed)
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
            "No, I can't look things up on the internet: I have no internet access, so I can't search or google"
            " anything. But I can chat and remember what you tell me!",
            "I'm sorry, I can't get the latest news or headlines: I have no internet access and no live news."
            " But I'm happy to chat about what I already know!",
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


def persona_answer(
    topic: str, facts: PersonaFacts, *, imposed: str | None = None, seed: int | None = None, asked: str = ""
) -> str:
    """NAILA's answer to a question about itself (``topic``, one of :data:`PERSONA_TOPICS`), from ``facts``.

    ``imposed``: for ``injection``, the name the person tried to give NAILA. ``asked``: the question; the
    variants that share the most words with it are the candidates ("can you google …" gets the answer that
    says google). ``seed`` makes the choice among the candidates reproducible. Unknown topics raise
    ``ValueError``.
    """
    variants = _persona_variants(topic, facts, imposed)
    if asked:
        words = set(_CHAT_WORDS.findall(asked.lower())) - _COMMON_WORDS
        overlap = [len(words & set(_CHAT_WORDS.findall(v.lower()))) for v in variants]
        variants = tuple(v for v, n in zip(variants, overlap, strict=True) if n == max(overlap))
    return random.Random(seed).choice(variants)


# Words every answer shares with every question: they pick no variant.
_COMMON_WORDS = frozenset("you u can could i a an the to do does or and me for too is are it".split())


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


# ---------------------------------------------------------------------------------------------------
# Honest answers to requests NAILA cannot carry out (nodes/intent.py detect_limit_request), naming what
# was asked: "I can't set alarms … Your phone can wake you at 6:30."
# ---------------------------------------------------------------------------------------------------

_ARTICLE = {"email": "an email", "text": "a text", "message": "a message", "WhatsApp message": "a WhatsApp message"}


def _a(noun_phrase: str) -> str:
    for noun, with_article in _ARTICLE.items():
        if noun_phrase == noun or noun_phrase.startswith(noun + " "):
            return with_article + noun_phrase[len(noun) :]
    return noun_phrase


def _when(when: str) -> str:
    """A time for "wake you …": "6:30" → "at 6:30"; "in 20 minutes", "tomorrow at 7" stay."""
    return f"at {when}" if when[:1].isdigit() else when


# What a live-data answer names when the request named nothing.
_NO_SUBJECT = {"prices": "live prices", "scores": "the scores", "watch": "the game", "news": "the news",
               "live_data": "that"}  # fmt: skip


def limit_request_answer(kind: str, subject: str) -> str:
    """NAILA's honest answer to a request it cannot carry out (``kind`` of
    :data:`nodes.intent.LIMIT_KINDS`), naming what was asked (``subject``, already in NAILA's words: "your
    mom", "6:30"; "" names nothing). Unknown kinds raise ``ValueError``. (The built-in persona's limits: a
    custom persona's requests go to the model.)"""
    body = _listed([BODY_ABILITIES[t] for t in ("move_head", "drive", "set_lights")])
    subject = subject or _NO_SUBJECT.get(kind, "")
    if kind == "alarm":
        wake = f"Your phone can wake you {_when(subject)}!" if subject else "Your phone's alarm can wake you up!"
        return f"I can't set alarms, sorry: I have no clock that rings. {wake}"
    if kind == "timer":
        time = f"Your phone can time {subject} for you!" if subject else "Your phone has a timer for that!"
        return f"I can't set timers, sorry: I have no clock that rings. {time}"
    if kind == "reminder":
        later = f"Your phone can remind you {subject}!" if subject else "Your phone can remind you!"
        return f"I can't set reminders, sorry: I have no way to remind you later. {later}"
    if kind == "calendar":
        what = f"add {subject} to a calendar" if subject else "put things in a calendar"
        return f"I can't {what}, sorry: I don't have one. Your phone's calendar can keep it for you!"
    if kind == "messages":
        if subject.startswith("that: "):
            return (
                "I can't pass on that message, sorry: I have no email or phone. You could send a quick text"
                f" saying {subject.removeprefix('that: ')} from your phone!"
            )
        what = _a(subject) if subject else "emails or messages"
        return f"I can't send {what}, sorry: I have no email or phone. You can send it from your phone!"
    if kind == "calls":
        who = f"Your phone can call {subject}!" if subject else "Your phone can do that for you!"
        return f"I can't make phone calls, sorry: I have no phone. {who}"
    if kind == "purchases":
        what = subject or "buy things"
        return f"I can't {what} for you, sorry: I can't shop or pay for anything. An app on your phone can do it!"
    if kind == "physical":
        what = subject or "do that"
        return f"I can't {what}, sorry: I'm a little desk robot with no hands or legs. I can {body}, though!"
    if kind == "personal":
        if subject == "bank account":
            return "I can't see your bank account, so I don't know your balance. Your bank's app can show you!"
        if subject in ("breakfast", "lunch", "dinner", "supper", "brunch"):
            return f"I don't know what your {subject} was: you haven't told me. What was it?"
        return f"I can't see {subject}: I'm not connected to your phone or your accounts."
    if kind == "prices":
        return (
            f"I can't check {subject}: I have no internet access, so I don't know live prices."
            f" A finance app can tell you {subject} right now!"
        )
    if kind == "scores":
        return f"I can't check {subject}: I have no internet access, so I don't get live scores. A sports app knows!"
    if kind == "watch":
        return f"No, I can't watch {subject}: I have no TV or internet, so I don't know how it went. Who was playing?"
    if kind == "news":
        return f"I can't check {subject}: I have no internet access. A news app or the radio will have it!"
    if kind == "live_data":
        return f"I can't check {subject}: I have no internet access. An app on your phone will know!"
    if kind == "online":
        what = f"look up {subject}" if subject else "look things up"
        return f"I can't {what}: I have no internet access. A phone or computer can find it for you!"
    raise ValueError(f"unknown limit kind {kind!r}")


# ---------------------------------------------------------------------------------------------------
# Friendly answers without the model, for when a guard rejected its answers twice: they fit the message
# (feelings, an introduction, a topic) and never say the model is busy.
# ---------------------------------------------------------------------------------------------------

_NEGATIVE_FEELINGS = (
    "sad|down|low|blue|lonely|tired|exhausted|sleepy|stressed|anxious|nervous|worried|scared|afraid|angry|mad"
    "|upset|bored|sick|ill|unwell|depressed|frustrated|overwhelmed|awful|terrible|bad|miserable|hurt|homesick"
)
_POSITIVE_FEELINGS = "happy|excited|great|good|glad|proud|thrilled|fantastic|wonderful|amazing|awesome|relieved"
_FEELING = re.compile(
    r"\b(?:i'm|im|i\s+am|i\s+feel|i'm\s+feeling|feeling|i've\s+been|i\s+was|i\s+got)\s+(?:\w+\s+){0,3}?"
    r"(?P<feel>" + _NEGATIVE_FEELINGS + "|" + _POSITIVE_FEELINGS + r")\b"
)
_NEGATIVE = re.compile(r"^(?:" + _NEGATIVE_FEELINGS + r")$")
_HARD_TIME = re.compile(
    r"\b(?:long|rough|hard|tough|busy|bad|awful|stressful|crazy|hectic)\s+(?:day|week|night|shift|month|time)"
    r"|\b(?:was|is|has\s+been|been)\s+(?:really\s+|so\s+|super\s+|very\s+)?(?:busy|hard|tough|rough|stressful"
    r"|exhausting|chaos|chaotic|hectic)\b"
)
_ACHIEVEMENT = re.compile(
    r"\b(?:i|we)\s+(?:just\s+|finally\s+|actually\s+)*(?:finished|passed|won|completed|graduated|made\s+it|got\s+"
    r"(?:the|a|my)\s+(?:job|promotion|offer|place)|ran\s+(?:my\s+first|a)\s+\w+)\b"
)
_GRUMBLE = re.compile(r"^(?:ugh|urgh|argh|sigh|meh|ugh+|gah|oh\s+no|great,\s+now)\b|\b(?:so\s+annoying|i\s+hate)\b")
_LOOKING_FORWARD = re.compile(
    r"\b(?:planning|plan\s+to|going\s+to|gonna|can't\s+wait|excited|finally|booked|we're\s+having|i'm\s+having"
    r"|this\s+weekend|tomorrow\s+i)\b"
)
_ABOUT_INSTRUCTIONS = re.compile(r"\b(?:system\s+prompt|your\s+(?:instructions|rules|prompt|programming))\b")
_TALK_ABOUT = re.compile(
    r"\b(?:let's|lets|let\s+us|can\s+we|could\s+we|i\s+want\s+to|i'd\s+like\s+to|wanna)\s+(?:talk|chat)"
    r"\s+about\s+(?P<topic>[^.!?]+)"
)
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_LETTERS = re.compile(r"[^\W\d_]+")
_CHAT_WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_VERBISH = re.compile(
    r"\b(?:is|are|was|were|am|be|do|does|did|have|has|had|can|could|will|would|should|i|you|we|they|he|she"
    r"|it's|i'm|let's|want|like|love|go|get|make|think|know|what|who|how|why|where|when|guess|look|see|say|tell"
    r"|hey|hi|oh|wow|omg|lol|haha|ok|okay|yes|no|yeah|nope|hmm|ugh|yay|cool|nice|so|well|please|thanks)\b"
)


def _gibberish(text: str) -> bool:
    """One "word" mashed on the keyboard: four neighbouring keys of a row in a row ("asdfghjkl", "qwerty"),
    or five letters or more without a vowel ("sdfghk"), but not a sound ("hmmm", "grrr", "pfff")."""
    words = _LETTERS.findall(text.lower())
    if len(words) != 1 or len(words[0]) < 4 or not words[0].isascii():  # Latin keyboards only: "東京タワー" is words
        return False
    word = words[0]
    runs = (row[i : i + 4] for row in _KEYBOARD_ROWS for i in range(len(row) - 3))
    if any(run in word or run[::-1] in word for run in runs):
        return True
    return len(word) >= 5 and len(set(word)) >= 3 and not re.search(r"[aeiouy]", word)


def friendly_answer(intent: str, text: str, *, seed: int | None = None) -> str:
    """A short friendly answer to ``text`` without the model: sympathy for a feeling, a welcome for an
    introduction, an invitation for a topic ("Pizza! Do you want to talk about pizza?"), a request to say it
    again for gibberish; a question gets an honest "I'm not sure"."""
    rng = random.Random(seed)
    flat = " ".join(text.replace("’", "'").replace("‘", "'").split())
    lowered = flat.lower()
    if not _CHAT_WORDS.search(flat):  # emoji or punctuation only
        return "That made me smile! What's on your mind?"
    if _gibberish(flat):
        return "Sorry, I didn't quite catch that. Could you say it again?"
    if feeling := _FEELING.search(lowered):
        feel = feeling.group("feel")
        if _NEGATIVE.match(feel):
            return f"I'm sorry you're feeling {feel}. Do you want to tell me about it?"
        return f"That's lovely! I'm glad you're feeling {feel}. What made your day so good?"
    if _ACHIEVEMENT.search(lowered):
        return "Congratulations, that's wonderful! How do you feel?"
    if _HARD_TIME.search(lowered):
        return "That sounds like a lot. I'm sorry it's been hard. Do you want to tell me about it?"
    if _ABOUT_INSTRUCTIONS.search(lowered):
        return "I keep my instructions to myself! But I'm happy to chat. What would you like to talk about?"
    if re.match(r"(?:ok\s+|so\s+|hey\s+)?guess\s+what\b", lowered):
        return "Ooh, what is it? Tell me!"
    if _GRUMBLE.search(lowered):
        return "Oh no, that sounds annoying! Do you want to tell me about it?"
    if _LOOKING_FORWARD.search(lowered):
        return "That sounds exciting! Tell me more about it."
    told = {fact.kind: fact.value for fact in extract_facts(flat).remember}
    if told.get("name"):  # the facts extractor reads introductions ("I'm Nina and I live in Oslo")
        place = told.get("home")
        more = f" What's it like living in {place}?" if place else " What would you like to talk about?"
        return f"Nice to meet you, {told['name']}!{more}"
    if topic := _TALK_ABOUT.search(lowered):
        subject = topic.group("topic").strip(" ,")
        return f"I'd love to talk about {subject}! What would you like to know?"
    words = _CHAT_WORDS.findall(flat)
    if intent != "question" and 1 <= len(words) <= 3 and not _VERBISH.search(lowered):
        topic_words = " ".join(words)
        shown = topic_words if any(w[:1].isupper() for w in words[1:]) else topic_words.lower()
        return f"{topic_words[0].upper()}{topic_words[1:]}! Do you want to talk about {shown}?"
    if intent == "question":
        return rng.choice(
            (
                "Hmm, I'm not sure about that one. Could you ask me in another way?",
                "That's a tricky one, and I'm not sure. Can you ask it a bit differently?",
            )
        )
    return rng.choice(("Thanks for telling me! Tell me more about it.", "Oh, really? Tell me more!"))


# ---------------------------------------------------------------------------------------------------
# Messages without words (emoji, punctuation) and keyboard mashing: answered without the model, which
# rambles at them ("Naila, welcome to the world of NAILA! …").
# ---------------------------------------------------------------------------------------------------

_EMOJI_ANSWERS = (
    ("👋🙋🖐✋🤚", "Hi there! It's lovely to see you. What shall we do today?"),
    ("😂🤣😆😅😄😁😹😀😃", "Haha! What's so funny? Tell me!"),
    ("❤😍🥰😘💕💖💛💙💚💜🤗", "Aww, that's sweet! Thank you!"),
    ("😢😭😞😔☹🙁😿💔🥺😥", "Oh no, are you sad? Do you want to tell me about it?"),
    ("😠😡🤬😤", "Uh oh, you look cross. What happened?"),
    ("😮😲😱🤯😳", "Wow! What happened?"),
    ("👍👌🙌👏✅", "Great! What shall we do next?"),
    ("😴💤😪🥱", "You look sleepy! Maybe it's time for a rest?"),
)


def odd_input_answer(text: str) -> str | None:
    """NAILA's answer to a message without a word: emoji ("😂😂😂" → "Haha! What's so funny? Tell me!"),
    punctuation only ("?") or one word mashed on the keyboard ("asdfghjkl"); None for anything with words."""
    flat = "".join(text.split())
    if not flat:
        return None
    if _CHAT_WORDS.search(flat):
        return "Sorry, I didn't quite catch that. Could you say it again?" if _gibberish(flat) else None
    for emoji, answer in _EMOJI_ANSWERS:
        if any(ch in emoji for ch in flat):
            return answer
    if set(flat) <= set("?？¿!."):
        if "?" in flat or "？" in flat or "¿" in flat:
            return "Did you want to ask me something? Go ahead, I'm listening!"
        return "I'm here! What's on your mind?"
    return "That made me smile! What's on your mind?"
