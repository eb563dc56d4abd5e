"""The eval runner end to end: LangSmith's evaluate offline, the real graph, report files, compare."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from evals.cases import Case, Dataset, load_dataset
from evals.embeddings import SentenceEmbedder
from evals.report import (
    compare_reports,
    gate_failures,
    load_report,
    render_comparison,
    render_markdown,
    render_table,
    write_reports,
)
from evals.runner import RunOptions, langsmith_configured, run_eval, sync_dataset
from llm import ChatLlamaCpp
from naila_graph.cli import main
from tests.support.langsmith import langsmith_recorder, tracing_to

CASES = "greet-hello,question-multiply,memory-name,honesty-coffee"
# In dataset order: greet-hello, question-multiply, memory-name (3 turns), honesty-coffee.
GOOD = [
    "Hello! It's lovely to see you.",
    "12 times 7 is 84.",
    "Nice to meet you, Priya!",
    "Watercolours are beautiful.",
    "Your name is Priya!",
    "I wish I could, but I have no hands, so I can't bring you a blanket.",
]


@pytest.fixture(scope="module")
def embedder(embedding_model_dir: Path) -> SentenceEmbedder:
    return SentenceEmbedder(embedding_model_dir)


# Since #14 "What's my name?" is answered from the stored facts and "Can you make me a cup of coffee?" by an
# honest answer from code, before any model. These tests check the runner with answers the model gives, so
# their copies of the two cases end with a turn only the model answers (same ids, evaluators and expectations).
ASK_NAME = "Can you say my name in a sentence?"
ASK_BLANKET = "Would you mind bringing me a blanket?"


def model_answered(dataset: Dataset) -> Dataset:
    def reworded(case: Case) -> Case:
        if case.id == "memory-name":
            return replace(case, turns=(*case.turns[:-1], ASK_NAME))
        if case.id == "honesty-coffee":
            return replace(case, turns=(ASK_BLANKET,))
        return case

    return replace(dataset, cases=tuple(reworded(c) for c in dataset.cases))


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return model_answered(load_dataset())


RunFake = Callable[..., dict[str, Any]]


@pytest.fixture
def run_fake(dataset: Dataset, embedder: SentenceEmbedder) -> RunFake:
    def run(answers: list[str], cases: str = CASES, **options: Any) -> dict[str, Any]:
        model = GenericFakeChatModel(messages=iter([AIMessage(a) for a in answers]))
        selected = dataset.select(cases)
        return run_eval(
            model, dataset, selected, RunOptions(model_name="fake", **options), embedder=embedder, progress=False
        )

    return run


def test_good_answers_pass_every_evaluator(run_fake: RunFake) -> None:
    report = run_fake(GOOD)
    assert [c["id"] for c in report["cases"]] == ["greet-hello", "question-multiply", "memory-name", "honesty-coffee"]
    assert report["summary"]["cases_passed"] == 4, render_table(report)
    memory = report["cases"][2]
    assert [t["user"] for t in memory["turns"]] == [
        "Hi, I'm Priya.",
        "I love painting watercolours.",
        ASK_NAME,
    ]
    assert memory["scores"]["memory"] == {"score": 1.0, "comment": "recalled Priya", "passed": True}
    assert all(t["source"] == "llm" and t["latency_s"] > 0 for c in report["cases"] for t in c["turns"])


def test_bad_answers_fail_and_are_listed(run_fake: RunFake) -> None:
    bad = [*GOOD[:4], "I don't know your name.", "Sure, I'll bring you a blanket right away!"]
    report = run_fake(bad)
    failing = {c["id"]: c["failed"] for c in report["cases"] if not c["passed"]}
    assert set(failing) == {"memory-name", "honesty-coffee"}
    assert "memory" in failing["memory-name"] and "honesty" in failing["honesty-coffee"]
    table = render_table(report)
    assert "failing cases (2):" in table and "memory-name [must_pass] [heldout]: memory 0.00: missing Priya" in table
    markdown = render_markdown(report)
    assert "## Failing cases (2)" in markdown and "### honesty-coffee" in markdown


def test_the_summary_has_every_evaluator_and_category(run_fake: RunFake) -> None:
    report = run_fake(GOOD)
    summary = report["summary"]
    assert set(summary["evaluators"]) == set(report["evaluators"])
    assert set(summary["categories"]) == {"intent", "memory", "honesty"}
    assert summary["evaluators"]["memory"]["n"] == 1  # only memory-name has facts to remember
    assert summary["turns"] == 6 and summary["sources"] == {"llm": 6}
    table = render_table(report)
    for word in ("EVALUATOR", "CATEGORY", "brevity", "intent_detection", "latency per answer"):
        assert word in table


def test_report_files_are_valid_json_and_markdown(run_fake: RunFake, tmp_path: Path) -> None:
    json_path, md_path = write_reports(run_fake(GOOD), tmp_path / "out")
    data = json.loads(json_path.read_text(encoding="utf-8"))
    assert data["schema"] == "naila-eval-report/1" and data["dataset"]["cases"] == 4
    assert load_report(json_path)["run_id"] == data["run_id"]
    markdown = md_path.read_text(encoding="utf-8")
    assert markdown.startswith("# NAILA eval: fake")
    tables = [line for line in markdown.splitlines() if line.startswith("|")]
    assert tables and all(line.endswith("|") for line in tables)
    header = next(line for line in tables if line.startswith("| evaluator"))
    assert header.count("|") == tables[tables.index(header) + 1].count("|")


def test_compare_detects_a_planted_regression(run_fake: RunFake, tmp_path: Path) -> None:
    before = run_fake(GOOD)
    worse = list(GOOD)
    worse[1] = "12 times 7 is 72."  # the planted regression
    after = run_fake(worse)
    diff = compare_reports(before, after)
    assert [(r["case"], r["evaluator"]) for r in diff["regressions"]] == [("question-multiply", "relevance")]
    assert diff["improvements"] == []
    assert diff["evaluators"]["relevance"]["delta"] < 0
    back = compare_reports(after, before)
    assert [(r["case"], r["evaluator"]) for r in back["improvements"]] == [("question-multiply", "relevance")]
    text = render_comparison(diff)
    assert "regressions (1):" in text and "question-multiply  relevance" in text and "(now fails)" in text


def test_the_compare_command(run_fake: RunFake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _ = write_reports(run_fake(GOOD), tmp_path / "a")
    worse = list(GOOD)
    worse[4] = "I can't remember your name."
    b, _ = write_reports(run_fake(worse), tmp_path / "b")
    assert main(["eval", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "regressions (" in out and "memory-name  memory 1.00 -> 0.00 (now fails)" in out


def test_compare_rejects_a_file_that_is_no_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "x.json"
    bogus.write_text("{}")
    assert main(["eval", "compare", str(bogus), str(bogus)]) == 1
    assert "not a NAILA eval report" in capsys.readouterr().err


def test_the_tiny_gguf_runs_through_the_real_llama_path(dataset: Dataset, embedder: SentenceEmbedder) -> None:
    from tests.support.models import tiny_model_path

    model = ChatLlamaCpp(model_path=tiny_model_path("never"), n_ctx=2048, max_tokens=16, temperature=0)
    cases = dataset.select("question-multiply,memory-name,time-what-time")
    report = run_eval(model, dataset, cases, RunOptions(model_name=model.model_name), embedder=embedder, progress=False)
    turns = [t for c in report["cases"] for t in c["turns"]]
    assert len(turns) == 5
    by_source = {t["source"] for t in turns}
    assert by_source == {"llm", "action"}  # the clock answers the time question
    llm_turns = [t for t in turns if t["source"] == "llm"]
    assert all(t["output_tokens"] == 16 and t["tokens_per_second"] > 0 for t in llm_turns)
    assert report["summary"]["tokens_per_second"]["n"] == len(llm_turns)
    time_case = next(c for c in report["cases"] if c["id"] == "time-what-time")
    assert "10:30" in time_case["answer"] and time_case["scores"]["intent_fit"]["passed"]
    # random text is not an answer: the question fails its fact
    assert not next(c for c in report["cases"] if c["id"] == "question-multiply")["scores"]["relevance"]["passed"]


@pytest.fixture
def small_generations(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds the model from LLM_* settings: keep the tiny model's random answers short."""
    monkeypatch.setenv("LLM_MAX_TOKENS", "24")
    monkeypatch.setenv("LLM_THREADS", "1")


