"""Eval reports: the summary tables, the JSON and Markdown files, and the comparison of two runs."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from evals.cases import SPLITS, Case, categories_of
from evals.evaluators import Evaluator, Score, Turn

SCHEMA = "naila-eval-report/1"
CHANGE = 0.1  # a per-case score change at least this big (or a pass/fail flip) is reported by compare


class ReportError(ValueError):
    """A report file cannot be read or is not a NAILA eval report."""


@dataclass
class CaseResult:
    case: Case
    turns: list[Turn]
    scores: dict[str, Score]
    error: str | None = None


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return round(ordered[index], 3)


def build_report(
    results: Sequence[CaseResult],
    evaluators: Sequence[Evaluator],
    **meta: Any,
) -> dict[str, Any]:
    """The JSON-able report: run metadata (``meta``), per-case scores and the summary."""
    thresholds = {e.key: e.threshold for e in evaluators}
    cases: list[dict[str, Any]] = []
    for result in results:
        scores = {}
        failed = []
        for key, threshold in thresholds.items():
            score = result.scores.get(key) or Score(key, None, "not scored")
            passed = score.passed(threshold)
            scores[key] = {"score": score.score, "comment": score.comment, "passed": passed}
            if passed is False:
                failed.append(key)
        cases.append(
            {
                "id": result.case.id,
                "category": result.case.category,
                "intent": result.case.intent,
                "split": result.case.split,
                "must_pass": result.case.must_pass,
                "behaviour": result.case.expect.behaviour,
                "answer": result.turns[-1].answer if result.turns else "",
                "turns": [t.__dict__ for t in result.turns],
                "scores": scores,
                "failed": failed,
                "passed": not failed and not result.error,
                "error": result.error,
            }
        )
    created = meta.pop("created_at", None)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        **meta,
        "created_at": created.isoformat() if isinstance(created, datetime) else created,
        "evaluators": {e.key: {"description": e.description, "threshold": e.threshold} for e in evaluators},
        "summary": summarize(cases, [e.key for e in evaluators], [r.case for r in results]),
        "cases": cases,
    }
    return report


def summarize(cases: Sequence[dict[str, Any]], keys: Sequence[str], case_objs: Sequence[Case]) -> dict[str, Any]:
    evaluators: dict[str, Any] = {}
    for key in keys:
        scored = [c["scores"][key] for c in cases if c["scores"][key]["score"] is not None]
        passed = sum(1 for s in scored if s["passed"])
        evaluators[key] = {
            "mean": _mean([s["score"] for s in scored]),
            "n": len(scored),
            "passed": passed,
            "failed": len(scored) - passed,
            "pass_rate": round(passed / len(scored), 4) if scored else None,
        }
    splits: dict[str, Any] = {}
    for split in SPLITS:
        members = [c for c in cases if c.get("split", "tuned") == split]
        if not members:
            continue
        passed_cases = sum(1 for c in members if c["passed"])
        per_key = {}
        for key in keys:
            scored = [c["scores"][key] for c in members if c["scores"][key]["score"] is not None]
            ok = sum(1 for x in scored if x["passed"])
            per_key[key] = {"n": len(scored), "passed": ok, "pass_rate": round(ok / len(scored), 4) if scored else None}
        splits[split] = {
            "cases": len(members),
            "passed_cases": passed_cases,
            "pass_rate": round(passed_cases / len(members), 4),
            "evaluators": per_key,
        }
    must = [c for c in cases if c.get("must_pass")]
    categories: dict[str, Any] = {}
    for category in categories_of(case_objs):
        members = [c for c in cases if c["category"] == category]
        categories[category] = {
            "cases": len(members),
            "passed_cases": sum(1 for c in members if c["passed"]),
            "scores": {
                key: _mean([c["scores"][key]["score"] for c in members if c["scores"][key]["score"] is not None])
                for key in keys
            },
        }
    turns = [t for c in cases for t in c["turns"]]
    latencies = [t["latency_s"] for t in turns if t.get("latency_s") is not None]
    speeds = [t["tokens_per_second"] for t in turns if t.get("tokens_per_second")]
    tokens = [t["output_tokens"] for t in turns if t.get("output_tokens") is not None]
    sources: dict[str, int] = {}
    fallbacks: dict[str, int] = {}
    for t in turns:
        source = t.get("source") or "error"
        sources[source] = sources.get(source, 0) + 1
        if t.get("fallback_reason"):
            fallbacks[t["fallback_reason"]] = fallbacks.get(t["fallback_reason"], 0) + 1
    means = [v["mean"] for v in evaluators.values() if v["mean"] is not None]
    return {
        "evaluators": evaluators,
        "categories": categories,
        "splits": splits,
        "must_pass": {
            "cases": len(must),
            "passed": sum(1 for c in must if c["passed"]),
            "failed": [c["id"] for c in must if not c["passed"]],
        },
        "overall": _mean(means),
        "cases": len(cases),
        "cases_passed": sum(1 for c in cases if c["passed"]),
        "turns": len(turns),
        "latency_s": {
            "mean": _mean(latencies),
            "p50": _percentile(latencies, 0.5),
            "p90": _percentile(latencies, 0.9),
            "max": round(max(latencies), 3) if latencies else None,
        },
        "tokens_per_second": {"mean": _mean(speeds), "n": len(speeds)},
        "output_tokens": {"mean": _mean(tokens), "total": sum(tokens)},
        "sources": sources,
        "fallbacks": fallbacks,
    }


# ---------------------------------------------------------------- text tables


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def render_table(report: dict[str, Any]) -> str:
    """The per-evaluator and per-category tables printed on stdout."""
    summary = report["summary"]
    keys = list(report["evaluators"])
    lines = [
        f"model {report['model']['name']}  ·  {summary['cases']} cases, {summary['turns']} turns"
        f"  ·  {report['wall_time_s']:.0f}s  ·  dataset {report['dataset']['name']} v{report['dataset']['version']}",
        "",
    ]
    if not summary["cases"]:  # only action cases were chosen
        return "\n".join([*lines, *action_lines(report.get("actions") or {"skipped": "none chosen"})])
    rows = [["EVALUATOR", "MEAN", "PASS", "N", "THRESHOLD"]]
    for key in keys:
        s = summary["evaluators"][key]
        rate = "-" if s["pass_rate"] is None else f"{100 * s['pass_rate']:.0f}%"
        rows.append([key, _fmt(s["mean"]), rate, str(s["n"]), _fmt(report["evaluators"][key]["threshold"])])
    rows.append(["overall", _fmt(summary["overall"]), f"{summary['cases_passed']}/{summary['cases']} cases", "", ""])
    lines += _table(rows)
    lines.append("")
    rows = [["CATEGORY", "CASES", "PASSED", *keys]]
    for category, c in summary["categories"].items():
        rows.append([category, str(c["cases"]), str(c["passed_cases"]), *(_fmt(c["scores"][k]) for k in keys)])
    lines += _table(rows)
    lines += ["", *_split_lines(summary, keys)]
    lines += _must_pass_lines(summary)
    lat, tps = summary["latency_s"], summary["tokens_per_second"]
    sources = ", ".join(f"{k} {v}" for k, v in sorted(summary["sources"].items()))
    lines += [
        "",
        f"latency per answer: mean {_fmt(lat['mean'])}s, p50 {_fmt(lat['p50'])}s, p90 {_fmt(lat['p90'])}s,"
        f" max {_fmt(lat['max'])}s  ·  tokens/s {_fmt(tps['mean'], 1)} (n={tps['n']})"
        f"  ·  output tokens mean {_fmt(summary['output_tokens']['mean'], 0)}",
        f"answers by source: {sources}"
        + (
            "  ·  fallbacks: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["fallbacks"].items()))
            if summary["fallbacks"]
            else ""
        ),
    ]
    failing = [c for c in report["cases"] if not c["passed"]]
    if failing:
        lines += ["", f"failing cases ({len(failing)}):"]
        for c in failing:
            why = "; ".join(f"{k} {_fmt(c['scores'][k]['score'])}: {c['scores'][k]['comment']}" for k in c["failed"])
            flags = (" [must_pass]" if c.get("must_pass") else "") + (
                " [heldout]" if c.get("split") == "heldout" else ""
            )
            lines.append(f"  {c['id']}{flags}: {why or c['error']}")
    if report.get("guards"):
        lines += ["", *guard_lines(report["guards"])]
    if report.get("actions"):
        lines += ["", *action_lines(report["actions"])]
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _rate_of(passed: int, total: int) -> str:
    return f"{passed}/{total} ({100 * passed / total:.0f}%)" if total else "-"


def _split_lines(summary: dict[str, Any], keys: Sequence[str]) -> list[str]:
    """Pass rates per split: tuned (may be tuned on) and heldout (never tuned on)."""
    splits = summary.get("splits") or {}
    if not splits:
        return []
    rows = [["SPLIT", "CASES PASSED", *keys]]
    for split, x in splits.items():
        rates = [_pct(x["evaluators"][k]["pass_rate"]) for k in keys]
        rows.append([split, _rate_of(x["passed_cases"], x["cases"]), *rates])
    return _table(rows)


def _must_pass_lines(summary: dict[str, Any]) -> list[str]:
    must = summary.get("must_pass") or {}
    if not must.get("cases"):
        return []
    line = f"must_pass cases: {_rate_of(must['passed'], must['cases'])}"
    if must["failed"]:
        line += f"; failing: {', '.join(must['failed'])}"
    return ["", line]


def guard_lines(guards: dict[str, Any]) -> list[str]:
    """The guard false-positive summary (or why it was not measured)."""
    if not guards.get("available"):
        return [f"guards: {guards.get('note') or 'not available'}"]
    lines = [
        f"guards (false positives): fired on {guards['answers_fired']} of {guards['answers_checked']} answers"
        f" that pass every evaluator ({_pct(guards['false_positive_rate'])}), on {guards['references_fired']}"
        f" of {guards['references_checked']} reference answers"
        + (
            "; by guard: " + ", ".join(f"{k} {v}" for k, v in sorted(guards["by_guard"].items()))
            if guards["by_guard"]
            else ""
        )
    ]
    for fire in guards["fires"]:
        why = "; ".join(fire.get("details") or fire["guards"])
        lines.append(
            f"  {fire['case']} ({fire['where']}): {', '.join(fire['guards'])} ({why}) on {fire['text'][:80]!r}"
        )
    return lines


def action_lines(actions: dict[str, Any]) -> list[str]:
    """The action evaluators' table: per evaluator (all cases it applies to, and the must_pass ones),
    per category, and the failing cases."""
    if actions.get("skipped"):
        return [f"actions: skipped ({actions['skipped']})"]
    summary = actions["summary"]
    ds = actions["dataset"]
    lines = [
        f"actions through the graph: {summary['cases']} of {ds['cases_total']} cases ({ds['name']} v{ds['version']})"
    ]
    rows = [["ACTION EVALUATOR", "PASS", "MUST_PASS", "THRESHOLD"]]
    for key, x in summary["evaluators"].items():
        rows.append(
            [
                key,
                _rate_of(x["passed"], x["applied"]),
                _rate_of(x["must_passed"], x["must_applied"]),
                _fmt(actions["evaluators"][key]["threshold"]),
            ]
        )
    rows.append(
        [
            "all",
            _rate_of(summary["passed"], summary["cases"]),
            _rate_of(summary["must_passed"], summary["must_pass"]),
            "",
        ]
    )
    lines += _table(rows)
    cats = ", ".join(f"{k} {v['passed']}/{v['cases']}" for k, v in summary["categories"].items())
    lines.append(f"by category: {cats}")
    failing = [c for c in actions["cases"] if not c["passed"]]
    if failing:
        lines.append(f"failing action cases ({len(failing)}):")
        for c in failing:
            why = c["outcome"].get("error") or "; ".join(f"{k}: {c['scores'][k]['comment']}" for k in c["failed"])
            lines.append(f"  {c['id']}{' [must_pass]' if c['must_pass'] else ''}: {why}")
    return lines


# ---------------------------------------------------------------- the gate


def gate_failures(report: dict[str, Any], min_pass: dict[str, float] | None = None) -> list[str]:
    """Why the run must not pass a change: every failing ``must_pass`` case (eval and action cases), and
    every evaluator whose pass rate is below its ``min_pass`` rate (an evaluator that scored no case cannot
    show its rate, which fails too). Empty when the gate passes."""
    reasons = [f"must_pass case {case_id} failed" for case_id in report["summary"]["must_pass"]["failed"]]
    actions = report.get("actions") or {}
    if actions.get("cases"):
        reasons += [
            f"must_pass action case {c['id']} failed" for c in actions["cases"] if c["must_pass"] and not c["passed"]
        ]
    for key, wanted in (min_pass or {}).items():
        if key in report["summary"]["evaluators"]:
            got = report["summary"]["evaluators"][key]["pass_rate"]
        elif actions.get("summary") and key in actions["summary"]["evaluators"]:
            got = actions["summary"]["evaluators"][key]["rate"]
        else:
            reasons.append(
                f"{key}: no case was scored (needs the action cases)" if actions.get("skipped") else f"{key}: not run"
            )
            continue
        if got is None:
            reasons.append(f"{key}: no case was scored, so its pass rate cannot reach {wanted:.0%}")
        elif got < wanted - 1e-9:
            reasons.append(f"{key}: pass rate {got:.0%} is below the required {wanted:.0%}")
    return reasons


# ---------------------------------------------------------------- markdown


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict[str, Any]) -> str:
    summary = report["summary"]
    keys = list(report["evaluators"])
    ds, model = report["dataset"], report["model"]
    out = [
        f"# NAILA eval: {model['name']}",
        "",
        f"- run: `{report['run_id']}` ({report['created_at']}), wall time {report['wall_time_s']:.1f} s",
        f"- model: `{model['name']}`"
        + (f" ({model['path']})" if model.get("path") else "")
        + f", seed {model['seed']}",
        f"- prompt: {report['prompt']['source']} (sha256 `{report['prompt']['sha256'][:12]}`)",
        f"- dataset: {ds['name']} v{ds['version']} (sha256 `{ds['sha256'][:12]}`), {ds['cases']} of"
        f" {ds['cases_total']} cases" + (f", filter `{ds['filter']}`" if ds.get("filter") else ""),
        f"- clock fixed at {report['clock']}; LangSmith: "
        + ("uploaded as " + report["langsmith"]["experiment"] if report["langsmith"]["uploaded"] else "offline"),
        "",
        "## Evaluators",
        "",
        "| evaluator | mean | pass rate | n | threshold | what it checks |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key in keys:
        s = summary["evaluators"][key]
        rate = "-" if s["pass_rate"] is None else f"{100 * s['pass_rate']:.0f}%"
        e = report["evaluators"][key]
        out.append(
            f"| {key} | {_fmt(s['mean'])} | {rate} | {s['n']} | {_fmt(e['threshold'])} | {_md_cell(e['description'])} |"
        )
    out += [
        "",
        f"Overall mean {_fmt(summary['overall'])}; {summary['cases_passed']} of {summary['cases']} cases"
        " pass every evaluator.",
        "",
        "## Categories",
        "",
        "| category | cases | passed | " + " | ".join(keys) + " |",
        "|---|---:|---:|" + "---:|" * len(keys),
    ]
    for category, c in summary["categories"].items():
        out.append(
            f"| {category} | {c['cases']} | {c['passed_cases']} | "
            + " | ".join(_fmt(c["scores"][k]) for k in keys)
            + " |"
        )
    if summary.get("splits"):
        out += [
            "",
            "## Splits",
            "",
            "`tuned`: cases a prompt or guard may be tuned on; `heldout`: never tuned on (chosen by a hash of the id).",
            "",
            "| split | cases passed | " + " | ".join(keys) + " |",
            "|---|---:|" + "---:|" * len(keys),
        ]
        for split, x in summary["splits"].items():
            rates = " | ".join(_pct(x["evaluators"][k]["pass_rate"]) for k in keys)
            out.append(f"| {split} | {_rate_of(x['passed_cases'], x['cases'])} | {rates} |")
    must = summary.get("must_pass") or {}
    if must.get("cases"):
        out += [
            "",
            f"`must_pass` cases: {_rate_of(must['passed'], must['cases'])}"
            + (f"; failing: {', '.join(must['failed'])}" if must["failed"] else ""),
        ]
    if report.get("gate"):
        gate = report["gate"]
        wanted = ", ".join(f"{k} ≥ {v:.0%}" for k, v in gate["min_pass"].items()) or "none"
        out += [
            "",
            "## Gate",
            "",
            f"{'Passed' if gate['passed'] else 'Failed'} (must_pass cases; --min-pass: {wanted}).",
        ]
        out += [f"- {_md_cell(reason)}" for reason in gate["failures"]]
    if report.get("guards"):
        out += ["", "## Guards", "", "```text", *guard_lines(report["guards"]), "```"]
    if report.get("actions"):
        out += ["", "## Actions", "", "```text", *action_lines(report["actions"]), "```"]
    lat, tps = summary["latency_s"], summary["tokens_per_second"]
    out += [
        "",
        "## Performance",
        "",
        f"- latency per answer: mean {_fmt(lat['mean'])} s, p50 {_fmt(lat['p50'])} s, p90 {_fmt(lat['p90'])} s,"
        f" max {_fmt(lat['max'])} s",
        f"- generation speed: {_fmt(tps['mean'], 1)} tokens/s (mean of {tps['n']} model answers);"
        f" output tokens mean {_fmt(summary['output_tokens']['mean'], 0)}",
        "- answers by source: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["sources"].items())),
    ]
    if summary["fallbacks"]:
        out.append("- fallbacks: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["fallbacks"].items())))
    failing = [c for c in report["cases"] if not c["passed"]]
    out += ["", f"## Failing cases ({len(failing)})", ""]
    if not failing:
        out.append("None.")
    for c in failing:
        out.append(f"### {c['id']} ({c['category']}, {c['intent']})")
        out.append("")
        out.append(f"Expected: {c['behaviour'] or '-'}")
        out.append("")
        for i, t in enumerate(c["turns"], start=1):
            out.append(f"{i}. **user:** {_md_cell(t['user'])}  ")
            out.append(
                f"   **naila** ({t.get('source') or 'error'}): {_md_cell(t['answer'] or t.get('error') or '(empty)')}"
            )
        out.append("")
        for key in c["failed"]:
            out.append(f"- **{key}** {_fmt(c['scores'][key]['score'])}: {_md_cell(c['scores'][key]['comment'])}")
        if c.get("error"):
            out.append(f"- **error**: {_md_cell(c['error'])}")
        out.append("")
    out += [
        "## All cases",
        "",
        "| case | category | " + " | ".join(keys) + " | answer |",
        "|---|---|" + "---:|" * len(keys) + "---|",
    ]
    for c in report["cases"]:
        cells = [_fmt(c["scores"][k]["score"]) + ("" if c["scores"][k]["passed"] is not False else " ✗") for k in keys]
        out.append(f"| {c['id']} | {c['category']} | " + " | ".join(cells) + f" | {_md_cell(c['answer'][:120])} |")
    return "\n".join(out) + "\n"


def write_reports(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``<run_id>.json`` and ``<run_id>.md`` into ``out_dir``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{report['run_id']}.json"
    md_path = out_dir / f"{report['run_id']}.md"
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, md_path


# ---------------------------------------------------------------- compare


def load_report(path: str | Path) -> dict[str, Any]:
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReportError(f"cannot read {file}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ReportError(f"{file} is not a NAILA eval report (schema {SCHEMA}); write one with `naila eval run`")
    return data


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from run ``a`` to run ``b``: per evaluator, and per case and evaluator."""
    keys = [k for k in a["evaluators"] if k in b["evaluators"]]
    evaluators = {}
    for key in keys:
        sa, sb = a["summary"]["evaluators"][key], b["summary"]["evaluators"][key]
        delta = None if sa["mean"] is None or sb["mean"] is None else round(sb["mean"] - sa["mean"], 4)
        evaluators[key] = {
            "a": sa["mean"],
            "b": sb["mean"],
            "delta": delta,
            "pass_rate_a": sa["pass_rate"],
            "pass_rate_b": sb["pass_rate"],
        }
    cases_a = {c["id"]: c for c in a["cases"]}
    cases_b = {c["id"]: c for c in b["cases"]}
    regressions: list[dict[str, Any]] = []
    improvements: list[dict[str, Any]] = []
    for case_id in [c["id"] for c in a["cases"] if c["id"] in cases_b]:
        ca, cb = cases_a[case_id], cases_b[case_id]
        for key in keys:
            xa, xb = ca["scores"][key], cb["scores"][key]
            if xa["score"] is None or xb["score"] is None:
                continue
            delta = xb["score"] - xa["score"]
            flipped = xa["passed"] != xb["passed"]
            if not flipped and abs(delta) < CHANGE:
                continue
            change = {
                "case": case_id,
                "evaluator": key,
                "a": xa["score"],
                "b": xb["score"],
                "delta": round(delta, 4),
                "passed_a": xa["passed"],
                "passed_b": xb["passed"],
                "comment_b": xb["comment"],
                "answer_a": ca["answer"],
                "answer_b": cb["answer"],
            }
            worse = (xa["passed"] and not xb["passed"]) or (not flipped and delta < 0)
            (regressions if worse else improvements).append(change)
    return {
        "a": {"run_id": a.get("run_id"), "model": a["model"]["name"], "overall": a["summary"]["overall"]},
        "b": {"run_id": b.get("run_id"), "model": b["model"]["name"], "overall": b["summary"]["overall"]},
        "evaluators": evaluators,
        "regressions": regressions,
        "improvements": improvements,
        "only_in_a": sorted(set(cases_a) - set(cases_b)),
        "only_in_b": sorted(set(cases_b) - set(cases_a)),
        "cases_passed": (a["summary"]["cases_passed"], b["summary"]["cases_passed"]),
        "splits": _compare_splits(a, b),
        "actions": _compare_actions(a, b),
    }


