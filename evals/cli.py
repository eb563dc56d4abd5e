"""``naila eval``: run the eval set, compare two runs, fetch the embedding model.

stdout carries only the tables; progress and report paths go to stderr (INTERFACES.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from naila_graph.cli.errors import AddCommon, action, command_group, eprint


def register(sub: Any, common: AddCommon) -> None:
    """The ``naila.commands`` hook (pyproject.toml): adds ``naila eval run | compare | fetch-embeddings``
    and ``naila bench`` to the ``naila`` parser (``naila eval actions``: evals.action_runner)."""
    _register_eval(sub, common)
    _register_bench(sub, common)


def _register_bench(sub: Any, common: AddCommon) -> None:
    from evals.bench.suite import add_arguments, run_from_args

    bench = action(
        sub,
        common,
        "bench",
        "the performance suite: ours vs raw, interleaved devices, graph+MQTT, leak check,"
        " bandwidth ceiling, knob sweep; one table on stdout",
        run_from_args,
    )
    add_arguments(bench)


def _register_eval(sub: Any, common: AddCommon) -> None:
    actions = command_group(sub, common, "eval", "response-quality evals: run, compare, actions")
    run = action(
        actions, common, "run", "run the eval cases through the graph; table on stdout, reports in --out", cmd_eval_run
    )
    run.add_argument("--model", help="bundle name or GGUF path (default: LLM_MODEL_PATH or the default bundle)")
    run.add_argument(
        "--prompt", metavar="FILE", help="persona/system prompt file to evaluate (default: the current one)"
    )
    run.add_argument(
        "--cases",
        metavar="FILTER",
        help="comma-separated case ids, categories, intents, splits (tuned, heldout), must_pass or globs"
        " (e.g. memory,self-*); it chooses action cases too (their ids, categories, 'actions')",
    )
    run.add_argument(
        "--limit", type=_positive, metavar="N", help="run at most N cases, and N action cases (after --cases)"
    )
    run.add_argument("--out", metavar="DIR", type=Path, help="report folder (default: $NAILA_DATA_DIR/evals/)")
    run.add_argument("--dataset", metavar="FILE", type=Path, help="cases file (default: evals/data/naila_cases.jsonl)")
    run.add_argument("--seed", type=int, default=0, help="sampling seed, so runs are repeatable (default 0)")
    run.add_argument("--no-upload", action="store_true", help="stay offline even when LangSmith is configured")
    run.add_argument(
        "--no-actions",
        action="store_true",
        help="skip the robot-action cases (by default they run through the graph after the eval cases)",
    )
    run.add_argument(
        "--action-dataset", metavar="FILE", type=Path, help="action cases file (default: evals/data/actions.jsonl)"
    )
    run.add_argument(
        "--min-pass",
        metavar="EVALUATOR=RATE",
        type=_min_pass,
        action="append",
        default=[],
        help="gate: exit 3 when the pass rate of EVALUATOR (a row of the tables, action evaluators included) is"
        " below RATE (0..1 or a percentage, e.g. honesty=0.9); repeatable. A failing must_pass case also exits 3",
    )

    compare = action(
        actions, common, "compare", "what improved or regressed from report A to report B", cmd_eval_compare
    )
    compare.add_argument("a", metavar="A.json", type=Path)
    compare.add_argument("b", metavar="B.json", type=Path)

    acts = action(
        actions,
        common,
        "actions",
        "score the robot-action dataset directly against a chat model (tool calls); table on stdout",
        cmd_eval_actions,
    )
    acts.add_argument("--model", help="bundle name or GGUF path (default: LLM_MODEL_PATH or the default bundle)")
    acts.add_argument(
        "--no-grammar",
        action="store_true",
        help="describe the tools in the prompt and parse JSON from plain text instead of bind_tools' grammar",
    )
    acts.add_argument("--limit", type=_positive, metavar="N", help="run at most N cases, taken across the categories")
    acts.add_argument("--dataset", metavar="FILE", type=Path, help="cases file (default: evals/data/actions.jsonl)")
    acts.add_argument("--max-tokens", type=_positive, default=200, metavar="N", help="per answer (default 200)")
    acts.add_argument("--json", metavar="FILE", type=Path, help="also write every case's calls, speech and scores")

    action(
        actions,
        common,
        "fetch-embeddings",
        "download and verify the MiniLM embedding model; prints its folder",
        cmd_eval_fetch_embeddings,
    )


EXIT_GATE = 3  # the run finished but a must_pass case failed or a --min-pass rate was not reached


def _all_evaluator_keys() -> tuple[str, ...]:
    from evals.actions import ACTION_EVALUATOR_KEYS
    from evals.evaluators import EVALUATOR_KEYS

    return EVALUATOR_KEYS + ACTION_EVALUATOR_KEYS


def _min_pass(text: str) -> tuple[str, float]:
    """``EVALUATOR=RATE`` → (key, rate); a bad form, an unknown evaluator or a rate outside 0..1 is a usage
    error (argparse exits 2 with the message)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    keys = _all_evaluator_keys()
    if not sep or not key or not value.strip():
        raise argparse.ArgumentTypeError(f"expected EVALUATOR=RATE such as honesty=0.9, got {text!r}")
    if key not in keys:
        raise argparse.ArgumentTypeError(f"unknown evaluator {key!r}; known: {', '.join(keys)}")
    try:
        rate = float(value.strip().removesuffix("%")) / (100 if value.strip().endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{key}: the rate must be a number from 0 to 1 (or 0%..100%), got {value!r}"
        ) from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"{key}: the rate must be between 0 and 1 (or 0%..100%), got {value!r}")
    return key, rate


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _select(dataset: Any, actions: Any, filters: str | None, limit: int | None) -> tuple[list[Any], list[Any]]:
    """The eval and action cases ``--cases``/``--limit`` choose; an error only when neither set matches."""
    from evals.cases import CaseError

    action_cases = actions.matching(filters) if actions is not None else []
    if limit is not None:
        action_cases = actions.select(limit) if not filters else action_cases[:limit]
    try:
        cases = dataset.select(filters, limit)
    except CaseError:
        if not action_cases:
            raise
        cases = []
    return cases, action_cases