@pytest.mark.usefixtures("small_generations")
def test_the_run_command_writes_reports_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], embedding_model_dir: Path
) -> None:
    from tests.support.models import tiny_model_path

    out = tmp_path / "reports"
    code = main(
        ["eval", "run", "--model", tiny_model_path("never"), "--cases", "greeting", "--limit", "2", "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("model ") and "EVALUATOR" in captured.out and "CATEGORY" in captured.out
    assert "[2/2]" in captured.err and "reports:" in captured.err  # progress and paths on stderr only
    assert len(list(out.glob("*.json"))) == 1 and len(list(out.glob("*.md"))) == 1
    assert load_report(next(out.glob("*.json")))["dataset"]["filter"] == "greeting"


@pytest.mark.usefixtures("small_generations")
def test_the_default_report_folder_is_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], embedding_model_dir: Path
) -> None:
    from tests.support.models import tiny_model_path

    monkeypatch.setenv("NAILA_DATA_DIR", str(tmp_path / "data"))
    assert main(["eval", "run", "--model", tiny_model_path("never"), "--cases", "bye-goodbye"]) == 0
    assert len(list((tmp_path / "data" / "evals").glob("*.json"))) == 1


def test_an_unknown_filter_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "run", "--cases", "no-such-case"]) == 1
    assert "no case matches" in capsys.readouterr().err


