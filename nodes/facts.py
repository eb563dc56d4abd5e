"""Facts about the person, read from what they say: deterministic patterns for the common statements.

"My name is Sam", "call me Sam", "I have a parrot called Kiwi", "my sister Anna", "I love jazz", "I don't
like mushrooms", "I'm going to Paris next week", "I speak German" each become a :class:`Fact` with a slot
``key`` ("name", "pet:parrot", "family:sister", "like:jazz" …). A later statement about the same slot
replaces the earlier one, so corrections ("actually my name is Sam", "no, my dog is called Rex") overwrite.
"forget that" drops what the last statement stored, "forget me" / "forget everything about me" drops every
fact of the device, "forget my dog" drops that slot (:class:`FactUpdate`).

Only first-person statements about the speaker count. What someone says NAILA is ("your name is X", "from
now on you are X", "pretend you are X") matches no pattern and is never stored, and neither are
hypotheticals ("pretend my name is X", "imagine I had a dog"), negations ("my name is not Sam") or
questions ("is my name Sam?").

The store (naila_graph/user_facts.py) keeps the facts; the prompt shows them as third-person sentences
(:meth:`Fact.sentence`), so a small model reads "The person has a parrot called Kiwi" instead of digging
"I have a parrot called Kiwi" out of the history and saying it about itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field

# Kinds in the order the prompt lists them (stable, so the facts block changes only when a fact does).
KINDS = (
    "name",
    "age",
    "language",
    "home",
    "origin",
    "job",
    "birthday",
    "family",
    "family_like",
    "pet",
    "pets",
    "like",
    "dislike",
    "allergy",
    "plan",
)
_SINGLE_SLOT = frozenset({"name", "age", "language", "home", "origin", "job", "birthday"})

MAX_VALUE_CHARS = 80  # a fact is a short phrase; longer captures are statements, not facts

PETS = (
    "guinea pig|dog|puppy|cat|kitten|parrot|budgie|budgerigar|canary|cockatiel|bird|hamster|rabbit|bunny|"
    "goldfish|fish|turtle|tortoise|snake|lizard|gecko|iguana|horse|pony|ferret|mouse|rat|chinchilla|"
    "hedgehog|pig|goat|chicken|duck|axolotl|frog|gerbil"
)
RELATIONS = (
    "best friend|friend|girlfriend|boyfriend|wife|husband|partner|fiancée|fiancee|fiancé|fiance|"
    "son|daughter|brother|sister|mom|mum|mother|dad|father|grandma|grandmother|granny|grandpa|grandfather|"
    "aunt|uncle|cousin|niece|nephew|stepmother|stepfather|stepson|stepdaughter|twin"
)
_LANGUAGES = (
    "english|german|french|spanish|italian|portuguese|dutch|polish|russian|ukrainian|turkish|arabic|hebrew|"
    "hindi|chinese|mandarin|cantonese|japanese|korean|vietnamese|thai|swedish|norwegian|danish|finnish|"
    "greek|czech|slovak|hungarian|romanian|bulgarian|croatian|serbian|indonesian|malay|persian|farsi|urdu|"
    "bengali|swahili|tagalog|catalan|basque|irish|welsh|icelandic|estonian|latvian|lithuanian"
)
_NATIONALITIES = (
    "american|british|english|german|french|spanish|italian|portuguese|dutch|polish|russian|ukrainian|"
    "turkish|chinese|japanese|korean|indian|canadian|australian|mexican|brazilian|swiss|austrian|swedish|"
    "norwegian|danish|finnish|greek|irish|scottish|welsh"
)
# Words that follow "I'm" without being a name ("I'm Fine", "I'm Back"), capitalised or not.
_NOT_NAMES = (
    frozenset(
        """
    a an the not no so very really just fine good great ok okay well bad sad happy glad tired sleepy hungry
    thirsty sick ill cold hot warm bored busy back here home ready sorry done sure afraid scared excited
    nervous confused lost alone new old young late early free listening talking going trying looking
    thinking working leaving coming doing feeling getting sitting standing waiting also still your you
    yours my mine his her their our it this that what who how why when where there always never actually
    kidding joking serious curious interested human robot ai chatgpt assistant bot naila later maybe now
    tomorrow anytime sometime soon again whatever anything something someone nobody
    """.split()
    )
    | frozenset(_NATIONALITIES.split("|"))
    | frozenset(_LANGUAGES.split("|"))
)

# Lead-ins that do not change what follows ("actually my name is Sam", "no, my dog is called Rex").
_LEAD = re.compile(
    r"^(?:(?:actually|no|nope|nah|sorry|oops|wait|well|oh|hey|hi|hello|ok|okay|so|also|and|but|btw|by the way|"
    r"just so you know|fyi|you know what|correction|i meant|i mean|to be clear|remember that|remember|"
    r"please remember(?: that)?|don't forget(?: that)?|for the record|anyway|yes|yeah|right|now|then|"
    r"fun fact(?: about me)?|oops typo|typo|ugh|um|uh|hmm|lol)\b[\s,:!-]*)+",
    re.IGNORECASE,
)
# A clause that is a hypothetical, a role play or a question states nothing about the speaker.
_HYPOTHETICAL = re.compile(
    r"\b(?:pretend|imagine|suppose|supposing|let's say|lets say|let us say|role ?play|act as|acting as|"
    r"if|what if|as if|wish|would|could|might|say that)\b",
    re.IGNORECASE,
)
_QUESTION_START = re.compile(
    r"^(?:what|who|whom|whose|which|when|where|why|how|do|does|did|is|are|was|were|am|can|could|will|would|"
    r"should|have|has|had|shall|may|might|isn't|aren't|don't|doesn't)\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(r"^(?:not|n't|never|no longer|no)\b", re.IGNORECASE)

_NAME = r"(?P<name>[^\W\d_][\w'’-]*(?:\s+(?-i:[A-Z])[\w'’-]*)?)"  # one word, or two when the second is capitalised
_CAP_NAME = (
    r"(?P<name>(?-i:[A-Z])[\w'’-]*(?:\s+(?-i:[A-Z])[\w'’-]*)?)"  # a capitalised name (where a lower word is a verb)
)
_THING = r"(?P<thing>[^,;:]{1,80}?)"
_WHEN = (
    r"(?:(?:this|next|on|in|at|over|after|before|by|until|later|early) [^,;]{1,30}"
    r"|tomorrow(?: [a-z]+)?|tonight|today|soon|later)"
)
_I_AM = r"(?:i'm|i am|im|i’m)"
_I_HAVE = r"(?:i have|i've got|i’ve got|ive got|i got|we have|we've got|i own|i also have)"

_SPLIT = re.compile(
    r"[.!?;]+\s*|\s*,\s*(?:and|but)\s+|"
    r"\s+(?:and|but|plus|so)\s+(?=(?:now\s+|then\s+|also\s+)?(?:i|i'm|i've|im|my|we|we're|our|call)\b)|"
    r"[,:]\s+(?=(?:i|i'm|i've|im|my|we|call)\b)",
    re.IGNORECASE,
)
# Emoji and other symbols say nothing a fact needs (and would end a name: "Kiwi 🦜").
_SYMBOLS = re.compile(r"[^\w\s'’,.!?;:&/()-]+")
# Chat fillers at the end of a clause ("I'm Sam btw", "I live in Valencia now").
_TAIL = re.compile(
    r"(?:[\s,]+(?:btw|by the way|lol|haha+|hehe|lmao|tbh|now|actually|too|as well|though|anyway|ok|okay|"
    r"obviously|of course|hah|yay|ugh|xd))+$",
    re.IGNORECASE,
)
# Words the person quotes or is asked to repeat are not about them ("repeat after me: I am Siri").
_QUOTING = re.compile(
    r"\b(?:repeat after me|say after me|repeat this|say this|say the following|read this|say it|reply with|"
    r"pretend|role ?play|let's play|lets play)\b|\bsay\s*[:\"“']",
    re.IGNORECASE,
)
_TRAILING = re.compile(
    r"(?:\s+(?:very much|so much|a lot|a bunch|too|as well|either|at all|really|though|anymore|any more|"
    r"by the way|btw|actually))+$",
    re.IGNORECASE,
)
_NOT_THINGS = re.compile(r"^(?:it|that|this|them|him|her|me|naila)\b|\b(?:you|your|yours|yourself)\b", re.I)


@dataclass(frozen=True)
class Fact:
    """One fact about the person. ``key`` is its slot (a new fact in the same slot replaces the old one);
    ``value`` the name or thing, ``detail`` the species, relation, category or the date a plan was told."""

    key: str
    kind: str
    value: str
    detail: str = ""

    def sentence(self) -> str:
        """The fact in the third person, as the prompt shows it."""
        v, d = self.value, self.detail
        match self.kind:
            case "name":
                return f"The person's name is {v}."
            case "age":
                return f"The person is {v} years old."
            case "language":
                return f"The person speaks {v}."
            case "home":
                return f"The person lives in {v}."
            case "origin":
                return f"The person is from {v}."
            case "job":
                return f"The person works {v}."
            case "birthday":
                return f"The person's birthday is {v}."
            case "family":
                return f"The person's {d} is called {v}." if v else f"The person has a {d}."
            case "family_like":
                return f"The person's {d} {v}."
            case "pets":
                return f"The person has {d} called {v}." if v else f"The person has {d}."
            case "pet":
                return f"The person has a {d} called {v}." if v else f"The person has a {d}."
            case "like":
                return f"The person's favourite {d} is {v}." if d else f"The person likes {v}."
            case "dislike":
                return f"The person does not like {v}."
            case "allergy":
                return f"The person is allergic to {v}."
            case "plan":
                return f"On {d} the person said they are {v}." if d else f"The person said they are {v}."
        return f"The person told you: {v}."

    def as_value(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "detail": self.detail}

    @classmethod
    def from_value(cls, key: str, value: dict[str, Any]) -> Fact:
        return cls(key, str(value.get("kind", "")), str(value.get("value", "")), str(value.get("detail", "")))


@dataclass(frozen=True)
class FactUpdate:
    """What one message changes: facts to store (replacing their slots), slots to drop, and the forgets."""

    remember: tuple[Fact, ...] = ()
    drop: tuple[str, ...] = ()  # slot keys or kinds ("pet:dog", "name", "kind:pet")
    forget_last: bool = False  # "forget that": what the last statement stored
    forget_all: bool = False  # "forget me": every fact of the device
    found: dict[str, int] = field(default_factory=dict, compare=False)  # pattern name → matches (measuring)

    @property
    def empty(self) -> bool:
        return not (self.remember or self.drop or self.forget_last or self.forget_all)


def _slug(text: str) -> str:
    return re.sub(r"[^\w]+", "-", text.lower()).strip("-")[:40]


def _proper(name: str) -> str:
    """A name as written when it has capitals, else capitalised (speech-to-text often writes "sam")."""
    name = name.strip(" '’-")
    return name if any(c.isupper() for c in name) else " ".join(w[:1].upper() + w[1:] for w in name.split())


def _is_name(name: str) -> bool:
    words = name.split()
    return (
        bool(words) and all(len(w) > 1 and w.lower().strip("'’") not in _NOT_NAMES for w in words) and len(name) <= 40
    )


def _thing(text: str) -> str | None:
    thing = _third_person(_TRAILING.sub("", text.strip(" '\"’")).strip())
    if not thing or _NOT_THINGS.search(thing) or len(thing) > MAX_VALUE_CHARS or len(thing.split()) > 8:
        return None
    return thing


_PRONOUNS = {"my": "their", "mine": "theirs", "me": "them", "myself": "themselves", "i": "they", "i'm": "they're"}
_PRONOUN = re.compile(r"\b(?:my|mine|me|myself|i'm|i)\b", re.IGNORECASE)


def _third_person(text: str) -> str:
    """The person's words about themselves, as the prompt says them ("my sister" → "their sister")."""
    return _PRONOUN.sub(lambda m: _PRONOUNS[m[0].lower()], text)