def _compare_splits(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Cases passed per split in both runs (reports before the splits existed have none)."""
    sa, sb = a["summary"].get("splits") or {}, b["summary"].get("splits") or {}
    return {
        split: {
            "a": (sa[split]["passed_cases"], sa[split]["cases"]) if split in sa else None,
            "b": (sb[split]["passed_cases"], sb[split]["cases"]) if split in sb else None,
        }
        for split in SPLITS
        if split in sa or split in sb
    }


def _compare_actions(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Action evaluators' pass rates in both runs (None where a run did not score the action cases)."""
    xa = (a.get("actions") or {}).get("summary") or {}
    xb = (b.get("actions") or {}).get("summary") or {}
    keys = list(dict.fromkeys([*(xa.get("evaluators") or {}), *(xb.get("evaluators") or {})]))
    out: dict[str, Any] = {
        key: {
            "a": (xa["evaluators"][key]["passed"], xa["evaluators"][key]["applied"])
            if key in xa.get("evaluators", {})
            else None,
            "b": (xb["evaluators"][key]["passed"], xb["evaluators"][key]["applied"])
            if key in xb.get("evaluators", {})
            else None,
        }
        for key in keys
    }
    if xa or xb:
        out["all"] = {
            "a": (xa["passed"], xa["cases"]) if xa else None,
            "b": (xb["passed"], xb["cases"]) if xb else None,
        }
    return out


def rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def render_comparison(diff: dict[str, Any]) -> str:
    a, b = diff["a"], diff["b"]
    lines = [f"A: {a['run_id']} ({a['model']})", f"B: {b['run_id']} ({b['model']})", ""]
    rows = [["EVALUATOR", "A", "B", "DELTA", "PASS A", "PASS B"]]
    for key, e in diff["evaluators"].items():
        rows.append(
            [key, _fmt(e["a"]), _fmt(e["b"]), _signed(e["delta"]), rate(e["pass_rate_a"]), rate(e["pass_rate_b"])]
        )
    overall = None if a["overall"] is None or b["overall"] is None else b["overall"] - a["overall"]
    passed_a, passed_b = diff["cases_passed"]
    rows.append(
        ["overall", _fmt(a["overall"]), _fmt(b["overall"]), _signed(overall), f"{passed_a} cases", f"{passed_b} cases"]
    )
    lines += _table(rows)
    for title, changes in (("regressions", diff["regressions"]), ("improvements", diff["improvements"])):
        lines += ["", f"{title} ({len(changes)}):"]
        if not changes:
            lines.append("  none")
        for ch in changes:
            flip = ""
            if ch["passed_a"] != ch["passed_b"]:
                flip = " (now fails)" if not ch["passed_b"] else " (now passes)"
            lines.append(
                f"  {ch['case']}  {ch['evaluator']} {_fmt(ch['a'])} -> {_fmt(ch['b'])}{flip}: {ch['comment_b']}"
            )
    pairs = [(f"split {k}", v) for k, v in (diff.get("splits") or {}).items()]
    pairs += [(f"action {k}", v) for k, v in (diff.get("actions") or {}).items()]
    if pairs:
        rows = [["PASSED", "A", "B"]]
        for name, v in pairs:
            rows.append([name, _rate_of(*v["a"]) if v["a"] else "-", _rate_of(*v["b"]) if v["b"] else "-"])
        lines += ["", *_table(rows)]
    if diff["only_in_a"] or diff["only_in_b"]:
        lines += [
            "",
            f"only in A: {', '.join(diff['only_in_a']) or '-'}",
            f"only in B: {', '.join(diff['only_in_b']) or '-'}",
        ]
    return "\n".join(lines)