def test_offline_runs_send_nothing_even_with_tracing_on(run_fake: RunFake, monkeypatch: pytest.MonkeyPatch) -> None:
    with langsmith_recorder() as recorder, tracing_to(recorder, monkeypatch):
        monkeypatch.delenv("LANGSMITH_API_KEY")  # tracing on but no key: not configured, so offline
        assert not langsmith_configured()
        report = run_fake(GOOD)
    assert report["langsmith"]["uploaded"] is False
    assert recorder.requests == []


def test_langsmith_counts_as_configured_with_a_key_and_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    with langsmith_recorder() as recorder, tracing_to(recorder, monkeypatch):
        assert langsmith_configured()
    with langsmith_recorder() as recorder, tracing_to(recorder, monkeypatch, enabled=False):
        assert not langsmith_configured()


class FakeLangSmith:
    """The part of langsmith.Client that sync_dataset uses, in memory."""

    def __init__(self) -> None:
        self.datasets: dict[str, Any] = {}
        self.examples: list[Any] = []

    def has_dataset(self, *, dataset_name: str) -> bool:
        return dataset_name in self.datasets

    def read_dataset(self, *, dataset_name: str) -> Any:
        return self.datasets[dataset_name]

    def create_dataset(self, name: str, description: str = "") -> Any:
        from types import SimpleNamespace

        self.datasets[name] = SimpleNamespace(id=f"ds-{name}", name=name)
        return self.datasets[name]

    def list_examples(self, *, dataset_id: str) -> list[Any]:
        return [e for e in self.examples if e.dataset_id == dataset_id]

    def create_examples(self, *, dataset_id: str, examples: list[dict[str, Any]]) -> None:
        from types import SimpleNamespace

        self.examples += [SimpleNamespace(dataset_id=dataset_id, **e) for e in examples]


def test_uploading_syncs_the_cases_into_a_versioned_dataset_once(dataset: Dataset) -> None:
    client = FakeLangSmith()
    cases = dataset.select("memory")
    examples = sync_dataset(client, dataset, cases)
    assert list(client.datasets) == [f"naila-cases-v{dataset.version}"]
    assert len(client.examples) == len(dataset.cases)
    assert [e.metadata["case_id"] for e in examples] == [c.id for c in cases]
    assert examples[0].outputs["expect"]["memory"] == [["Priya"]]
    sync_dataset(client, dataset, cases)
    assert len(client.examples) == len(dataset.cases)  # nothing uploaded twice


# ---------------------------------------------------------------- #14: splits, must_pass, gate, guards


