"""Runs eval cases through the real graph with LangSmith's ``evaluate`` and builds the report.

Each run gets a fresh SQLite memory in a temporary folder and each case its own thread, so cases
never see each other's conversations. The graph's clock is fixed (``EVAL_CLOCK``) so time answers
and the per-turn guidance are the same from run to run; with a fixed sampling seed two runs of the
same model and prompt give the same answers, and differences between runs come from the change
being evaluated.

Offline by default: ``evaluate(..., upload_results=False)`` inside ``tracing_context(enabled=False)``
with a client that has nowhere to send anything. When LangSmith is configured (an API key and
tracing enabled) the cases are synced to a LangSmith dataset, the experiment is uploaded and every
graph run is traced under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from evals.action_runner import action_report, run_actions_in_graph
from evals.actions import ActionCase, ActionDataset
from evals.cases import Case, Dataset
from evals.evaluators import Embedder, Evaluator, GuardCheck, Score, Turn, build_evaluators
from evals.report import CaseResult, build_report

logger = logging.getLogger(__name__)

EVAL_CLOCK = datetime(2026, 6, 15, 10, 30)  # a Monday morning; see the module docstring
EVAL_DEVICE = "eval"
_NAMESPACE = uuid.UUID("6f1c2d0e-6a37-4f5e-9a53-2b7f3c1e9d41")  # stable example ids per dataset version


class EvalError(RuntimeError):
    """The eval run cannot start or finish; the message says what to do."""


@dataclass
class RunOptions:
    """What is being evaluated, recorded in the report."""

    model_name: str
    model_path: str | None = None
    seed: int | None = None
    temperature: float | None = None
    persona: str | None = None  # None = the built-in persona (or NAILA_SYSTEM_PROMPT_FILE)
    prompt_source: str = "built-in"
    filters: str | None = None
    limit: int | None = None
    upload: bool | None = None  # None = upload when LangSmith is configured
    actions: bool = True  # False: --no-actions (the report says the action cases were skipped)


def langsmith_configured() -> bool:
    """True when the user set a LangSmith API key and enabled tracing (then results are uploaded)."""
    from langsmith import utils as ls_utils

    key = os.environ.get("LANGSMITH_API_KEY") or os.environ.get("LANGCHAIN_API_KEY")
    return bool(key and key.strip()) and bool(ls_utils.tracing_is_enabled())


def offline_client() -> Any:
    """A LangSmith client that never contacts a server (no /info probe, no background batching)."""
    from langsmith import Client

    return Client(api_url="http://127.0.0.1:9", api_key="offline", auto_batch_tracing=False, info={})


# ---------------------------------------------------------------- the target


def case_device(case_id: str) -> str:
    """The device a case speaks from: its own, so the facts one case's person told (kept per device,
    naila_graph/user_facts.py) never reach another case."""
    return f"{EVAL_DEVICE}-" + re.sub(r"[^A-Za-z0-9_-]", "_", case_id)


class CaseRunner:
    """The ``evaluate`` target: plays one case's turns through the graph on its own thread."""

    def __init__(self, graph: Any, total: int, progress: IO[str] | None, run_tag: str, *, trace: bool) -> None:
        from naila_graph.turn import TurnRunner

        self.turns = TurnRunner(graph)  # no saver: the eval's memory is a temporary file
        self.trace = trace
        self.total = total
        self.progress = progress
        self.run_tag = run_tag
        self.done = 0

    def _turn(self, case_id: str, index: int, text: str) -> Turn:
        return self.play(case_id, index, text)[0]

    def play(self, case_id: str, index: int, text: str) -> tuple[Turn, dict[str, Any]]:
        """One user message through the graph on the case's thread: the turn and the final graph state
        (with the turn's ``actions``, ``commands`` and ``tool_calls``; empty when the turn failed)."""
        from naila_graph.turn import Failed, Metrics, TurnRequest

        task_id = f"{case_id}#{index + 1}"
        request = TurnRequest(
            text=text,
            device_id=case_device(case_id),
            thread_id=f"{self.run_tag}:{case_id}",
            task_id=task_id,
            metadata={"eval_case": case_id, "eval_run": self.run_tag},
        )
        started = time.perf_counter()
        out: dict[str, Any] = {}
        for event in self.turns.run_sync(request):
            if isinstance(event, Failed):  # a failed turn: every evaluator then sees an empty answer
                logger.error("case %s turn %d failed", case_id, index + 1, exc_info=event.error)
                error = f"{type(event.error).__name__}: {event.error}"
                return Turn(user=text, answer="", latency_s=time.perf_counter() - started, error=error), {}
            if isinstance(event, Metrics):
                out = event.state
        metrics = out.get("metrics") or {}
        turn = Turn(
            user=text,
            answer=out.get("response_text") or "",
            intent=out.get("intent"),
            source=out.get("response_source"),
            fallback_reason=out.get("fallback_reason"),
            latency_s=round(time.perf_counter() - started, 4),
            output_tokens=metrics.get("output_tokens"),
            tokens_per_second=metrics.get("tokens_per_second"),
            time_to_first_token_ms=metrics.get("time_to_first_token_ms"),
        )
        return turn, out

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        case_id = str(inputs["case_id"])
        started = time.perf_counter()
        # evaluate() traces its target in "local" mode even when nothing is uploaded, and LangChain's tracer
        # does not know that mode: it would try to send every graph run. Offline, tracing is off in here.
        from langsmith import tracing_context

        with contextlib.nullcontext() if self.trace else tracing_context(enabled=False):
            turns = [self._turn(case_id, i, text) for i, text in enumerate(inputs["turns"])]
        self.done += 1
        if self.progress is not None:
            sources = ",".join(t.source or "error" for t in turns)
            self.progress.write(
                f"[{self.done}/{self.total}] {case_id}: {len(turns)} turn(s) in"
                f" {time.perf_counter() - started:.1f}s ({sources})\n"
            )
            self.progress.flush()
        return {"answer": turns[-1].answer, "turns": [t.__dict__ for t in turns]}


