"""Scores the action dataset directly against a chat model (no graph), with and without the grammar.

With the grammar: ``model.bind_tools(tools, tool_choice="auto")`` under NAILA's persona, as the graph will
call it in turns that are not clear commands; calls come back in ``AIMessage.tool_calls``, and llama.cpp's
grammar holds every call to the tools' schemas (names, enums, numeric bounds). Without the grammar: the same
tools described in the system prompt as JSON, plain generation, calls parsed out of the text; this is what
the grammar is compared against.

What is judged is the model's first answer: its calls (never repaired: an out-of-limit call fails even
though the graph would send the error back and ask again) and what would be spoken. The spoken answer is
built as the graph builds it (nodes.robot_tools): the model's own text outside the calls, followed, when
every call passed validation, by ``confirmation()`` ("Turning my head to the left."); when a call is
refused nothing moves and nothing is confirmed. Cases never share a conversation. Sampling is greedy
(temperature 0) so runs repeat.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from evals.actions import (
    CATEGORIES,
    ActionCase,
    ActionEvaluator,
    ActionOutcome,
    Call,
    build_action_evaluators,
    tool_schemas,
)
from evals.evaluators import Score
from nodes.robot_tools import ValidatedAction, confirmation, validate_call

PLAIN_JSON_INSTRUCTIONS = """\