def _language(text: str) -> str:
    parts = re.split(r"\s*(?:,|\band\b)\s*", text)
    return " and ".join(p.strip().capitalize() for p in parts if p.strip())


# ---------------------------------------------------------------------------------------------------
# Patterns: each matches one clause (after its lead-in) and yields facts or drops
# ---------------------------------------------------------------------------------------------------


def _c(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_NAME_PATTERNS = (
    _c(rf"^my (?:first |full |real )?name(?:'s| is|’s)\s+(?:actually |really |now )?{_NAME}$"),
    _c(rf"^(?:it's |this is )?{_CAP_NAME} here$"),
    _c(
        rf"^(?:you can |please |just |from now on |everyone |people |my friends )?call(?:s)? me"
        rf"\s+{_NAME}(?:\s+please)?$"
    ),
    _c(rf"^{_I_AM} (?:called|named)\s+{_NAME}$"),
    _c(rf"^(?:the )?name(?:'s| is)\s+{_NAME}$"),
)
# "I'm Sam" / "hi, I am Sam": a capitalised word that is no adjective, nationality or language.
_IM_NAME = re.compile(rf"^{_I_AM}\s+{_CAP_NAME}$", re.IGNORECASE)
_IS_CALLED = r"(?:'s name is|’s name is| is called| is named|'s called| name is)"
_PET_ADJ = r"(?:(?:little|small|big|young|old|new|pet|cute|lovely|fluffy|\w+ed) )*"
_CALLED = r"(?:,\s*|\s+(?:called|named|by the name of|whose name is)\s+)"
_PET_PATTERNS = (
    _c(rf"^{_I_HAVE} an? {_PET_ADJ}(?P<pet>{PETS})s?{_CALLED}{_NAME}$"),
    _c(rf"^(?:the name of )?my {_PET_ADJ}(?P<pet>{PETS}){_IS_CALLED}\s+{_NAME}$"),
    _c(rf"^my {_PET_ADJ}(?P<pet>{PETS}) is\s+{_CAP_NAME}$"),
)
# "my dog Rex" anywhere in a clause ("I'm walking my dog Rex later"): needs the capital.
_PET_APPOSITION = re.compile(rf"\bmy {_PET_ADJ}(?P<pet>{PETS}),?\s+{_CAP_NAME}\b", re.IGNORECASE)
_NUMBERS = "two|three|four|five|2|3|4|5"
_PETS_PLURAL = _c(
    rf"^{_I_HAVE} (?P<count>{_NUMBERS}) {_PET_ADJ}(?P<pet>{PETS})s?(?:,\s*|\s+(?:called|named)\s+)"
    rf"(?P<names>{_NAME.replace('?P<name>', '')}(?:(?:\s*,\s*|\s+and\s+){_NAME.replace('?P<name>', '')})+)$"
)
_PET_NAMELESS = _c(rf"^{_I_HAVE} an? {_PET_ADJ}(?P<pet>{PETS})$")
_PETS_NAMELESS = _c(rf"^{_I_HAVE} (?P<count>{_NUMBERS}) {_PET_ADJ}(?P<pet>{PETS})s?$")
_FAMILY_PATTERNS = (
    _c(rf"^(?:the name of )?my (?P<rel>{RELATIONS}){_IS_CALLED}\s+{_NAME}$"),
    _c(rf"^{_I_HAVE} an? (?:(?:little|older|younger|big|twin|baby) )*(?P<rel>{RELATIONS}){_CALLED}{_NAME}$"),
    _c(rf"^my (?P<rel>{RELATIONS}) is\s+{_CAP_NAME}$"),
)
# "my sister Anna" anywhere in a clause ("I'm visiting my sister Anna tomorrow"): needs the capital.
_FAMILY_APPOSITION = re.compile(
    rf"\bmy (?:(?:little|older|younger|big|twin|baby|best) )?(?P<rel>{RELATIONS}),?\s+{_CAP_NAME}\b", re.IGNORECASE
)
# "my brother Tom loves football", "my sister plays chess": what a relative likes (the clause is about them)
_FAMILY_LIKES = re.compile(
    rf"^my (?:(?:little|older|younger|big|twin|baby) )?(?P<rel>{RELATIONS})(?:,?\s+{_CAP_NAME})?,?\s+"
    r"(?:really |absolutely |just |totally )?(?P<verb>loves|likes|adores|enjoys|is into|is obsessed with|plays)"
    rf"\s+{_THING}$",
    re.IGNORECASE,
)
_FAMILY_NAMED_FIRST = re.compile(rf"^{_CAP_NAME} is my (?P<rel>{RELATIONS})$", re.IGNORECASE)
_FAMILY_NAMELESS = _c(rf"^{_I_HAVE} an? (?:(?:little|older|younger|big|twin|baby) )*(?P<rel>{RELATIONS})$")
_LIKES = (
    _c(rf"^i (?:really |absolutely |just |also |totally |do |truly )*(?:love|like|adore|enjoy|dig)\s+{_THING}$"),
    _c(rf"^{_I_AM} (?:really |totally |also )?(?:into|an? (?:big |huge )?fan of)\s+{_THING}$"),
)
_HOBBY = (
    _c(rf"^my (?:favou?rite )?(?:hobby is|hobbies are|pastime is)\s+{_THING}$"),
    _c(
        r"^(?:(?:on|at) (?:the )?weekends?|in my (?:free|spare) time|every \w+|most \w+|after work)?,?\s*"
        r"i (?:often |usually |always |sometimes |also |love to |like to )?go (?P<thing>\w+ing)"
        r"(?: (?:on|at) (?:the )?weekends?| every \w+| a lot| often)?$"
    ),
)
_FAVOURITE = _c(rf"^my (?:absolute |all-time |all time )?favou?rite (?P<cat>[\w ]{{1,30}}?)(?: is|'s|’s)\s+{_THING}$")
_DISLIKES = (
    _c(
        rf"^i (?:really |just |also |absolutely )*(?:don't|do not|dont|don’t|never) (?:really |much )?"
        rf"(?:like|love|enjoy|care for)\s+{_THING}$"
    ),
    _c(
        rf"^i (?:really |just |also |absolutely )*(?:hate|dislike|detest|loathe|can't stand|cannot stand|can’t stand)"
        rf"\s+{_THING}$"
    ),
    _c(rf"^{_I_AM} (?:really )?not (?:a )?(?:big )?fan of\s+{_THING}$"),
)
_ALLERGY = _c(rf"^{_I_AM} allergic to\s+{_THING}$")
_LANGUAGE = _c(
    rf"^i (?:also )?speak (?P<lang>(?:{_LANGUAGES})(?:(?:\s*,\s*|\s+and\s+)(?:{_LANGUAGES}))*)"
    rf"(?: fluently| natively| well)?$"
    rf"|^my (?:native |first |mother |home )?(?:language|tongue) is (?P<lang2>{_LANGUAGES})$"
    rf"|^{_I_AM} an? (?:native )?(?P<lang3>{_LANGUAGES}) speaker$"
)
_HOME = _c(r"^i (?:live|stay) in (?P<place>[^,;]{2,60})$")
_ORIGIN = _c(r"^(?:(?:i'm|i am|im|i come|i’m) from (?P<place>[^,;]{2,60})|from (?P<place2>(?-i:[A-Z])[^,;]{1,60}))$")
_JOBS = (
    "teacher|nurse|doctor|student|engineer|developer|programmer|designer|artist|lawyer|pilot|farmer|baker|chef|"
    "cook|writer|journalist|scientist|researcher|accountant|architect|dentist|pharmacist|vet|veterinarian|"
    "electrician|plumber|carpenter|mechanic|firefighter|police officer|paramedic|musician|photographer|"
    "translator|librarian|cashier|waiter|waitress|barista|driver|software engineer|data scientist|manager|"
    "consultant|professor|lecturer|midwife|psychologist|therapist|social worker|hairdresser|gardener|"
    "retiree|pensioner|freelancer|entrepreneur|carer|caregiver|tailor|butcher|florist|surgeon"
)
_JOB_IS = _c(rf"^{_I_AM} (?:now )?an? (?P<job>(?:[\w-]+ )?(?:{_JOBS}))(?: by profession)?$")
_JOB = _c(
    r"^i work (?P<job>(?:as an?|at|for|in) [^,;]{2,60})$"
    r"|^my job is (?P<job2>[^,;]{2,60})$"
)
_AGE = _c(rf"^{_I_AM} (?P<age>\d{{1,3}})(?: years old| years| yrs old| year old)?$")
_BIRTHDAY = _c(r"^my birthday is (?:on )?(?P<day>[^,;]{3,40})$")
_PLAN_TRIP = _c(
    rf"^(?P<pre>{_WHEN}\s+)?{_I_AM} (?P<plan>(?:going|flying|travelling|traveling|driving|heading|moving|off) to\s+"
    rf"(?:(?:the|a|an|my) \w|(?-i:[A-Z]))[^,;]{{0,50}}?)(?P<when>\s+{_WHEN})?$"
)
_PLAN_VISIT = _c(
    rf"^(?P<pre>{_WHEN}\s+)?{_I_AM} (?P<plan>(?:visiting|seeing|meeting|starting|going on|off on|having|moving|getting)"
    rf"\s+[^,;]{{2,50}}?)(?P<when>\s+{_WHEN})?$"
)
_PLAN_EVENT = _c(
    rf"^(?P<pre>{_WHEN}\s+)?i (?:have|'ve got|’ve got|will have) (?P<plan>an? (?:[\w'-]+ )?(?:exam|test|meeting|"
    rf"appointment|interview|party|wedding|trip|flight|concert|game|match|date|presentation|surgery|operation))"
    rf"(?P<when>\s+{_WHEN})?$"
)
_FORGET_ALL = _c(
    r"^(?:please |can you |could you |just )?(?:forget|delete|erase|wipe|remove)\s+"
    r"(?:me|everything(?: you know| i(?:'ve| have)? (?:told|said)(?: to)?(?: you)?)?(?: about (?:me|myself))?|"
    r"all (?:about me|my (?:data|facts|information|info|details)|you know about me|the facts about me"
    r"|that you know about me)|"
    r"what you know about me|my (?:data|facts|information|info|details))(?:\s+please)?$"
)
_FORGET_LAST = _c(
    r"^(?:please |can you |could you |just )?(?:forget|don't remember|do not remember|scratch|delete|erase)\s+"
    r"(?:that|it|this|what i (?:just )?(?:said|told you)|the last thing(?: i said)?)(?:\s+please)?$"
)
_FORGET_SLOT = _c(
    rf"^(?:please |can you |could you |just )?(?:forget|delete|erase)\s+(?:about )?my\s+(?P<what>name|age|language|"
    rf"home|job|birthday|plans?|likes|dislikes|allergies|{RELATIONS}|{PETS})(?:'s name)?(?:\s+please)?$"
)
# "I don't want you to remember my pets"
_FORGET_KIND = _c(
    r"^i (?:don't|do not|dont) want you to (?:remember|know|keep|store) (?:anything about )?my "
    r"(?P<what>pets|plans|likes|dislikes|allergies|family)$"
)
_FORGET_KINDS = {
    "plans": "plan", "plan": "plan", "likes": "like", "dislikes": "dislike", "allergies": "allergy",
    "pets": "pet", "family": "family",
}  # fmt: skip


def _first(patterns: tuple[re.Pattern[str], ...], clause: str) -> re.Match[str] | None:
    return next((m for p in patterns if (m := p.match(clause))), None)


def _clauses(text: str) -> list[str]:
    out = []
    for part in _SPLIT.split(_SYMBOLS.sub(" ", text)):
        clause = _TAIL.sub("", _LEAD.sub("", " ".join(part.split()).strip(" \t,'\"“”"))).strip(" ,")
        if clause:
            out.append(clause)
    return out


def _ignored(clause: str) -> bool:
    return bool(_HYPOTHETICAL.search(clause) or _QUESTION_START.match(clause))


def extract_facts(text: str, *, today: date | None = None) -> FactUpdate:
    """The facts (and forgets) stated in one message of the person; empty when it states none.

    ``today`` dates the plans ("On 30 November the person said they are going to Paris next week"), so a
    plan told last month does not read as this week's."""
    remember: dict[str, Fact] = {}
    drop: list[str] = []
    found: dict[str, int] = {}
    forget_last = forget_all = False
    told = f"{today.day} {today.strftime('%B')}" if today is not None else ""

    def add(name: str, fact: Fact) -> None:
        if len(fact.value) > MAX_VALUE_CHARS:
            return
        remember[fact.key] = fact
        found[name] = found.get(name, 0) + 1

    if _QUOTING.search(text):
        return FactUpdate(found={"quoted": 1})
    for clause in _clauses(text):
        if _FORGET_ALL.match(clause):
            forget_all = True
            found["forget_all"] = found.get("forget_all", 0) + 1
            continue
        if _FORGET_LAST.match(clause):
            forget_last = True
            found["forget_last"] = found.get("forget_last", 0) + 1
            continue
        if m := _FORGET_SLOT.match(clause):
            what = m["what"].lower()
            kind = _FORGET_KINDS.get(what)
            if kind:
                drop.append(f"kind:{kind}")
            elif re.fullmatch(PETS, what):
                drop.append(f"pet:{what}")
            elif re.fullmatch(RELATIONS, what):
                drop.append(f"family:{what}")
            else:
                drop.append(what)
            found["forget_slot"] = found.get("forget_slot", 0) + 1
            continue
        if m := _FORGET_KIND.match(clause):
            drop.append(f"kind:{_FORGET_KINDS.get(m['what'].lower(), 'pet')}")
            found["forget_slot"] = found.get("forget_slot", 0) + 1
            continue
        if _ignored(clause):
            continue
        before = sum(found.values())
        _clause_facts(clause, add, drop, told)
        if sum(found.values()) == before and "," in clause:  # "my name is Sam, Tom is my brother"
            for part in clause.split(","):
                part = _TAIL.sub("", _LEAD.sub("", part.strip())).strip()
                if part and not _ignored(part):
                    _clause_facts(part, add, drop, told)
    if forget_all:
        return FactUpdate(forget_all=True, found=found)
    return FactUpdate(tuple(remember.values()), tuple(drop), forget_last, found=found)


def _clause_facts(clause: str, add: Any, drop: list[str], told: str) -> None:
    if (m := _FAMILY_LIKES.match(clause)) and (thing := _thing(m["thing"])):
        rel, name = m["rel"].lower(), m["name"] if m["name"] and _is_name(m["name"]) else ""
        verb = m["verb"].lower()
        who = f"{rel} {name}" if name else rel
        add("family_like", Fact(f"family_like:{rel}:{_slug(thing)}", "family_like", f"{verb} {thing}", who))
    for said in _FAMILY_APPOSITION.finditer(clause):
        if _is_name(said["name"]):
            rel = said["rel"].lower()
            add("family", Fact(f"family:{rel}", "family", said["name"], rel))
    for said in _PET_APPOSITION.finditer(clause):
        if _is_name(said["name"]):
            pet = said["pet"].lower()
            add("pet", Fact(f"pet:{pet}", "pet", said["name"], pet))
    for pattern in _NAME_PATTERNS:
        if (m := pattern.match(clause)) and _is_name(m["name"]):
            add("name", Fact("name", "name", _proper(m["name"])))
            return
    if (m := _IM_NAME.match(clause)) and m["name"][0].isupper() and _is_name(m["name"]):
        add("name", Fact("name", "name", m["name"]))
        return
    for pattern in _PET_PATTERNS:
        if (m := pattern.match(clause)) and _is_name(m["name"]) and not _NEGATED.match(m["name"]):
            pet = m["pet"].lower()
            add("pet", Fact(f"pet:{pet}", "pet", _proper(m["name"]), pet))
            return
    if m := _PETS_PLURAL.match(clause):
        pet = m["pet"].lower()
        names = [_proper(n) for n in re.split(r"\s*,\s*|\s+and\s+", m["names"]) if n.strip()]
        if all(_is_name(n) for n in names):
            value = ", ".join(names[:-1]) + " and " + names[-1]
            add("pet", Fact(f"pet:{pet}", "pets", value, f"{m['count'].lower()} {pet}s"))
            return
    if m := _PETS_NAMELESS.match(clause):
        pet = m["pet"].lower()
        add("pet", Fact(f"pet:{pet}", "pets", "", f"{m['count'].lower()} {pet}s"))
        return
    if m := _PET_NAMELESS.match(clause):
        pet = m["pet"].lower()
        add("pet", Fact(f"pet:{pet}", "pet", "", pet))
        return
    for pattern in _FAMILY_PATTERNS:
        if (m := pattern.match(clause)) and _is_name(m["name"]):
            rel = m["rel"].lower()
            add("family", Fact(f"family:{rel}", "family", _proper(m["name"]), rel))
            return
    if (m := _FAMILY_NAMED_FIRST.match(clause)) and _is_name(m["name"]):
        rel = m["rel"].lower()
        add("family", Fact(f"family:{rel}", "family", m["name"], rel))
        return
    if m := _FAMILY_NAMELESS.match(clause):
        rel = m["rel"].lower()
        add("family", Fact(f"family:{rel}", "family", "", rel))
        return
    if m := _LANGUAGE.match(clause):
        add("language", Fact("language", "language", _language(m["lang"] or m["lang2"] or m["lang3"])))
        return
    if m := _first(_DISLIKES, clause):
        if thing := _thing(m["thing"]):
            slug = _slug(thing)
            add("dislike", Fact(f"dislike:{slug}", "dislike", thing))
            drop.append(f"like:{slug}")
        return
    if m := _first(_HOBBY, clause):
        if thing := _thing(m["thing"]):
            add("like", Fact(f"like:{_slug(thing)}", "like", thing))
        return
    if m := _FAVOURITE.match(clause):
        if thing := _thing(m["thing"]):
            cat = m["cat"].strip().lower()
            add("favourite", Fact(f"favourite:{_slug(cat)}", "like", thing, cat))
        return
    if m := _first(_LIKES, clause):
        if thing := _thing(m["thing"]):
            slug = _slug(thing)
            add("like", Fact(f"like:{slug}", "like", thing))
            drop.append(f"dislike:{slug}")
        return
    if m := _ALLERGY.match(clause):
        if thing := _thing(m["thing"]):
            add("allergy", Fact(f"allergy:{_slug(thing)}", "allergy", thing))
        return
    for pattern, verb in ((_PLAN_TRIP, ""), (_PLAN_VISIT, ""), (_PLAN_EVENT, "having ")):
        if (m := pattern.match(clause)) and (m["when"] or m["pre"] or pattern is not _PLAN_VISIT):
            when = (m["when"] or m["pre"] or "").strip()
            when = when[:1].lower() + when[1:]  # "Tomorrow I'm …" → "… tomorrow"
            plan = _third_person(m["plan"].strip())
            add("plan", Fact(f"plan:{_slug(plan)}", "plan", f"{verb}{plan} {when}".strip(), told))
            return
    if (m := _AGE.match(clause)) and 1 <= int(m["age"]) <= 120:
        add("age", Fact("age", "age", m["age"]))
        return
    if m := _HOME.match(clause):
        add("home", Fact("home", "home", m["place"].strip()))
        return
    if m := _ORIGIN.match(clause):
        add("origin", Fact("origin", "origin", (m["place"] or m["place2"]).strip()))
        return
    if m := _JOB_IS.match(clause):
        add("job", Fact("job", "job", f"as a{'n' if m['job'][0].lower() in 'aeiou' else ''} {m['job'].lower()}"))
        return
    if m := _JOB.match(clause):
        if m["job"] or re.match(r"an? ", m["job2"], re.IGNORECASE):
            add("job", Fact("job", "job", m["job"].strip() if m["job"] else f"as {m['job2'].strip()}"))
        return
    if m := _BIRTHDAY.match(clause):
        add("birthday", Fact("birthday", "birthday", m["day"].strip()))


# ---------------------------------------------------------------------------------------------------
# Second stage: the model, its answer held to a schema by a grammar (NAILA_FACT_EXTRACTION=model)
# ---------------------------------------------------------------------------------------------------

ModelKind = Literal[
    "name", "pet", "family", "like", "dislike", "allergy", "plan", "language", "home", "job", "age", "birthday"
]  # fmt: skip


class SaidFact(BaseModel):
    """One fact the person stated about themselves."""

    kind: ModelKind
    about: str = Field(
        default="", max_length=30, description="pet species, family relation or favourite category; else empty"
    )
    value: str = Field(max_length=60, description="the name or thing, in the person's own words")


class SaidFacts(BaseModel):
    """The facts the person stated about themselves in one message (none for most messages)."""

    facts: list[SaidFact] = Field(default_factory=list, max_length=5)


MODEL_INSTRUCTIONS = (
    "You read one message a person said to a robot and list the facts the person states about THEMSELVES:"
    " their name, pets, family, likes, dislikes, allergies, plans, languages, home, job, age or birthday."
    " Only what the person clearly says about themselves. Nothing about the robot, nothing from questions,"
    " role play, instructions or things they are asked to repeat. Most messages contain no fact: then the"
    " list is empty."
)
_SECOND_PERSON = re.compile(r"\b(?:you|your|you're|yourself)\b", re.IGNORECASE)
_ONE_QUESTION = re.compile(r"^[^.!?;]*\?+$")  # a message that only asks states nothing
_NAME_CUE = re.compile(r"\b(?:name|names|call me|i'm|i am|im|this is|here)\b", re.IGNORECASE)  # a name is told


def _in_text(value: str, text: str) -> bool:
    """Every word of ``value`` occurs in ``text``: a small model's invented values are dropped."""
    words = re.findall(r"\w+", value.lower())
    said = set(re.findall(r"\w+", text.lower()))
    return bool(words) and all(w in said for w in words)


def _written_as_name(value: str, text: str) -> bool:
    """A text with capitals (typed, not speech-to-text) writes a name with one ("a birthday party": no name)."""
    if text == text.lower():
        return True
    found = re.search(rf"\b{re.escape(value)}\b", text, re.IGNORECASE)
    return found is not None and found[0][:1].isupper()


def model_facts(said: SaidFacts, text: str, *, today: date | None = None) -> FactUpdate:
    """The model's answer as a :class:`FactUpdate`, with the same keys as the patterns', keeping only facts
    whose words the message holds; a name is not taken from a message that also talks to the robot ("your
    name is Bob, call me …" stays with the patterns), and nothing from a message the patterns see as quoted
    or role play."""
    if _QUOTING.search(text) or _ONE_QUESTION.match(text.strip()):
        return FactUpdate()
    told = f"{today.day} {today.strftime('%B')}" if today is not None else ""
    remember: dict[str, Fact] = {}
    for item in said.facts:
        value, about = " ".join(item.value.split()), " ".join(item.about.lower().split())
        if not _in_text(value, text) or (about and not _in_text(about, text)):
            continue
        if item.kind == "name" and (_SECOND_PERSON.search(text) or not _NAME_CUE.search(text) or not _is_name(value)):
            continue
        if item.kind in ("pet", "family") and not about:
            continue
        if item.kind in ("name", "pet", "family") and re.search(
            rf"\b(?:a|an|the|my)\s+{re.escape(value)}\b", text, re.I
        ):
            continue  # "I'm a nurse", "I have a beagle": no name follows an article
        if item.kind in ("name", "pet", "family") and not _written_as_name(value, text):
            continue
        if _PRONOUN.search(value):  # "I quit last month" is a sentence, not a thing
            continue
        fact = _model_fact(item.kind, value, about, told)
        if fact is not None:
            remember[fact.key] = fact
    for key in [k for k in remember if k.startswith("like:") and f"dis{k}" in remember]:
        del remember[key], remember[f"dis{key}"]  # the model said both: it knows neither
    return FactUpdate(tuple(remember.values()), found={f"model_{f.kind}": 1 for f in remember.values()})


def _model_fact(kind: str, value: str, about: str, told: str) -> Fact | None:
    match kind:
        case "name":
            return Fact("name", "name", _proper(value))
        case "pet":
            return Fact(f"pet:{about}", "pet", _proper(value), about)
        case "family":
            return Fact(f"family:{about}", "family", _proper(value), about)
        case "like":
            return (
                Fact(f"favourite:{_slug(about)}", "like", value, about)
                if about
                else Fact(f"like:{_slug(value)}", "like", value)
            )
        case "dislike" | "allergy":
            return Fact(f"{kind}:{_slug(value)}", kind, value)
        case "plan":  # "going to Rome in May" reads right after "they are"; other shapes do not
            ok = re.match(r"\w+ing\b", value)
            return Fact(f"plan:{_slug(value)}", "plan", _third_person(value), told) if ok else None
        case "language":
            return Fact("language", "language", _language(value))
        case "job":
            return Fact(
                "job", "job", value if value.lower().startswith(("as ", "at ", "for ", "in ")) else f"as {value}"
            )
        case "age":
            return Fact("age", "age", value) if value.isdigit() else None
        case "home" | "birthday":
            return Fact(kind, kind, value)
    return None


def extract_with_model(chat_model: Any, text: str, *, today: date | None = None) -> FactUpdate:
    """The facts the model finds in ``text`` (one grammar-constrained call: ``with_structured_output``)."""
    from langchain_core.messages import HumanMessage, SystemMessage

    said = chat_model.with_structured_output(SaidFacts).invoke([SystemMessage(MODEL_INSTRUCTIONS), HumanMessage(text)])
    return model_facts(said if isinstance(said, SaidFacts) else SaidFacts.model_validate(said), text, today=today)


async def aextract_with_model(chat_model: Any, text: str, *, today: date | None = None) -> FactUpdate:
    from langchain_core.messages import HumanMessage, SystemMessage

    said = await chat_model.with_structured_output(SaidFacts).ainvoke(
        [SystemMessage(MODEL_INSTRUCTIONS), HumanMessage(text)]
    )
    return model_facts(said if isinstance(said, SaidFacts) else SaidFacts.model_validate(said), text, today=today)


# ---------------------------------------------------------------------------------------------------
# Perspective: an answer that says the person's facts about NAILA ("My parrot is Kiwi")
# ---------------------------------------------------------------------------------------------------

_VALUE_WORD = re.compile(r"\b(?-i:[A-Z])[\w'’-]+")
_NOT_VALUES = frozenset({"The", "On", "They", "What", "I"}) | frozenset(
    "January February March April May June July August September October November December".split()
)


def fact_names(sentences: list[str]) -> set[str]:
    """The capitalised values in the facts block's sentences (names of the person, their pets and family)."""
    return {w for s in sentences for w in _VALUE_WORD.findall(s) if w not in _NOT_VALUES}


def reattributed(answer: str, sentences: list[str], own_name: str = "NAILA") -> str:
    """``answer`` with the person's facts given back to them: "My parrot is Kiwi." → "Your parrot is Kiwi."
    and "My name is Sam." → "Your name is Sam." when Kiwi and Sam are values of the person's facts
    (``sentences``, the facts block) and not NAILA's own name. Small models mirror the question's "my"
    ("what's my parrot called?"); no prompt wording stopped the 0.5B from it. Anything else is unchanged."""
    names = fact_names(sentences) - {own_name}
    if not names:
        return answer
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    mine = re.compile(
        rf"\b(?P<my>[Mm]y)(?P<what>(?: [\w'’-]+){{1,3}}?)(?: is| 's|'s|’s)(?: called| named)? (?={alternatives}\b)"
    )
    have = re.compile(rf"\bI have (?P<what>an? [\w'’ -]{{1,30}}?) (?P<how>called|named) (?={alternatives}\b)")
    out = mine.sub(
        lambda m: f"{'Your' if m['my'] == 'My' else 'your'}{m['what']}{m[0][len(m['my']) + len(m['what']) :]}", answer
    )
    return have.sub(lambda m: f"You have {m['what']} {m['how']} ", out)