# ---------------------------------------------------------------- LangSmith plumbing


def _as_langsmith_evaluator(evaluator: Evaluator) -> Callable[..., dict[str, Any]]:
    """Adapt ``(case, turns) -> Score`` to LangSmith's ``(inputs, outputs, reference_outputs) -> dict``."""

    def run(inputs: dict[str, Any], outputs: dict[str, Any], reference_outputs: dict[str, Any]) -> dict[str, Any]:
        case = Case.from_example(inputs, reference_outputs)
        turns = [Turn.from_dict(t) for t in (outputs or {}).get("turns", [])]
        if not turns:
            turns = [Turn(user=case.question, answer="", error="the target produced no output")]
        try:
            score = evaluator(case, turns)
        except Exception as exc:
            logger.exception("evaluator %s failed on %s", evaluator.key, case.id)
            score = Score(evaluator.key, None, f"evaluator error: {type(exc).__name__}: {exc}")
        return {"key": score.key, "score": score.score, "comment": score.comment}

    run.__name__ = evaluator.key
    return run


def _offline_examples(dataset: Dataset, cases: Sequence[Case]) -> list[Any]:
    from langsmith.schemas import Example

    dataset_id = uuid.uuid5(_NAMESPACE, f"{dataset.name}@{dataset.version}")
    return [
        Example(
            id=uuid.uuid5(dataset_id, case.id),
            dataset_id=dataset_id,
            inputs=case.example_inputs(),
            outputs=case.example_outputs(),
            metadata={"case_id": case.id, "category": case.category, "intent": case.intent},
        )
        for case in cases
    ]


def sync_dataset(client: Any, dataset: Dataset, cases: Sequence[Case]) -> list[Any]:
    """The LangSmith examples of ``cases`` in dataset ``<name>-v<version>``, created where missing."""
    name = f"{dataset.name}-v{dataset.version}"
    if client.has_dataset(dataset_name=name):
        remote = client.read_dataset(dataset_name=name)
    else:
        remote = client.create_dataset(name, description=f"NAILA eval cases {dataset.version} ({dataset.path.name})")
    existing = {
        (example.metadata or {}).get("case_id"): example for example in client.list_examples(dataset_id=remote.id)
    }
    missing = [case for case in dataset.cases if case.id not in existing]
    if missing:
        client.create_examples(
            dataset_id=remote.id,
            examples=[
                {
                    "id": uuid.uuid5(_NAMESPACE, f"{name}:{case.id}"),
                    "inputs": case.example_inputs(),
                    "outputs": case.example_outputs(),
                    "metadata": {"case_id": case.id, "category": case.category, "intent": case.intent},
                }
                for case in missing
            ],
        )
        existing = {
            (example.metadata or {}).get("case_id"): example for example in client.list_examples(dataset_id=remote.id)
        }
    return [existing[case.id] for case in cases]