You can act with these tools (JSON Schema of each tool's arguments):
{tools}

When the person asks you to do one of these things, write each action on its own line as a JSON object \
{{"name": "<tool name>", "arguments": {{...}}}}, then one short sentence saying what you are doing. \
Keep every argument within its limits. When the person only asks a question or chats, do not write \
any JSON: just answer in words."""


@dataclass
class ActionResult:
    case: ActionCase
    outcome: ActionOutcome
    scores: dict[str, Score]
    latency_s: float
    failed: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failed and self.outcome.error is None


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)


def spoken_answer(prose: str, calls: Sequence[Call]) -> str:
    """What the graph would say: the model's text, then the confirmation of the calls when all are valid."""
    actions = [
        validate_call({"name": c.name, "args": dict(c.args), "id": f"call{i}", "type": "tool_call"})
        for i, c in enumerate(calls)
    ]
    valid = [a for a in actions if isinstance(a, ValidatedAction)]
    said = " ".join(prose.split())
    if calls and len(valid) == len(actions):
        said = f"{said} {confirmation(valid)}".strip()
    return said


# ---------------------------------------------------------------- with the grammar


def run_with_grammar(
    model: Any, case: ActionCase, persona: str, tools: Sequence[Any], max_tokens: int
) -> ActionOutcome:
    """One case through ``bind_tools(tools, tool_choice="auto")``."""
    bound = model.bind_tools(tools, tool_choice="auto", temperature=0.0, max_tokens=max_tokens)
    reply = bound.invoke([SystemMessage(persona), HumanMessage(case.utterance)])
    calls = tuple(Call(str(tc["name"]), dict(tc.get("args") or {})) for tc in reply.tool_calls)
    invalid = tuple(
        f"{tc.get('name') or '?'}({tc.get('args') or ''})" for tc in getattr(reply, "invalid_tool_calls", [])
    )
    spoken = spoken_answer(_text(reply), calls) if not invalid else " ".join(_text(reply).split())
    return ActionOutcome(calls=calls, spoken=spoken, invalid=invalid)


# ---------------------------------------------------------------- without the grammar (plain JSON prompting)


def plain_json_prompt(persona: str, tools: Sequence[Any]) -> str:
    described = [
        {
            "name": t["function"]["name"],
            "description": t["function"]["description"],
            "parameters": t["function"]["parameters"],
        }
        if isinstance(t, dict) and "function" in t
        else t
        for t in tools
    ]
    return persona + PLAIN_JSON_INSTRUCTIONS.format(
        tools="\n".join(json.dumps(t, ensure_ascii=False) for t in described)
    )


_FENCE = re.compile(r"```(?:json)?|</?tool_call>")


def parse_plain_calls(text: str) -> tuple[list[Call], list[str], str]:
    """(calls, unparseable call texts, spoken text) from a plain-prompted answer: every JSON object with a
    ``"name"`` is a call (its ``arguments``, ``args`` or ``parameters`` are the arguments); an object that
    starts like a call but does not parse, or a JSON object that is not a call (``{"response": "done"}``), is
    an unparseable call (JSON is never spoken); the rest, fences removed, is speech."""
    decoder = json.JSONDecoder()
    calls: list[Call] = []
    invalid: list[str] = []
    spoken: list[str] = []
    position = 0
    while (start := text.find("{", position)) != -1:
        spoken.append(text[position:start])
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            rest = text[start:]
            if re.match(r'\{\s*"(?:name|tool|function)"', rest):
                invalid.append(rest.split("\n", 1)[0][:120])
                position = start + len(rest.split("\n", 1)[0])
            else:
                spoken.append("{")
                position = start + 1
            continue
        position = end
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            args: Any = next((value[k] for k in ("arguments", "args", "parameters") if k in value), {})
            if isinstance(args, str):  # OpenAI style: arguments as a JSON string
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    invalid.append(text[start:end][:120])
                    continue
            calls.append(Call(value["name"], args if isinstance(args, dict) else {"_": args}))
        else:
            invalid.append(text[start:end][:120])
    spoken.append(text[position:])
    prose = _FENCE.sub(" ", "".join(spoken))
    return calls, invalid, " ".join(prose.split())


def run_without_grammar(
    model: Any, case: ActionCase, persona: str, tools: Sequence[Any], max_tokens: int
) -> ActionOutcome:
    """One case with the tools described in the prompt and no grammar; calls parsed from the text."""
    plain = model.bind(temperature=0.0, max_tokens=max_tokens)
    messages: list[BaseMessage] = [SystemMessage(plain_json_prompt(persona, tools)), HumanMessage(case.utterance)]
    reply = plain.invoke(messages)
    calls, invalid, prose = parse_plain_calls(_text(reply))
    spoken = spoken_answer(prose, calls) if not invalid else prose
    return ActionOutcome(calls=tuple(calls), spoken=spoken, invalid=tuple(invalid))


# ---------------------------------------------------------------- the run


def run_actions(
    model: Any,
    cases: Sequence[ActionCase],
    *,
    grammar: bool = True,
    persona: str | None = None,
    max_tokens: int = 200,
    progress: IO[str] | bool = True,
) -> tuple[list[ActionResult], list[ActionEvaluator], str]:
    """Score ``cases`` on ``model``; returns (results, evaluators, where the tool schemas came from)."""
    from prompts.persona import load_persona

    stream: IO[str] | None = sys.stderr if progress is True else (progress or None)
    persona = persona if persona is not None else load_persona()
    tools, source = tool_schemas(), "nodes.robot_tools"
    evaluators = build_action_evaluators()
    run = run_with_grammar if grammar else run_without_grammar
    results: list[ActionResult] = []
    for number, case in enumerate(cases, start=1):
        started = time.perf_counter()
        try:
            outcome = run(model, case, persona, tools, max_tokens)
        except Exception as exc:  # one failed case must not lose the others; it fails every evaluator that applies
            outcome = ActionOutcome(error=f"{type(exc).__name__}: {exc}")
        latency = time.perf_counter() - started
        scores = {e.key: e(case, outcome) for e in evaluators}
        failed = [e.key for e in evaluators if scores[e.key].passed(e.threshold) is False]
        results.append(ActionResult(case, outcome, scores, round(latency, 3), failed))
        if stream is not None:
            made = ",".join(c.name for c in outcome.calls) or "-"
            verdict = "ok" if not failed and outcome.error is None else f"FAIL {','.join(failed) or outcome.error}"
            stream.write(f"[{number}/{len(cases)}] {case.id}: {made} ({latency:.1f}s) {verdict}\n")
            stream.flush()
    return results, evaluators, source


# ---------------------------------------------------------------- through the graph (naila eval run)


def outcome_from_state(state: dict[str, Any], error: str | None = None) -> ActionOutcome:
    """What a user got from one turn of the graph: the calls it executed (``tool_calls``, after the act
    node's validation and repair rounds, so only valid calls reach here) and the answer it spoke. A graph
    whose state has no ``tool_calls`` (before they were kept) is judged by the ``commands`` it sent."""
    if error is not None:
        return ActionOutcome(error=error)
    if "tool_calls" in state:
        calls = tuple(Call(str(c.get("name")), dict(c.get("args") or {})) for c in state.get("tool_calls") or [])
    else:
        calls = tuple(calls_from_commands(state.get("commands") or []))
    return ActionOutcome(calls=calls, spoken=" ".join(str(state.get("response_text") or "").split()))


def calls_from_commands(commands: Sequence[dict[str, Any]]) -> list[Call]:
    """The robot tool calls behind ``naila/command/request`` commands (PROTOCOL.md's shapes, as
    ``nodes.robot_tools.commands_for`` writes them): a head ``pan`` and the ``tilt`` after it are one
    ``move_head``. A command of no known shape is kept as a call of a tool named after it, which fails."""
    calls: list[Call] = []
    for command in commands:
        p = dict(command.get("payload") or {})
        group, act = p.get("motor_group"), p.get("action")
        if command.get("type") == "led":
            calls.append(Call("set_lights", {k: p[k] for k in ("pattern", "color", "duration_ms") if k in p}))
        elif group == "head" and act == "tilt" and calls and calls[-1].name == "move_head":
            calls[-1] = Call("move_head", {**calls[-1].args, "tilt_degrees": p.get("degrees")})
        elif group == "head":
            key = "pan_degrees" if act == "pan" else "tilt_degrees"
            calls.append(Call("move_head", {key: p.get("degrees"), "speed": p.get("speed")}))
        elif group == "body" and act == "turn":
            calls.append(Call("turn_body", {"degrees": p.get("degrees"), "speed": p.get("speed")}))
        elif group == "body":
            calls.append(
                Call("drive", {"direction": act, "distance_cm": p.get("distance_cm"), "speed": p.get("speed")})
            )
        elif group == "eyes":
            calls.append(
                Call("show_expression", {"expression": p.get("expression"), "duration_ms": p.get("duration_ms")})
            )
        elif group == "all" and act == "stop":
            calls.append(Call("stop_all_motion", {}))
        else:
            calls.append(Call(f"unknown:{command.get('type')}/{group}/{act}", p))
    return calls


Play = Callable[[str, int, str], tuple[Any, dict[str, Any]]]


def run_actions_in_graph(
    play: Play, cases: Sequence[ActionCase], *, progress: IO[str] | None = None
) -> tuple[list[ActionResult], list[ActionEvaluator]]:
    """Score ``cases`` as a user gets them: each utterance is one turn of the graph on its own thread
    (``play(thread_key, turn_index, text)`` returns the turn, with ``error`` and ``latency_s``, and the
    final graph state). Clear commands go through the act node's forced calls; other turns answer in words."""
    evaluators = build_action_evaluators()
    results: list[ActionResult] = []
    for number, case in enumerate(cases, start=1):
        started = time.perf_counter()
        turn, state = play(f"action:{case.id}", 0, case.utterance)
        outcome = outcome_from_state(state, getattr(turn, "error", None))
        latency = time.perf_counter() - started
        scores = {e.key: e(case, outcome) for e in evaluators}
        failed = [e.key for e in evaluators if scores[e.key].passed(e.threshold) is False]
        results.append(ActionResult(case, outcome, scores, round(latency, 3), failed))
        if progress is not None:
            made = ",".join(c.name for c in outcome.calls) or "-"
            verdict = "ok" if not failed and outcome.error is None else f"FAIL {','.join(failed) or outcome.error}"
            progress.write(f"[action {number}/{len(cases)}] {case.id}: {made} ({latency:.1f}s) {verdict}\n")
            progress.flush()
    return results, evaluators


def action_report(
    results: Sequence[ActionResult], evaluators: Sequence[ActionEvaluator], dataset: Any, filters: str | None
) -> dict[str, Any]:
    """The ``actions`` part of an eval report (JSON-able)."""
    return {
        "dataset": {
            "name": dataset.name,
            "version": dataset.version,
            "sha256": dataset.sha256,
            "path": str(dataset.path),
            "filter": filters,
            "cases": len(results),
            "cases_total": len(dataset.cases),
        },
        "evaluators": {e.key: {"description": e.description, "threshold": e.threshold} for e in evaluators},
        "summary": summarize(results, evaluators),
        "cases": [
            {
                "id": r.case.id,
                "category": r.case.category,
                "utterance": r.case.utterance,
                "must_pass": r.case.must_pass,
                "outcome": r.outcome.to_dict(),
                "scores": {
                    k: {"score": sc.score, "comment": sc.comment, "passed": sc.passed(_threshold(evaluators, k))}
                    for k, sc in r.scores.items()
                },
                "failed": r.failed,
                "passed": r.passed,
                "latency_s": r.latency_s,
            }
            for r in results
        ],
    }


def _threshold(evaluators: Sequence[ActionEvaluator], key: str) -> float:
    return next(e.threshold for e in evaluators if e.key == key)


def summarize(results: Sequence[ActionResult], evaluators: Sequence[ActionEvaluator]) -> dict[str, Any]:
    """Pass counts per evaluator (overall and on must_pass cases) and per category."""
    per_evaluator = {}
    for e in evaluators:
        applied = [r for r in results if r.scores[e.key].score is not None]
        passed = [r for r in applied if r.scores[e.key].passed(e.threshold)]
        must = [r for r in applied if r.case.must_pass]
        per_evaluator[e.key] = {
            "applied": len(applied),
            "passed": len(passed),
            "rate": round(len(passed) / len(applied), 3) if applied else None,
            "must_applied": len(must),
            "must_passed": sum(1 for r in must if r.scores[e.key].passed(e.threshold)),
        }
    per_category = {}
    for category in CATEGORIES:
        rows = [r for r in results if r.case.category == category]
        if rows:
            per_category[category] = {"cases": len(rows), "passed": sum(1 for r in rows if r.passed)}
    return {
        "cases": len(results),
        "passed": sum(1 for r in results if r.passed),
        "must_pass": sum(1 for r in results if r.case.must_pass),
        "must_passed": sum(1 for r in results if r.case.must_pass and r.passed),
        "evaluators": per_evaluator,
        "categories": per_category,
    }


def _rate(passed: int, total: int) -> str:
    return f"{passed}/{total} ({100 * passed / total:.0f}%)" if total else "n/a"


def render_action_table(
    results: Sequence[ActionResult], evaluators: Sequence[ActionEvaluator], *, title: str = ""
) -> str:
    """The plain-text tables: one row per evaluator (all cases that it applies to, and the must_pass ones),
    one row per category (cases passing every evaluator), and the failures."""
    summary = summarize(results, evaluators)
    lines = [title] if title else []
    width = max(len(e.key) for e in evaluators)
    lines.append(f"{'evaluator':<{width}}  {'pass rate':>14}  {'must_pass':>14}  description")
    for e in evaluators:
        s = summary["evaluators"][e.key]
        overall, must = _rate(s["passed"], s["applied"]), _rate(s["must_passed"], s["must_applied"])
        lines.append(f"{e.key:<{width}}  {overall:>14}  {must:>14}  {e.description}")
    lines.append("")
    lines.append(f"{'category':<{width}}  {'all pass':>14}")
    for category, s in summary["categories"].items():
        lines.append(f"{category:<{width}}  {_rate(s['passed'], s['cases']):>14}")
    lines.append(f"{'all':<{width}}  {_rate(summary['passed'], summary['cases']):>14}")
    lines.append(f"{'must_pass':<{width}}  {_rate(summary['must_passed'], summary['must_pass']):>14}")
    failures = [r for r in results if not r.passed]
    if failures:
        lines.append("")
        lines.append("failures:")
        for r in failures:
            why = r.outcome.error or "; ".join(f"{k}: {r.scores[k].comment}" for k in r.failed)
            flag = " [must_pass]" if r.case.must_pass else ""
            lines.append(f"  {r.case.id}{flag}: {why}")
    return "\n".join(lines)
