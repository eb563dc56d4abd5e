"""The action eval (#13 §6): the dataset, the evaluators on hand-written model outputs, the plain-JSON parser,
and a real run of the runner (and of ``naila eval actions``) on the tiny GGUF."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from evals.action_runner import parse_plain_calls, render_action_table, run_actions, spoken_answer, summarize
from evals.actions import (
    CATEGORIES,
    ActionCase,
    ActionCaseError,
    ActionOutcome,
    Call,
    Confirmation,
    ExpectedArgs,
    NoAction,
    RightTool,
    WithinLimits,
    build_action_evaluators,
    check_call,
    load_action_dataset,
    parse_action_case,
    satisfies,
)
from llm import ChatLlamaCpp
from naila_graph.cli import main


@pytest.fixture(scope="module")
def cases() -> dict[str, ActionCase]:
    return {case.id: case for case in load_action_dataset().cases}


def outcome(*calls: tuple[str, Mapping[str, Any]], spoken: str = "", invalid: tuple[str, ...] = ()) -> ActionOutcome:
    made = tuple(Call(name, args) for name, args in calls)
    return ActionOutcome(calls=made, spoken=spoken or spoken_answer("", made), invalid=invalid)


# ---------------------------------------------------------------- the dataset


def test_the_dataset_has_at_least_40_cases_covering_every_category() -> None:
    dataset = load_action_dataset()
    counts = Counter(case.category for case in dataset.cases)
    assert len(dataset.cases) >= 40
    assert set(counts) == set(CATEGORIES)
    assert counts["no_action"] >= 5 and counts["out_of_range"] >= 4 and counts["multi_step"] >= 3
    assert any(case.must_pass for case in dataset.cases)
    assert all(len(case.calls) >= 2 for case in dataset.cases if case.category == "multi_step")
    assert all(case.refusal_ok for case in dataset.cases if case.category == "out_of_range")


def test_a_limited_selection_takes_every_category_first() -> None:
    chosen = load_action_dataset().select(len(CATEGORIES))
    assert [case.category for case in chosen] == list(CATEGORIES)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "x", "category": "clear", "utterance": "Look left.", "calls": []}, "must list the calls"),
        ({"id": "x", "category": "clear", "utterance": "Fly.", "calls": [{"tool": "fly"}]}, "unknown tool 'fly'"),
        (
            {
                "id": "x",
                "category": "clear",
                "utterance": "Look.",
                "calls": [{"tool": "move_head", "args": {"yaw": 1}}],
            },
            "has no argument 'yaw'",
        ),
        (
            {"id": "x", "category": "no_action", "utterance": "Hi.", "calls": [{"tool": "stop_all_motion"}]},
            "expects no call",
        ),
        ({"id": "x", "category": "chat", "utterance": "Hi."}, "category must be one of"),
        (
            {
                "id": "x",
                "category": "clear",
                "utterance": "Look.",
                "calls": [{"tool": "move_head", "args": {"pan_degrees": "<<0"}}],
            },
            "comparison",
        ),
    ],
)
def test_malformed_cases_are_refused_with_the_reason(record: dict[str, object], message: str) -> None:
    with pytest.raises(ActionCaseError, match=message):
        parse_action_case(record, where="line 1")


def test_a_malformed_file_names_the_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text('{"meta": {"name": "a", "version": "1"}}\n{"id": "x", "category": "clear"\n', encoding="utf-8")
    with pytest.raises(ActionCaseError, match=r"bad\.jsonl:2: invalid JSON"):
        load_action_dataset(file)


def test_argument_expectations() -> None:
    assert satisfies("<0", -30) and not satisfies("<0", 0) and not satisfies("<0", "left")
    assert satisfies(">=5", 5) and not satisfies(">=5", 4.9)
    assert satisfies(["blue", "#0000ff"], "#0000FF") and satisfies(["blue"], "Blue") and not satisfies(["blue"], "red")
    assert satisfies(10, 10.0) and not satisfies(10, 11) and not satisfies(1, True)


# ---------------------------------------------------------------- evaluators on hand-written outputs


def test_a_right_call_within_limits_with_a_confirmation_passes_every_evaluator(cases: dict[str, ActionCase]) -> None:
    case = cases["clear-head-left"]
    out = outcome(("move_head", {"pan_degrees": -45}))
    assert out.spoken == "Turning my head to the left."
    scores = {e.key: e(case, out) for e in build_action_evaluators()}
    assert {k: s.score for k, s in scores.items()} == {
        "right_tool": 1.0,
        "within_limits": 1.0,
        "expected_args": 1.0,
        "no_action": None,
        "confirmation": 1.0,
    }


def test_the_wrong_tool_or_the_wrong_direction_fails(cases: dict[str, ActionCase]) -> None:
    case = cases["clear-head-left"]
    wrong_tool = RightTool()(case, outcome(("turn_body", {"degrees": -45})))
    assert wrong_tool.score == 0.0 and "expected move_head" in wrong_tool.comment
    wrong_way = ExpectedArgs()(case, outcome(("move_head", {"pan_degrees": 45})))
    assert wrong_way.score == 0.0 and "pan_degrees=45" in wrong_way.comment
    assert ExpectedArgs()(case, outcome(("turn_body", {"degrees": -45}))).score is None  # nothing to compare
    nothing = RightTool()(case, outcome(spoken="Okay!"))
    assert nothing.score == 0.0


def test_an_out_of_limit_call_fails_and_a_clamped_call_or_a_refusal_passes(cases: dict[str, ActionCase]) -> None:
    case = cases["range-head-200"]
    over = outcome(("move_head", {"pan_degrees": 200}))
    assert WithinLimits()(case, over).score == 0.0
    assert "pan_degrees=200" in WithinLimits()(case, over).comment
    assert over.spoken == ""  # the graph confirms nothing it refused
    assert Confirmation()(case, over).score is None
    clamped = outcome(("move_head", {"pan_degrees": 90}))
    assert RightTool()(case, clamped).score == 1.0 and WithinLimits()(case, clamped).score == 1.0
    refusal = outcome(spoken="I can only turn my head 90 degrees each way.")
    assert RightTool()(case, refusal).score == 1.0 and WithinLimits()(case, refusal).score is None
    shrug = outcome(spoken="What a fun idea!")
    assert RightTool()(case, shrug).score == 0.0


def test_speed_and_colour_limits_are_the_graphs(cases: dict[str, ActionCase]) -> None:
    assert check_call("drive", {"direction": "forward", "distance_cm": 10, "speed": 0.05}) is not None
    assert check_call("drive", {"direction": "forward", "distance_cm": 31}) is not None
    assert check_call("set_lights", {"color": "not-a-colour"}) is not None
    assert check_call("set_lights", {"color": "#00ff00", "pattern": "blink"}) is None
    assert check_call("fly", {}) is not None
    assert WithinLimits()(cases["clear-drive-forward"], outcome(invalid=('drive({"direction": "forw',))).score == 0.0


def test_no_action_fails_on_any_call_and_needs_words(cases: dict[str, ActionCase]) -> None:
    case = cases["none-light-colour"]
    assert NoAction()(case, outcome(spoken="They're blue right now.")).score == 1.0
    called = NoAction()(case, outcome(("set_lights", {"color": "blue"})))
    assert called.score == 0.0 and "set_lights" in called.comment
    assert NoAction()(case, outcome(invalid=('{"name": "set_li',), spoken="Sure")).score == 0.0
    assert NoAction()(case, ActionOutcome(spoken="")).score == 0.0
    assert NoAction()(cases["clear-head-left"], outcome(spoken="Hi")).score is None


def test_a_capability_question_tolerates_a_demonstration_of_the_tool_it_names(cases: dict[str, ActionCase]) -> None:
    case = cases["ambig-can-you-turn-head"]
    assert RightTool()(case, outcome(spoken="Yes, I can turn it left and right!")).score == 1.0
    assert RightTool()(case, outcome(("move_head", {"pan_degrees": 20}))).score == 1.0
    assert RightTool()(case, outcome(("set_lights", {"color": "red"}))).score == 0.0
    assert NoAction()(case, outcome(("move_head", {"pan_degrees": 20}))).score is None


def test_multi_step_needs_every_call_in_any_order(cases: dict[str, ActionCase]) -> None:
    case = cases["multi-left-red"]
    both = outcome(("set_lights", {"color": "red"}), ("turn_body", {"degrees": -90}))
    assert RightTool()(case, both).score == 1.0 and ExpectedArgs()(case, both).score == 1.0
    head_instead = outcome(("move_head", {"pan_degrees": -60}), ("set_lights", {"color": "#FF0000"}))
    assert RightTool()(case, head_instead).score == 1.0 and ExpectedArgs()(case, head_instead).score == 1.0
    half = outcome(("turn_body", {"degrees": -90}))
    assert RightTool()(case, half).score == 0.5
    extra = outcome(
        ("set_lights", {"color": "red"}),
        ("turn_body", {"degrees": -90}),
        ("drive", {"direction": "forward", "distance_cm": 5}),
    )
    assert RightTool()(case, extra).score == 0.75 and "extra drive" in RightTool()(case, extra).comment
    wrong_colour = outcome(("set_lights", {"color": "blue"}), ("turn_body", {"degrees": -90}))
    assert ExpectedArgs()(case, wrong_colour).score == 0.5


def test_confirmation_needs_words_about_the_action(cases: dict[str, ActionCase]) -> None:
    case = cases["clear-lights-blue"]
    call = ("set_lights", {"color": "blue"})
    assert Confirmation()(case, outcome(call)).score == 1.0  # "Making my lights blue."
    assert Confirmation()(case, outcome(call, spoken="Making my lights blue!")).score == 1.0
    assert Confirmation()(case, outcome(call, spoken=" ")).score == 0.0
    assert Confirmation()(case, outcome(call, spoken='{"name": "set_lights"} Making them blue')).score == 0.0
    assert Confirmation()(case, outcome(call, spoken="What a lovely day.")).score == 0.5


# ---------------------------------------------------------------- the plain-JSON parser (no grammar)


def test_plain_calls_are_parsed_from_text_and_the_rest_is_speech() -> None:
    text = (
        'Sure!\n```json\n{"name": "move_head", "arguments": {"pan_degrees": -30}}\n```\n'
        '{"name": "set_lights", "arguments": "{\\"color\\": \\"red\\"}"}\nTurning left and going red.'
    )
    calls, invalid, spoken = parse_plain_calls(text)
    assert [(c.name, dict(c.args)) for c in calls] == [
        ("move_head", {"pan_degrees": -30}),
        ("set_lights", {"color": "red"}),
    ]
    assert invalid == [] and spoken == "Sure! Turning left and going red."


def test_a_cut_off_plain_call_is_unparseable_never_a_call() -> None:
    calls, invalid, spoken = parse_plain_calls('{"name": "drive", "arguments": {"direction": "forw')
    assert calls == [] and len(invalid) == 1 and spoken == ""
    calls, invalid, spoken = parse_plain_calls("Sets {like this} are fun.")
    assert calls == [] and invalid == [] and "fun" in spoken


# ---------------------------------------------------------------- real runs on the tiny GGUF


@pytest.fixture(scope="module")
def tiny(tiny_model: str) -> ChatLlamaCpp:
    # the tiny model's byte-sized vocabulary makes the persona and the six tools ~5k tokens
    model = ChatLlamaCpp(model_path=tiny_model, json_max_string_length=8, max_tokens=48, n_ctx=8192, seed=0)
    model.load()
    return model


@pytest.mark.parametrize("grammar", [True, False])
def test_the_runner_scores_three_cases_on_the_tiny_model(tiny: ChatLlamaCpp, grammar: bool) -> None:
    chosen = load_action_dataset().select(3)
    results, evaluators, source = run_actions(tiny, chosen, grammar=grammar, max_tokens=48, progress=False)
    assert source == "nodes.robot_tools"
    assert [r.case.id for r in results] == [c.id for c in chosen]
    for r in results:
        assert r.outcome.error is None
        assert set(r.scores) == {e.key for e in evaluators}
        assert all(s.score is None or 0.0 <= s.score <= 1.0 for s in r.scores.values())
    summary = summarize(results, evaluators)
    assert summary["cases"] == 3 and set(summary["categories"]) == set(CATEGORIES[:3])
    table = render_action_table(results, evaluators, title="tiny")
    for e in evaluators:
        assert any(line.startswith(e.key) for line in table.splitlines())


def test_naila_eval_actions_prints_the_table(
    tiny_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_CONTEXT_SIZE", "8192")  # see tiny()
    out = tmp_path / "cases.json"
    code = main(["eval", "actions", "--model", tiny_model, "--limit", "3", "--max-tokens", "32", "--json", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "with the grammar (bind_tools auto), 3/" in stdout.splitlines()[0]
    for key in ("right_tool", "within_limits", "expected_args", "no_action", "confirmation", "must_pass"):
        assert key in stdout
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["grammar"] is True and len(data["cases"]) == 3 and data["summary"]["cases"] == 3
    assert [c["outcome"]["error"] for c in data["cases"]] == [None, None, None]