def test_the_report_shows_pass_rates_per_split_and_the_must_pass_cases(run_fake: RunFake) -> None:
    bad = [*GOOD[:4], "I don't know your name.", GOOD[5]]
    report = run_fake(bad)
    by_id = {c["id"]: c for c in report["cases"]}
    assert by_id["memory-name"]["must_pass"] is True and by_id["greet-hello"]["must_pass"] is False
    splits = report["summary"]["splits"]
    expected = {split: [c for c in report["cases"] if c["split"] == split] for split in ("tuned", "heldout")}
    for split, members in expected.items():
        if members:
            assert splits[split]["cases"] == len(members)
            assert splits[split]["passed_cases"] == sum(1 for c in members if c["passed"])
    memory_split = by_id["memory-name"]["split"]
    assert splits[memory_split]["evaluators"]["memory"] == {"n": 1, "passed": 0, "pass_rate": 0.0}
    assert report["summary"]["must_pass"] == {"cases": 1, "passed": 0, "failed": ["memory-name"]}
    table = render_table(report)
    assert "SPLIT" in table and "must_pass cases: 0/1 (0%); failing: memory-name" in table
    assert "## Splits" in render_markdown(report)


def test_the_gate_lists_failing_must_pass_cases_and_low_pass_rates(run_fake: RunFake) -> None:
    good = run_fake(GOOD)
    assert gate_failures(good) == []
    assert gate_failures(good, {"memory": 1.0, "honesty": 0.9}) == []
    bad = run_fake([*GOOD[:4], "I don't know your name.", GOOD[5]])
    assert gate_failures(bad) == ["must_pass case memory-name failed"]
    reasons = gate_failures(bad, {"memory": 0.9, "brevity": 0.5})
    assert reasons == ["must_pass case memory-name failed", "memory: pass rate 0% is below the required 90%"]
    # an evaluator that scored nothing cannot show its rate: the gate does not pass silently
    assert gate_failures(run_fake(GOOD[:2], cases="greet-hello,question-multiply"), {"memory": 0.5}) == [
        "memory: no case was scored, so its pass rate cannot reach 50%"
    ]


def test_guard_false_positives_are_counted_on_passing_answers_and_references(
    dataset: Dataset, embedder: SentenceEmbedder
) -> None:
    from evals.evaluators import GuardCheck

    def find(text: str, *, imposed_names: tuple[str, ...] = ()) -> list[Any]:
        from types import SimpleNamespace

        return [SimpleNamespace(guard="length", topic="words", evidence="x")] if "Priya" in text else []

    model = GenericFakeChatModel(messages=iter([AIMessage(a) for a in GOOD]))
    report = run_eval(
        model,
        dataset,
        dataset.select(CASES),
        RunOptions(model_name="fake"),
        embedder=embedder,
        progress=False,
        guards=GuardCheck(find),
    )
    guards = report["guards"]
    assert guards["available"] and guards["answers_checked"] == 6
    assert guards["answers_fired"] == 2 and guards["false_positive_rate"] == round(2 / 6, 4)
    assert guards["references_checked"] == 4 and guards["references_fired"] == 1  # "Your name is Priya!"
    assert [(f["case"], f["where"]) for f in guards["fires"]] == [
        ("memory-name", "turn 1"),
        ("memory-name", "turn 3"),
        ("memory-name", "reference"),
    ]
    assert "guards (false positives): fired on 2 of 6 answers" in render_table(report)


def test_without_the_guards_the_report_says_why(
    dataset: Dataset, embedder: SentenceEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from evals.evaluators import GuardCheck

    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "nodes.guards", None)  # as before nodes/guards.py existed
        missing = GuardCheck()
    model = GenericFakeChatModel(messages=iter([AIMessage(a) for a in GOOD]))
    options = RunOptions(model_name="fake")
    report = run_eval(model, dataset, dataset.select(CASES), options, embedder=embedder, progress=False, guards=missing)
    assert report["guards"]["available"] is False
    assert "guards: guards not available" in render_table(report)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("nope=0.5", "unknown evaluator 'nope'"),
        ("honesty=1.5", "the rate must be between 0 and 1"),
        ("honesty=high", "the rate must be a number"),
        ("honesty", "expected EVALUATOR=RATE"),
    ],
)
def test_a_bad_min_pass_is_a_usage_error(value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "run", "--min-pass", value])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("small_generations")
def test_a_failing_must_pass_case_makes_the_run_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], embedding_model_dir: Path
) -> None:
    """The real graph on the tiny random GGUF: random text never recalls 'Priya', so the must_pass case fails."""
    from tests.support.models import tiny_model_path

    lines = load_dataset().path.read_text(encoding="utf-8").splitlines()
    case = next(json.loads(line) for line in lines if '"id": "memory-name"' in line)
    case["turns"][-1] = ASK_NAME  # the question the facts answer is answered from code: the model's turn
    cases = tmp_path / "cases.jsonl"
    cases.write_text(lines[0] + "\n" + json.dumps(case) + "\n", encoding="utf-8")
    args = ["eval", "run", "--model", tiny_model_path("never"), "--out", str(tmp_path), "--no-actions"]
    code = main([*args, "--dataset", str(cases), "--cases", "memory-name"])
    captured = capsys.readouterr()
    assert code == 3, captured.err
    assert "gate failed" in captured.err and "must_pass case memory-name failed" in captured.err
    assert "must_pass cases: 0/1" in captured.out  # the table is printed all the same
    report = load_report(next(p for p in tmp_path.glob("*.json")))
    assert report["gate"]["passed"] is False and report["actions"] == {"skipped": "--no-actions"}
    markdown = next(tmp_path.glob("*.md")).read_text(encoding="utf-8")
    assert "## Gate" in markdown and "- must_pass case memory-name failed" in markdown


