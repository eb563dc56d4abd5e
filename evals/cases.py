"""The eval dataset: cases (what the user says, what a good answer must do) loaded from JSONL.

``evals/data/naila_cases.jsonl`` holds one JSON object per line: first a ``{"meta": {...}}`` record
with the dataset name and version, then one case per line::

    {"id": "memory-name", "category": "memory", "intent": "question",
     "turns": ["Hi, I'm Priya.", "I love painting.", "What's my name?"],
     "expect": {"behaviour": "recalls the name", "reference": "Your name is Priya.",
                "must_include": [["Priya"]], "memory": [["Priya"]]}}

``turns`` are the user's messages in order (one conversation per case); the evaluators judge the
answer to the last one (brevity, persona and hygiene look at every answer). ``intent`` is the
correct intent of the last message. Expectation fields (all optional):

- ``behaviour``: what a good answer does, in words (for people reading the report);
- ``reference``: an example of a good answer (relevance compares against it);
- ``must_include``: facts the answer must state; each entry is a list of accepted spellings, matched
  as whole words, case-insensitively (a spelling ending in ``*`` is a word stem: ``congrat*``);
- ``must_not_include``: phrases the answer must not contain;
- ``detail``: the last message asks for a detailed answer (brevity is relaxed);
- ``limit``: the message asks for something NAILA cannot do or know (honesty): one of LIMITS;
- ``memory``: facts from earlier turns the last answer must use (same shape as must_include);
- ``forbidden_identities``: names an injection tries to make her adopt (persona);
- ``names_self``: the answer should say she is NAILA (persona);
- ``user_facts``: what the person said about themselves, ``{KIND: value or [values]}`` (perspective: no
  answer may say them about NAILA, "my cat Kiwi"); kinds are USER_FACT_KINDS, a relation such as
  ``sister`` (the relative's name) or ``favourite_<thing>``.

Case fields beside ``expect``:

- ``must_pass``: a case any version worth shipping gets right; ``naila eval run`` exits with
  EXIT_GATE when one fails;
- ``split``: ``tuned`` (the default: cases a prompt or guard may be tuned on) or ``heldout`` (never
  tuned on; a change that helps only ``tuned`` is overfitting). Which cases are held out is not chosen
  by hand: :func:`heldout_by_rule` decides from the id, and a test holds the dataset to it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CATEGORIES = (
    "intent",
    "memory",
    "self",
    "honesty",
    "follow_up",
    "odd_input",
    "injection",
    "identity",  # who she is, under pressure over several turns (#14)
    "perspective",  # the person's facts stay the person's across 5+ turns
    "chatty",  # long rambling messages, emoji: short answers
    "correction",  # "actually my name is Sam", "forget that"
)
INTENTS = ("greeting", "time_query", "weather_query", "question", "gratitude", "goodbye", "general")
LIMITS = ("weather", "internet", "realtime", "physical", "personal", "action")
SPLITS = ("tuned", "heldout")
# What a person may say about themselves (expect.user_facts), beside relations and favourite_<thing>.
USER_FACT_KINDS = ("name", "pet", "pet_kind", "job", "city")
RELATIONS = (
    "sister",
    "brother",
    "mother",
    "mum",
    "mom",
    "father",
    "dad",
    "partner",
    "wife",
    "husband",
    "girlfriend",
    "boyfriend",
    "son",
    "daughter",
    "friend",
    "boss",
    "grandmother",
    "grandma",
    "grandfather",
    "grandpa",
    "cousin",
    "roommate",
    "flatmate",
)

DEFAULT_CASES = Path(__file__).parent / "data" / "naila_cases.jsonl"


class CaseError(ValueError):
    """The dataset file is malformed; the message names the line and the field."""


@dataclass(frozen=True)
class Expect:
    """What a good answer to the last turn must do."""

    behaviour: str = ""
    reference: str = ""
    must_include: tuple[tuple[str, ...], ...] = ()
    must_not_include: tuple[str, ...] = ()
    detail: bool = False
    limit: str | None = None
    memory: tuple[tuple[str, ...], ...] = ()
    forbidden_identities: tuple[str, ...] = ()
    names_self: bool = False
    user_facts: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (kind, accepted values), in file order

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["must_include"] = [list(g) for g in self.must_include]
        data["memory"] = [list(g) for g in self.memory]
        data["must_not_include"] = list(self.must_not_include)
        data["forbidden_identities"] = list(self.forbidden_identities)
        data["user_facts"] = {kind: list(values) for kind, values in self.user_facts}
        return data


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    intent: str
    turns: tuple[str, ...]
    expect: Expect = field(default_factory=Expect)
    must_pass: bool = False
    split: str = "tuned"

    @property
    def question(self) -> str:
        """The last user message (the one whose answer is judged)."""
        return self.turns[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "intent": self.intent,
            "turns": list(self.turns),
            "must_pass": self.must_pass,
            "split": self.split,
            "expect": self.expect.to_dict(),
        }

    # LangSmith examples: inputs are what the target gets, outputs are the reference the evaluators get.
    def example_inputs(self) -> dict[str, Any]:
        return {"case_id": self.id, "turns": list(self.turns)}

    def example_outputs(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "intent": self.intent,
            "must_pass": self.must_pass,
            "split": self.split,
            "expect": self.expect.to_dict(),
        }

    @classmethod
    def from_example(cls, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> Case:
        return parse_case(
            {
                "id": inputs["case_id"],
                "turns": inputs["turns"],
                "category": outputs["category"],
                "intent": outputs["intent"],
                "must_pass": outputs.get("must_pass", False),
                "split": outputs.get("split", "tuned"),
                "expect": outputs.get("expect") or {},
            },
            where=f"example {inputs.get('case_id')!r}",
        )


def heldout_by_rule(case_id: str) -> bool:
    """Whether a case belongs to the held-out split: about one id in three, by a hash of the id (sha256
    modulo 3), so nobody picks which cases are held out."""
    return int(hashlib.sha256(case_id.encode("utf-8")).hexdigest(), 16) % 3 == 0


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str
    path: Path
    sha256: str
    cases: tuple[Case, ...]

    def select(self, filters: str | None = None, limit: int | None = None) -> list[Case]:
        """Cases matching ``filters`` (comma-separated ids, categories, intents, splits, ``must_pass`` or glob
        patterns), at most ``limit``."""
        chosen = list(self.cases)
        if filters:
            patterns = [p.strip() for p in filters.split(",") if p.strip()]
            chosen = [c for c in chosen if any(_matches(c, p) for p in patterns)]
            if not chosen:
                raise CaseError(
                    f"no case matches --cases {filters!r}; use case ids, categories ({', '.join(CATEGORIES)}),"
                    f" intents, splits ({', '.join(SPLITS)}), must_pass or glob patterns such as 'memory-*'"
                )
        return chosen[:limit] if limit is not None else chosen


def _matches(case: Case, pattern: str) -> bool:
    if pattern == "must_pass":
        return case.must_pass
    return pattern in (case.category, case.intent, case.split) or fnmatch.fnmatchcase(case.id, pattern)


def _groups(value: Any, where: str, name: str) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list):
        raise CaseError(f"{where}: expect.{name} must be a list of lists of strings")
    groups = []
    for item in value:
        group = [item] if isinstance(item, str) else item
        if not isinstance(group, list) or not group or not all(isinstance(s, str) and s.strip() for s in group):
            raise CaseError(f"{where}: every entry of expect.{name} must be a string or a non-empty list of strings")
        groups.append(tuple(group))
    return tuple(groups)


def _strings(value: Any, where: str, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise CaseError(f"{where}: expect.{name} must be a list of non-empty strings")
    return tuple(value)


def _user_facts(value: Any, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not isinstance(value, Mapping):
        raise CaseError(f"{where}: expect.user_facts must be an object such as {{'name': 'Sam', 'pet': 'Kiwi'}}")
    facts = []
    for kind, raw in value.items():
        if kind not in USER_FACT_KINDS and kind not in RELATIONS and not kind.startswith("favourite_"):
            raise CaseError(
                f"{where}: expect.user_facts: unknown kind {kind!r}; use {', '.join(USER_FACT_KINDS)},"
                " a relation (sister, friend, ...) or favourite_<thing>"
            )
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise CaseError(f"{where}: expect.user_facts.{kind} must be a non-empty string or list of strings")
        facts.append((kind, tuple(values)))
    return tuple(facts)


_EXPECT_KEYS = {f for f in Expect.__dataclass_fields__}


def parse_case(data: Mapping[str, Any], *, where: str) -> Case:
    """One case from its JSON object; :class:`CaseError` names what is wrong."""
    unknown = set(data) - {"id", "category", "intent", "turns", "expect", "must_pass", "split"}
    if unknown:
        raise CaseError(f"{where}: unknown field(s) {sorted(unknown)}")
    case_id = data.get("id")
    if not isinstance(case_id, str) or not case_id.strip():
        raise CaseError(f"{where}: 'id' must be a non-empty string")
    where = f"{where} ({case_id})"
    category = data.get("category")
    if category not in CATEGORIES:
        raise CaseError(f"{where}: category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    intent = data.get("intent")
    if intent not in INTENTS:
        raise CaseError(f"{where}: intent must be one of {', '.join(INTENTS)}, got {intent!r}")
    turns = data.get("turns")
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise CaseError(f"{where}: 'turns' must be a non-empty list of strings")
    must_pass = data.get("must_pass", False)
    if not isinstance(must_pass, bool):
        raise CaseError(f"{where}: 'must_pass' must be true or false, got {must_pass!r}")
    split = data.get("split", "tuned")
    if split not in SPLITS:
        raise CaseError(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    raw = data.get("expect") or {}
    if not isinstance(raw, Mapping):
        raise CaseError(f"{where}: 'expect' must be an object")
    extra = set(raw) - _EXPECT_KEYS
    if extra:
        raise CaseError(f"{where}: unknown expect field(s) {sorted(extra)}; known: {sorted(_EXPECT_KEYS)}")
    limit = raw.get("limit")
    if limit is not None and limit not in LIMITS:
        raise CaseError(f"{where}: expect.limit must be one of {', '.join(LIMITS)}, got {limit!r}")
    memory = _groups(raw.get("memory", []), where, "memory")
    if memory and len(turns) < 2:
        raise CaseError(f"{where}: a memory expectation needs earlier turns to remember")
    expect = Expect(
        behaviour=str(raw.get("behaviour", "")),
        reference=str(raw.get("reference", "")),
        must_include=_groups(raw.get("must_include", []), where, "must_include"),
        must_not_include=_strings(raw.get("must_not_include", []), where, "must_not_include"),
        detail=bool(raw.get("detail", False)),
        limit=limit,
        memory=memory,
        forbidden_identities=_strings(raw.get("forbidden_identities", []), where, "forbidden_identities"),
        names_self=bool(raw.get("names_self", False)),
        user_facts=_user_facts(raw.get("user_facts", {}), where),
    )
    return Case(
        id=case_id,
        category=category,
        intent=intent,
        turns=tuple(turns),
        expect=expect,
        must_pass=must_pass,
        split=split,
    )


@dataclass(frozen=True)
class CaseFile:
    """A cases file read and checked line by line: its meta record's name and version, its hash, its cases."""

    name: str
    version: str
    path: Path
    sha256: str
    cases: tuple[Any, ...]


