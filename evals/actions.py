"""The action eval (issue #13 §6): what a person tells NAILA's body to do, and how a model's tool calls are judged.

``evals/data/actions.jsonl`` holds a ``{"meta": {...}}`` line, then one case per line::

    {"id": "clear-head-left", "category": "clear", "utterance": "Turn your head left.",
     "calls": [{"tool": "move_head", "args": {"pan_degrees": "<0"}}], "must_pass": true,
     "behaviour": "pans the head to the left"}

- ``category``: one of CATEGORIES. ``clear`` commands, ``paraphrase``s of them, ``out_of_range`` commands
  (values beyond the tools' limits), ``no_action`` (questions and chat that must not move anything),
  ``ambiguous`` (capability questions such as "can you turn your head?"), ``multi_step`` requests;
- ``calls``: the tool calls a good answer makes, in any order (order is not judged: the robot runs a
  turn's commands in sequence anyway). An entry is ``{"tool": NAME, "args": {ARG: EXPECTATION}}`` or
  ``{"any_of": [entry, ...]}`` when several calls are right ("turn left" may turn the body or the head).
  An EXPECTATION is a literal (equal; strings case-insensitively), a list of accepted literals, or a
  comparison ``"<0"``, ``">0"``, ``"<=-20"``, ``">=5"``. Arguments not listed may take any value in limits;
- ``refusal_ok``: (out-of-range cases) a spoken refusal with no call is as good as an in-limit call;
- ``must_pass``: the clearest cases, which any model worth shipping gets right.

Decisions the dataset encodes:
- **Out-of-range values** ("turn your head 200 degrees"): right = a call of the right tool with every
  argument within the limits (clamped), or no call and a spoken refusal ("I can only turn 90 degrees").
  A call with an argument outside the limits is always wrong, whatever is said.
- **Capability questions** ("can you turn your head?") are ``ambiguous``: saying so in words is right,
  and a demonstration call of the tool the question names, within limits, is tolerated; another tool is
  wrong. "Can you glance over to the left for me?" names a direction and is a polite command
  (``paraphrase``).
- Questions that mention an action word ("what colour are your lights?", "turning points in history")
  must not trigger a call.

The evaluators have the same shape as evals.evaluators (``(case, outcome) -> Score``, ``None`` = n/a) and
run on plain data, so each is tested on hand-written model outputs.

The tools, their limits and the validation of a call are the graph's own (``nodes.robot_tools``), so the
eval judges calls exactly as the graph would before moving anything.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import ToolMessage
from pydantic import BaseModel

from evals.cases import read_case_file
from evals.evaluators import Score, normalize
from nodes.robot_tools import ROBOT_TOOLS, robot_tool_schemas, tool_name, validate_call

CATEGORIES = ("clear", "paraphrase", "out_of_range", "no_action", "ambiguous", "multi_step")
DEFAULT_ACTION_CASES = Path(__file__).parent / "data" / "actions.jsonl"


class ActionCaseError(ValueError):
    """The action dataset is malformed; the message names the line and the field."""


# ---------------------------------------------------------------- the tools (nodes.robot_tools)

TOOL_MODELS: dict[str, type[BaseModel]] = {tool_name(tool): tool for tool in ROBOT_TOOLS}


def tool_schemas() -> list[dict[str, Any]]:
    """The robot tools as the graph binds them (OpenAI tool dicts, fixed order)."""
    return robot_tool_schemas()


def check_call(name: str, args: Any) -> str | None:
    """None when ``name(**args)`` passes the graph's own validation (known tool, arguments within the hard
    limits), else the error the graph would send back to the model."""
    result = validate_call({"name": name, "args": args, "id": "eval", "type": "tool_call"})
    if isinstance(result, ToolMessage):
        return str(result.content)
    return None


# ---------------------------------------------------------------- cases


@dataclass(frozen=True)
class CallSpec:
    """One expected call: the tool and what its arguments must satisfy."""

    tool: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "args": dict(self.args)}


@dataclass(frozen=True)
class ActionCase:
    id: str
    category: str
    utterance: str
    calls: tuple[tuple[CallSpec, ...], ...] = ()  # each entry: the alternatives that satisfy it
    must_pass: bool = False
    refusal_ok: bool = False
    behaviour: str = ""

    @property
    def expects_action(self) -> bool:
        return bool(self.calls)

    def tolerated_tools(self) -> set[str]:
        """Tools a capability question may demonstrate: the ones its words name."""
        text = normalize(self.utterance)
        named = set()
        for tool, words in _TOOL_WORDS.items():
            if any(re.search(rf"\b{w}", text) for w in words):
                named.add(tool)
        return named


_TOOL_WORDS = {
    "move_head": ("head", "look"),
    "drive": ("drive", "move forward", "move back"),
    "turn_body": ("turn around", "spin", "rotate"),
    "set_lights": ("light", "led", "colou?r"),
    "show_expression": ("face", "expression", "smile"),
    "stop_all_motion": ("stop",),
}

_COMPARISON = re.compile(r"^(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?)$")


def _check_expectation(where: str, arg: str, value: Any) -> None:
    if isinstance(value, str) and value[:1] in "<>" and not _COMPARISON.match(value):
        raise ActionCaseError(f"{where}: args.{arg}: comparison {value!r} must look like '<0' or '>=5'")
    if isinstance(value, list) and not value:
        raise ActionCaseError(f"{where}: args.{arg}: a list of accepted values must not be empty")


def _spec(data: Any, where: str) -> CallSpec:
    if not isinstance(data, Mapping) or set(data) - {"tool", "args"}:
        raise ActionCaseError(f"{where}: a call is {{'tool': NAME, 'args': {{...}}}}, got {data!r}")
    tool = data.get("tool")
    if tool not in TOOL_MODELS:
        raise ActionCaseError(f"{where}: unknown tool {tool!r}; tools: {', '.join(TOOL_MODELS)}")
    args = data.get("args") or {}
    if not isinstance(args, Mapping):
        raise ActionCaseError(f"{where}: 'args' must be an object")
    known = TOOL_MODELS[tool].model_fields
    for arg, value in args.items():
        if arg not in known:
            raise ActionCaseError(f"{where}: {tool} has no argument {arg!r}; it has {', '.join(known) or 'none'}")
        _check_expectation(where, arg, value)
    return CallSpec(tool=tool, args=dict(args))


def parse_action_case(data: Mapping[str, Any], *, where: str) -> ActionCase:
    """One case from its JSON object; :class:`ActionCaseError` names what is wrong."""
    unknown = set(data) - {"id", "category", "utterance", "calls", "must_pass", "refusal_ok", "behaviour"}
    if unknown:
        raise ActionCaseError(f"{where}: unknown field(s) {sorted(unknown)}")
    case_id = data.get("id")
    if not isinstance(case_id, str) or not case_id.strip():
        raise ActionCaseError(f"{where}: 'id' must be a non-empty string")
    where = f"{where} ({case_id})"
    category = data.get("category")
    if category not in CATEGORIES:
        raise ActionCaseError(f"{where}: category must be one of {', '.join(CATEGORIES)}, got {category!r}")
    utterance = data.get("utterance")
    if not isinstance(utterance, str) or not utterance.strip():
        raise ActionCaseError(f"{where}: 'utterance' must be a non-empty string")
    raw_calls = data.get("calls") or []
    if not isinstance(raw_calls, list):
        raise ActionCaseError(f"{where}: 'calls' must be a list")
    calls = []
    for entry in raw_calls:
        if isinstance(entry, Mapping) and "any_of" in entry:
            options = entry["any_of"]
            if not isinstance(options, list) or not options:
                raise ActionCaseError(f"{where}: 'any_of' must be a non-empty list of calls")
            calls.append(tuple(_spec(o, where) for o in options))
        else:
            calls.append((_spec(entry, where),))
    if category in ("no_action", "ambiguous") and calls:
        raise ActionCaseError(f"{where}: a {category} case expects no call; leave 'calls' empty")
    if category not in ("no_action", "ambiguous") and not calls:
        raise ActionCaseError(f"{where}: a {category} case must list the calls it expects")
    if category == "multi_step" and len(calls) < 2:
        raise ActionCaseError(f"{where}: a multi_step case expects at least two calls")
    return ActionCase(
        id=case_id,
        category=category,
        utterance=utterance,
        calls=tuple(calls),
        must_pass=bool(data.get("must_pass", False)),
        refusal_ok=bool(data.get("refusal_ok", False)),
        behaviour=str(data.get("behaviour", "")),
    )


@dataclass(frozen=True)
class ActionDataset:
    name: str
    version: str
    path: Path
    sha256: str
    cases: tuple[ActionCase, ...]

    def select(self, limit: int | None = None) -> list[ActionCase]:
        """The first ``limit`` cases, taken round-robin over the categories so a short run still sees each kind."""
        if limit is None or limit >= len(self.cases):
            return list(self.cases)
        queues = {c: [case for case in self.cases if case.category == c] for c in CATEGORIES}
        chosen: list[ActionCase] = []
        while len(chosen) < limit:
            for category in CATEGORIES:
                if queues[category] and len(chosen) < limit:
                    chosen.append(queues[category].pop(0))
        return chosen

    def matching(self, filters: str | None) -> list[ActionCase]:
        """The cases matching ``filters`` as ``naila eval run --cases`` reads it (ids, categories, ``must_pass``,
        glob patterns; comma-separated); all cases without a filter, possibly none with one."""
        if not filters:
            return list(self.cases)
        patterns = [p.strip() for p in filters.split(",") if p.strip()]

        def hit(case: ActionCase, pattern: str) -> bool:
            if pattern == "must_pass":
                return case.must_pass
            return pattern in (case.category, "actions") or fnmatch.fnmatchcase(case.id, pattern)

        return [c for c in self.cases if any(hit(c, p) for p in patterns)]


def load_action_dataset(path: str | Path | None = None) -> ActionDataset:
    """Read and validate an action cases file (default: ``evals/data/actions.jsonl``)."""
    file = Path(path) if path is not None else DEFAULT_ACTION_CASES
    read = read_case_file(file, parse_action_case, ActionCaseError, "action cases file")
    return ActionDataset(name=read.name, version=read.version, path=read.path, sha256=read.sha256, cases=read.cases)


# ---------------------------------------------------------------- what the model did


@dataclass(frozen=True)
class Call:
    """One tool call the model made (``args`` as parsed; not yet checked against the limits)."""

    name: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class ActionOutcome:
    """What the model did for one case: its calls, what it said, and calls it started but never finished
    (``invalid``: cut off or unparseable; they count as calls, never as valid ones)."""

    calls: tuple[Call, ...] = ()
    spoken: str = ""
    invalid: tuple[str, ...] = ()
    error: str | None = None

    @property
    def acted(self) -> bool:
        return bool(self.calls or self.invalid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": [{"name": c.name, "args": dict(c.args)} for c in self.calls],
            "spoken": self.spoken,
            "invalid": list(self.invalid),
            "error": self.error,
        }


# ---------------------------------------------------------------- argument expectations


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return normalize(expected).replace(" ", "") == normalize(actual).replace(" ", "")
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return float(expected) == float(actual)
    return bool(expected == actual)


def satisfies(expected: Any, actual: Any) -> bool:
    """``actual`` meets one argument expectation (literal, list of literals, or comparison)."""
    if isinstance(expected, list):
        return any(satisfies(e, actual) for e in expected)
    if isinstance(expected, str) and (match := _COMPARISON.match(expected)):
        if isinstance(actual, bool) or not isinstance(actual, int | float):
            return False
        op, bound = match.group(1), float(match.group(2))
        return {"<": actual < bound, ">": actual > bound, "<=": actual <= bound, ">=": actual >= bound}[op]
    return _same(expected, actual)


def spec_misses(spec: CallSpec, call: Call) -> list[str]:
    """The argument expectations of ``spec`` that ``call`` does not meet (an omitted argument is checked
    against the tool's default)."""
    defaults = {name: f.default for name, f in TOOL_MODELS[spec.tool].model_fields.items() if not f.is_required()}
    misses = []
    for arg, expected in spec.args.items():
        actual = call.args.get(arg, defaults.get(arg))
        if not satisfies(expected, actual):
            misses.append(f"{spec.tool}.{arg}={actual!r} (expected {expected!r})")
    return misses


def match_calls(case: ActionCase, calls: Sequence[Call]) -> tuple[list[tuple[CallSpec, Call]], int, list[Call]]:
    """Pair expected calls with made calls by tool (order ignored). Returns (pairs, expected calls left
    unmatched, extra calls). Among several calls of one tool the one meeting most expectations wins."""
    left = list(calls)
    pairs: list[tuple[CallSpec, Call]] = []
    unmatched = 0
    for options in case.calls:
        best: tuple[int, CallSpec, Call] | None = None
        for spec in options:
            for call in left:
                if call.name == spec.tool:
                    misses = len(spec_misses(spec, call))
                    if best is None or misses < best[0]:
                        best = (misses, spec, call)
        if best is None:
            unmatched += 1
            continue
        pairs.append((best[1], best[2]))
        left.remove(best[2])
    return pairs, unmatched, left


# ---------------------------------------------------------------- evaluators

_REFUSAL = re.compile(
    r"\b(?:can't|cannot|can not|couldn't|could not|unable|not able|won't|too (?:far|much|long|fast|big)"
    r"|only (?:turn|go|drive|move|tilt|spin|rotate|keep|do|look)|at most|up to|maximum|max|limit|limits|sorry"
    r"|i'm afraid|beyond)\b"
)
_CONFIRMS = re.compile(
    r"\b(?:done|okay|ok|sure|there you go|here you go|turn\w*|look\w*|head|light\w*|colou?r|blink\w*"
    r"|pulse|rainbow|glow\w*|driv\w*|mov\w*|forward|backward|back|spin\w*|rotat\w*|left|right|up|down"
    r"|face|smil\w*|happy|sad|surprised|thinking|sleepy|love|angry|stop\w*|off)\b"
)


class RightTool:
    """The right tool(s), and no other: on a case that expects calls, the share of expected calls made
    (by tool name; ``any_of`` counts once) minus a quarter per extra call or unfinished call. An
    out-of-range case with ``refusal_ok`` also passes with no call and a spoken refusal. A capability
    question (ambiguous) passes with no call or a call of the tool it names. n/a on no_action cases."""

    key = "right_tool"
    threshold = 1.0
    description = "the expected tool(s) called, nothing else (refusal accepted for out-of-range)"

    def __call__(self, case: ActionCase, outcome: ActionOutcome) -> Score:
        if case.category == "no_action":
            return Score(self.key, None, "n/a (no action asked)")
        made = [c.name for c in outcome.calls]
        if case.category == "ambiguous":
            if not outcome.acted:
                return Score(self.key, 1.0, "no call (answered the capability question)")
            wrong = [n for n in made if n not in case.tolerated_tools()] + list(outcome.invalid)
            if wrong:
                return Score(self.key, 0.0, f"called {', '.join(wrong)}, which the question does not name")
            return Score(self.key, 1.0, f"demonstrated with {', '.join(made)}")
        if not outcome.acted and case.refusal_ok and _REFUSAL.search(normalize(outcome.spoken)):
            return Score(self.key, 1.0, f"refused in words: {_short(outcome.spoken)}")
        _, unmatched, extra = match_calls(case, outcome.calls)
        expected = len(case.calls)
        score = (expected - unmatched) / expected - 0.25 * (len(extra) + len(outcome.invalid))
        parts = [f"called {', '.join(made) or 'nothing'}"]
        if unmatched:
            wanted = [" or ".join(s.tool for s in opts) for opts in case.calls]
            parts.append(f"expected {', '.join(wanted)}")
        if extra:
            parts.append(f"extra {', '.join(c.name for c in extra)}")
        if outcome.invalid:
            parts.append(f"{len(outcome.invalid)} unfinished/unparseable call(s)")
        return Score(self.key, round(max(0.0, score), 3), "; ".join(parts))


class WithinLimits:
    """Every call made is a known tool with valid arguments inside the limits (1) or not (0); an unfinished
    or unparseable call fails. n/a when no call was made."""

    key = "within_limits"
    threshold = 1.0
    description = "every call: known tool, valid arguments within the hard limits"

    def __call__(self, case: ActionCase, outcome: ActionOutcome) -> Score:
        if not outcome.acted:
            return Score(self.key, None, "n/a (no call)")
        problems = [p for c in outcome.calls if (p := check_call(c.name, c.args))]
        problems += [f"unfinished or unparseable call: {_short(text)}" for text in outcome.invalid]
        if problems:
            return Score(self.key, 0.0, "; ".join(problems))
        return Score(self.key, 1.0, f"{len(outcome.calls)} valid call(s)")


class ExpectedArgs:
    """The arguments say what was asked (direction, sign of an angle, colour, pattern, exact numbers): the
    share of matched calls that meet every expectation of their case. n/a when no expected call was made."""

    key = "expected_args"
    threshold = 1.0
    description = "arguments match the request (sign of pan, colour, distance...)"

    def __call__(self, case: ActionCase, outcome: ActionOutcome) -> Score:
        pairs, _, _ = match_calls(case, outcome.calls)
        if not pairs:
            return Score(self.key, None, "n/a (no expected call made)")
        misses = [m for spec, call in pairs for m in spec_misses(spec, call)]
        good = sum(1 for spec, call in pairs if not spec_misses(spec, call))
        comment = "; ".join(misses) if misses else f"{good} call(s) as asked"
        return Score(self.key, round(good / len(pairs), 3), comment)


class NoAction:
    """Nothing moves when nothing was asked: on no_action cases 1 with no call, 0 with any call
    (unfinished ones included). n/a elsewhere."""

    key = "no_action"
    threshold = 1.0
    description = "no call on questions and chat"

    def __call__(self, case: ActionCase, outcome: ActionOutcome) -> Score:
        if case.category != "no_action":
            return Score(self.key, None, "n/a (an action may be asked)")
        if outcome.acted:
            names = [c.name for c in outcome.calls] + ["(unfinished)"] * len(outcome.invalid)
            return Score(self.key, 0.0, f"called {', '.join(names)}")
        if not outcome.spoken.strip():
            return Score(self.key, 0.0, "no call, but nothing said either")
        return Score(self.key, 1.0, "answered in words")


class Confirmation:
    """When a valid call was made, NAILA says so: 1 when the spoken answer is not empty, holds no JSON or
    markup, and mentions the action (a movement, light or face word, or "done"/"okay"); 0.5 when it says
    something that names none of it; 0 when it says nothing. n/a when no valid call was made."""

    key = "confirmation"
    threshold = 1.0
    description = "a spoken confirmation accompanies an action"

    def __call__(self, case: ActionCase, outcome: ActionOutcome) -> Score:
        if not any(check_call(c.name, c.args) is None for c in outcome.calls):
            return Score(self.key, None, "n/a (no valid call)")
        spoken = outcome.spoken.strip()
        if not spoken:
            return Score(self.key, 0.0, "acted without saying anything")
        if re.search(r"[{}]|<\/?tool_call>|\"name\"\s*:", spoken):
            return Score(self.key, 0.0, f"the spoken text holds call markup: {_short(spoken)}")
        if _CONFIRMS.search(normalize(spoken)):
            return Score(self.key, 1.0, _short(spoken))
        return Score(self.key, 0.5, f"says nothing about the action: {_short(spoken)}")


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


ActionEvaluator = RightTool | WithinLimits | ExpectedArgs | NoAction | Confirmation


def build_action_evaluators() -> list[ActionEvaluator]:
    """All action evaluators in report order."""
    return [RightTool(), WithinLimits(), ExpectedArgs(), NoAction(), Confirmation()]


ACTION_EVALUATOR_KEYS = (RightTool.key, WithinLimits.key, ExpectedArgs.key, NoAction.key, Confirmation.key)