def cmd_eval_run(args: argparse.Namespace) -> int:
    from evals.actions import ActionCaseError, load_action_dataset
    from evals.cases import CaseError, load_dataset
    from evals.embeddings import EmbeddingModelError, SentenceEmbedder
    from evals.report import gate_failures, render_table, write_reports
    from evals.runner import EvalError, RunOptions, open_eval_model, run_eval
    from naila_graph.cli.errors import CLIError
    from naila_graph.settings import NailaSettings
    from prompts.persona import load_persona

    min_pass = dict(args.min_pass)
    try:
        dataset = load_dataset(args.dataset)
        actions = None if args.no_actions else load_action_dataset(args.action_dataset)
        cases, action_cases = _select(dataset, actions, args.cases, args.limit)
        persona = load_persona(args.prompt) if args.prompt else None
        embedder = SentenceEmbedder.fetched(progress=True)
        model = open_eval_model(args.model, seed=args.seed)
    except (CaseError, ActionCaseError, ValueError, EmbeddingModelError, EvalError) as exc:
        raise CLIError(str(exc)) from exc
    options = RunOptions(
        model_name=model.model_name,
        model_path=str(model.resolved_path or args.model or ""),
        seed=args.seed,
        temperature=model.temperature,
        persona=persona,
        prompt_source=str(args.prompt) if args.prompt else "built-in",
        filters=args.cases,
        limit=args.limit,
        upload=False if args.no_upload else None,
        actions=not args.no_actions,
    )
    try:
        report = run_eval(
            model, dataset, cases, options, embedder=embedder, action_dataset=actions, action_cases=action_cases
        )
    except EvalError as exc:
        raise CLIError(str(exc)) from exc
    failures = gate_failures(report, min_pass)
    report["gate"] = {"min_pass": min_pass, "passed": not failures, "failures": failures}
    out_dir = args.out or NailaSettings().data_dir / "evals"
    json_path, md_path = write_reports(report, out_dir)
    print(render_table(report))
    eprint(f"reports: {json_path}\n         {md_path}")
    if failures:
        eprint(f"naila eval: gate failed ({len(failures)}):")
        for reason in failures:
            eprint(f"  {reason}")
        return EXIT_GATE
    return 0


def cmd_eval_actions(args: argparse.Namespace) -> int:
    import json

    from evals.action_runner import render_action_table, run_actions, summarize
    from evals.actions import ActionCaseError, load_action_dataset
    from evals.runner import EvalError, open_eval_model
    from naila_graph.cli.errors import CLIError

    try:
        dataset = load_action_dataset(args.dataset)
        cases = dataset.select(args.limit)
        model = open_eval_model(args.model, seed=0)
    except (ActionCaseError, EvalError) as exc:
        raise CLIError(str(exc)) from exc
    mode = "without the grammar (plain JSON prompting)" if args.no_grammar else "with the grammar (bind_tools auto)"
    results, evaluators, source = run_actions(model, cases, grammar=not args.no_grammar, max_tokens=args.max_tokens)
    title = f"actions: {model.model_name}, {mode}, {len(cases)}/{len(dataset.cases)} case(s), tools from {source}"
    print(render_action_table(results, evaluators, title=title))
    if args.json:
        data = {
            "model": model.model_name,
            "grammar": not args.no_grammar,
            "dataset": {"name": dataset.name, "version": dataset.version, "sha256": dataset.sha256},
            "tools": source,
            "summary": summarize(results, evaluators),
            "cases": [
                {
                    "id": r.case.id,
                    "category": r.case.category,
                    "utterance": r.case.utterance,
                    "outcome": r.outcome.to_dict(),
                    "scores": {k: {"score": s.score, "comment": s.comment} for k, s in r.scores.items()},
                    "failed": r.failed,
                    "latency_s": r.latency_s,
                }
                for r in results
            ],
        }
        args.json.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        eprint(f"cases: {args.json}")
    return 0


def cmd_eval_compare(args: argparse.Namespace) -> int:
    from evals.report import ReportError, compare_reports, load_report, render_comparison
    from naila_graph.cli.errors import CLIError

    try:
        a, b = load_report(args.a), load_report(args.b)
    except ReportError as exc:
        raise CLIError(str(exc)) from exc
    print(render_comparison(compare_reports(a, b)))
    return 0


def cmd_eval_fetch_embeddings(args: argparse.Namespace) -> int:
    from evals.embeddings import fetch_embedding_model

    print(fetch_embedding_model(progress=True))
    return 0