@contextlib.contextmanager
def _quiet_langsmith() -> Iterator[None]:
    """evaluate() prints its experiment name on stdout and draws a tqdm bar: keep stdout for the table and
    stderr for our own progress lines."""
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


# ---------------------------------------------------------------- the run


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in text.lower())
    return "-".join(part for part in keep.split("-") if part)[:60] or "model"


def run_eval(
    chat_model: Any,
    dataset: Dataset,
    cases: Sequence[Case],
    options: RunOptions,
    *,
    embedder: Embedder,
    progress: IO[str] | bool = True,
    client: Any = None,
    action_dataset: ActionDataset | None = None,
    action_cases: Sequence[ActionCase] = (),
    guards: GuardCheck | None = None,
) -> dict[str, Any]:
    """Run ``cases`` through NAILA's graph around ``chat_model`` and score them; returns the report dict.

    ``action_cases`` (from ``action_dataset``) then go through the same graph, one turn each on its own
    thread, scored by the action evaluators on what the turn did (its executed ``tool_calls``) and said.
    ``guards`` (default: the graph's own, when they exist) are run over every answer that passes all
    evaluators and over every reference answer, to count false positives.
    ``progress``: True = one line per case on stderr, False = silent, or a stream to write to.
    """
    import warnings

    from langgraph.checkpoint.sqlite import SqliteSaver
    from langsmith import evaluate, tracing_context

    from naila_graph.graph import build_graph
    from naila_graph.settings import NailaSettings
    from naila_graph.user_facts import open_store
    from prompts.persona import load_persona

    if not cases and not action_cases:
        raise EvalError("no cases to run")
    guards = guards if guards is not None else GuardCheck()
    stream: IO[str] | None = sys.stderr if progress is True else (progress or None)
    settings = NailaSettings()
    persona = options.persona if options.persona is not None else load_persona(settings.system_prompt_file)
    evaluators = build_evaluators(embedder, persona)
    upload = langsmith_configured() if options.upload is None else options.upload
    started_at = datetime.now().astimezone()
    run_tag = f"{started_at:%Y%m%d-%H%M%S}-{_slug(options.model_name)}"
    metadata = {
        "model": options.model_name,
        "seed": options.seed,
        "prompt": options.prompt_source,
        "dataset_version": dataset.version,
        "dataset_sha256": dataset.sha256[:12],
    }
    if stream is not None:
        where = "uploading to LangSmith" if upload else "offline"
        acts = f" + {len(action_cases)} action case(s)" if action_cases else ""
        stream.write(f"naila eval: {len(cases)} case(s){acts} on {options.model_name} ({where})\n")
        stream.flush()

    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="naila-eval-") as tmp, contextlib.ExitStack() as stack:
        conn = sqlite3.connect(Path(tmp) / "memory.sqlite", check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            saver.setup()
            # what the person tells about themselves, kept per device (each case has its own), as the server does
            store = stack.enter_context(open_store(f"sqlite:///{Path(tmp) / 'memory.sqlite'}"))
            graph = build_graph(
                chat_model, saver, settings=settings, persona=persona, clock=lambda: EVAL_CLOCK, store=store
            )
            target = CaseRunner(graph, len(cases), stream, run_tag, trace=upload)
            if upload:
                from langsmith import Client

                client = client or Client()
                data: list[Any] = sync_dataset(client, dataset, cases)
                tracing: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            else:
                client = client or offline_client()
                data = _offline_examples(dataset, cases)
                tracing = tracing_context(enabled=False)
            rows: list[Any] = []
            experiment = None
            if cases:
                with tracing, _quiet_langsmith(), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*upload_runs.*")
                    results = evaluate(
                        target,
                        data=data,
                        evaluators=[_as_langsmith_evaluator(e) for e in evaluators],
                        experiment_prefix=f"naila-{_slug(options.model_name)}",
                        description=f"NAILA evals on {options.model_name} (prompt: {options.prompt_source})",
                        metadata=metadata,
                        max_concurrency=0,  # one llama context: cases run one after another
                        client=client,
                        upload_results=upload,
                    )
                    rows = list(results)
                    experiment = results.experiment_name
            actions: dict[str, Any] | None = None
            if action_cases and action_dataset is not None:
                with contextlib.nullcontext() if upload else tracing_context(enabled=False):
                    act_results, act_evaluators = run_actions_in_graph(target.play, action_cases, progress=stream)
                actions = action_report(act_results, act_evaluators, action_dataset, options.filters)
            elif not options.actions:
                actions = {"skipped": "--no-actions"}
        finally:
            conn.close()
    wall_time = time.perf_counter() - wall

    by_id = {case.id: case for case in cases}
    case_results: list[CaseResult] = []
    for row in rows:
        case = by_id[(row["example"].inputs or {})["case_id"]]
        outputs = row["run"].outputs or {}
        turns = [Turn.from_dict(t) for t in outputs.get("turns", [])]
        scores = {
            r.key: Score(r.key, None if r.score is None else float(r.score), r.comment or "")
            for r in row["evaluation_results"]["results"]
        }
        case_results.append(CaseResult(case=case, turns=turns, scores=scores, error=row["run"].error))
    order = {case.id: i for i, case in enumerate(cases)}
    case_results.sort(key=lambda r: order[r.case.id])
    if stream is not None:
        stream.write(f"naila eval: done in {wall_time:.1f}s\n")
        stream.flush()
    report = build_report(
        case_results,
        evaluators,
        experiment=experiment,
        run_id=run_tag,
        created_at=started_at,
        wall_time_s=wall_time,
        model={
            "name": options.model_name,
            "path": options.model_path,
            "seed": options.seed,
            "temperature": options.temperature,
        },
        prompt={"source": options.prompt_source, "sha256": _sha(persona)},
        dataset={
            "name": dataset.name,
            "version": dataset.version,
            "sha256": dataset.sha256,
            "path": str(dataset.path),
            "filter": options.filters,
            "limit": options.limit,
            "cases": len(cases),
            "cases_total": len(dataset.cases),
        },
        clock=EVAL_CLOCK.isoformat(),
        langsmith={"uploaded": bool(upload), "experiment": experiment},
    )
    report["guards"] = guard_report(guards, report, cases)
    report["actions"] = actions
    return report


def guard_report(guards: GuardCheck, report: dict[str, Any], cases: Sequence[Case]) -> dict[str, Any]:
    """How often the answer guards fire where they must not: on the answers of cases that pass every
    evaluator (false positives) and on each case's reference answer."""
    if not guards.available:
        return {"available": False, "note": guards.note}
    by_id = {case.id: case for case in cases}
    fires: list[dict[str, Any]] = []
    by_guard: dict[str, int] = {}
    checked = fired = 0
    for row in report["cases"]:
        if not row["passed"]:
            continue
        for number, turn in enumerate(row["turns"], start=1):
            checked += 1
            hit = guards.check(by_id[row["id"]], turn["answer"], number - 1)
            if hit.guards:
                fired += 1
                fires.append(
                    {
                        "case": row["id"],
                        "where": f"turn {number}",
                        "guards": list(hit.guards),
                        "details": list(hit.details),
                        "text": turn["answer"],
                    }
                )
                for name in hit.guards:
                    by_guard[name] = by_guard.get(name, 0) + 1
    references = [case for case in cases if case.expect.reference]
    ref_fired = 0
    for case in references:
        hit = guards.check(case, case.expect.reference)
        if hit.guards:
            ref_fired += 1
            fires.append(
                {
                    "case": case.id,
                    "where": "reference",
                    "guards": list(hit.guards),
                    "details": list(hit.details),
                    "text": case.expect.reference,
                }
            )
            for name in hit.guards:
                by_guard[name] = by_guard.get(name, 0) + 1
    return {
        "available": True,
        "answers_checked": checked,
        "answers_fired": fired,
        "false_positive_rate": round(fired / checked, 4) if checked else None,
        "references_checked": len(references),
        "references_fired": ref_fired,
        "by_guard": by_guard,
        "fires": fires,
    }


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- model


def open_eval_model(model: str | None, *, seed: int | None) -> Any:
    """Load the model to evaluate (bundle name or GGUF path; default: LLM_MODEL_PATH or the default bundle)."""
    from llm import LLMSettings, load_chat_model
    from llm.errors import LLMError

    overrides: dict[str, Any] = {}
    if model:
        overrides["model_path"] = model
    if seed is not None:
        overrides["seed"] = seed
    settings = LLMSettings(**overrides)
    try:
        return load_chat_model(settings, load=True)
    except LLMError as exc:
        raise EvalError(f"cannot evaluate: the model did not load: {exc}") from exc