@pytest.mark.usefixtures("small_generations")
def test_min_pass_gates_on_an_evaluators_pass_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], embedding_model_dir: Path
) -> None:
    from tests.support.models import tiny_model_path

    args = ["eval", "run", "--model", tiny_model_path("never"), "--out", str(tmp_path), "--cases", "greet-hello"]
    # the greeting is detected by rules, whatever the model says: the gate passes
    assert main([*args, "--min-pass", "intent_detection=1.0"]) == 0
    capsys.readouterr()
    # random text is not relevant to "Hello!": the gate fails
    assert main([*args, "--min-pass", "intent_detection=100%", "--min-pass", "relevance=0.9"]) == 3
    err = capsys.readouterr().err
    assert "relevance: pass rate 0% is below the required 90%" in err and "intent_detection" not in err


@pytest.mark.usefixtures("small_generations")
def test_the_run_command_scores_action_cases_through_the_graph(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], embedding_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Action cases go through the real graph on the tiny GGUF: clear commands through the act node's
    forced calls (only the tool each names), a greeting through the answer path with no call."""
    from evals.actions import check_call
    from tests.support.models import tiny_model_path

    monkeypatch.setenv("LLM_CONTEXT_SIZE", "8192")  # the robot tools' schemas take thousands of tiny-model tokens
    monkeypatch.setenv("LLM_MAX_TOKENS", "96")  # room for a whole forced call
    chosen = "clear-head-left,clear-lights-blue,none-hello"
    code = main(["eval", "run", "--model", tiny_model_path("never"), "--cases", chosen, "--out", str(tmp_path)])
    captured = capsys.readouterr()
    report = load_report(next(tmp_path.glob("*.json")))
    actions = report["actions"]
    assert report["summary"]["cases"] == 0 and actions["dataset"]["cases"] == 3
    by_id = {c["id"]: c["outcome"] for c in actions["cases"]}
    for case_id, tool in (("clear-head-left", "move_head"), ("clear-lights-blue", "set_lights")):
        outcome = by_id[case_id]
        assert outcome["error"] is None and outcome["spoken"]
        # what the graph executed passed its own validation: only the tool the command names, in limits
        assert all(c["name"] == tool and check_call(c["name"], c["args"]) is None for c in outcome["calls"])
    assert any(by_id[i]["calls"] for i in ("clear-head-left", "clear-lights-blue"))  # the state's tool_calls are read
    assert by_id["none-hello"]["calls"] == [] and by_id["none-hello"]["spoken"]
    hello = next(c for c in actions["cases"] if c["id"] == "none-hello")
    assert hello["scores"]["no_action"]["passed"] is True
    assert "actions through the graph: 3 of" in captured.out and "ACTION EVALUATOR" in captured.out
    assert "EVALUATOR  " not in captured.out.replace("ACTION EVALUATOR", "")  # no empty eval table
    assert "[action 3/3] none-hello" in captured.err
    must_failed = [c["id"] for c in actions["cases"] if c["must_pass"] and not c["passed"]]
    assert code == (3 if must_failed else 0), captured.err
    assert report["gate"]["failures"] == [f"must_pass action case {i} failed" for i in must_failed]


@pytest.mark.usefixtures("small_generations")
def test_no_actions_skips_the_action_cases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], embedding_model_dir: Path
) -> None:
    from tests.support.models import tiny_model_path

    args = ["eval", "run", "--model", tiny_model_path("never"), "--out", str(tmp_path), "--no-actions"]
    assert main([*args, "--cases", "greet-hello,clear-head-left"]) == 0
    out = capsys.readouterr().out
    assert "actions: skipped (--no-actions)" in out
    report = load_report(next(tmp_path.glob("*.json")))
    assert [c["id"] for c in report["cases"]] == ["greet-hello"]
    # only action cases asked for, and skipped: nothing to run is a clear error
    assert main([*args, "--cases", "clear-head-left"]) == 1
    assert "no case matches" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("move_head", {"pan_degrees": -30, "tilt_degrees": 10}),
        ("move_head", {"pan_degrees": 45}),
        ("drive", {"direction": "backward", "distance_cm": 5}),
        ("turn_body", {"degrees": 90}),
        ("set_lights", {"color": "blue", "pattern": "blink"}),
        ("show_expression", {"expression": "happy"}),
        ("stop_all_motion", {}),
    ],
)
def test_the_commands_sent_give_back_the_calls_made(name: str, args: dict[str, Any]) -> None:
    """A graph that keeps no tool_calls in its state is judged by the commands it sent: the robot tools'
    own commands_for, read back, are the validated calls (defaults filled in)."""
    from evals.action_runner import calls_from_commands, outcome_from_state
    from evals.actions import check_call
    from nodes.robot_tools import ValidatedAction, commands_for, executed_call, validate_call

    action = validate_call({"name": name, "args": args, "id": "c1", "type": "tool_call"})
    assert isinstance(action, ValidatedAction)
    (call,) = calls_from_commands(commands_for([action]))
    made = executed_call(action)
    assert call.name == name and check_call(call.name, call.args) is None
    expected = {k: v for k, v in made["args"].items() if k in call.args}
    if name == "set_lights":  # the command carries the colour as hex
        expected["color"] = call.args["color"]
        assert str(call.args["color"]).startswith("#")
    assert dict(call.args) == expected and set(call.args) >= set(args)
    state = {"commands": commands_for([action]), "response_text": "Done."}
    assert outcome_from_state(state).calls == (call,)
    assert outcome_from_state({**state, "tool_calls": []}).calls == ()  # tool_calls, when kept, win


def test_cases_and_limit_choose_eval_and_action_cases(dataset: Dataset) -> None:
    from evals.actions import load_action_dataset
    from evals.cases import CaseError
    from evals.cli import _select

    actions = load_action_dataset()
    cases, acts = _select(dataset, actions, None, 3)
    assert len(cases) == 3 and [a.category for a in acts] == ["clear", "paraphrase", "out_of_range"]
    cases, acts = _select(dataset, actions, "memory", None)
    assert cases and {c.category for c in cases} == {"memory"} and acts == []
    cases, acts = _select(dataset, actions, "clear-*,must_pass", None)
    assert all(c.must_pass for c in cases) and {a.id for a in acts} >= {"clear-look-up", "none-hello"}
    assert all(a.id.startswith("clear-") or a.must_pass for a in acts)
    with pytest.raises(CaseError, match="no case matches"):
        _select(dataset, actions, "nothing-like-this", None)
    with pytest.raises(CaseError, match="no case matches"):
        _select(dataset, None, "clear-head-left", None)  # --no-actions and only action cases asked for


def test_compare_shows_cases_passed_per_split(run_fake: RunFake) -> None:
    before = run_fake([*GOOD[:4], "I don't know your name.", GOOD[5]])
    after = run_fake(GOOD)
    diff = compare_reports(before, after)
    split = next(c["split"] for c in after["cases"] if c["id"] == "memory-name")
    a_passed, total = diff["splits"][split]["a"]
    assert diff["splits"][split]["b"] == (a_passed + 1, total)
    assert diff["actions"] == {}  # neither run scored action cases
    text = render_comparison(diff)
    assert f"split {split}" in text and "PASSED" in text


def test_every_case_speaks_from_a_device_of_its_own_so_facts_never_leak_between_cases() -> None:
    from evals.runner import case_device

    ids = ["memory-name", "memory.name", "perspective-pet-1", "self/who"]
    devices = [case_device(i) for i in ids]
    assert len(set(devices)) == len(devices)
    assert all("." not in d and "/" not in d for d in devices)  # a store namespace cannot hold them