def read_case_file(
    file: Path, parse: Callable[..., Any], error: type[ValueError], what: str = "cases file"
) -> CaseFile:
    """Read a JSON-lines cases file: a first ``{"meta": {"name", "version"}}`` line, then one case per line
    made by ``parse(record, where=...)`` (each with a unique ``id``); problems raise ``error`` naming the line."""
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise error(f"cannot read the {what} {file}: {exc}") from exc
    meta: dict[str, Any] | None = None
    cases: list[Any] = []
    seen: set[str] = set()
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file.name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: invalid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise error(f"{where}: each line must be a JSON object")
        if "meta" in record:
            if meta is not None or cases:
                raise error(f"{where}: the meta record must be the first line, and only one")
            meta = dict(record["meta"])
            continue
        case = parse(record, where=where)
        if case.id in seen:
            raise error(f"{where}: duplicate case id {case.id!r}")
        seen.add(case.id)
        cases.append(case)
    if meta is None or not meta.get("name") or not meta.get("version"):
        raise error(f'{file}: the first line must be {{"meta": {{"name": ..., "version": ...}}}}')
    if not cases:
        raise error(f"{file}: no cases")
    return CaseFile(str(meta["name"]), str(meta["version"]), file, hashlib.sha256(raw).hexdigest(), tuple(cases))


def load_dataset(path: str | Path | None = None) -> Dataset:
    """Read and validate a cases file (default: the bundled ``naila_cases.jsonl``)."""
    read = read_case_file(Path(path) if path is not None else DEFAULT_CASES, parse_case, CaseError)
    return Dataset(name=read.name, version=read.version, path=read.path, sha256=read.sha256, cases=read.cases)


def categories_of(cases: Iterable[Case]) -> list[str]:
    """Categories in their canonical order, only those present."""
    present = {c.category for c in cases}
    return [c for c in CATEGORIES if c in present]


def as_groups(values: Sequence[str | Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    """Helper for tests and callers: ``["a", ["b", "c"]]`` → ``(("a",), ("b", "c"))``."""
    return tuple((v,) if isinstance(v, str) else tuple(v) for v in values)
