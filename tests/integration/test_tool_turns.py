"""Robot actions in memory and in ordinary turns: every executed call and its result are stored and rendered on
the next turn; with ``NAILA_ROBOT_TOOLS=auto`` the model may call the robot tools in any turn (checked,
repaired or refused exactly as a clear command's calls), and the saved prompt states are made with the tools
the turns render.

Scripted chat models give the exact replies a case needs (a random model cannot be made to call a tool);
rendering, token counts and prompt states go through the real llama.cpp with the tiny GGUF."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from llm import ChatLlamaCpp
from naila_graph.graph import build_graph, turn_config, turn_input
from naila_graph.settings import NailaSettings
from nodes.finalize import forget_oldest
from nodes.generate_response import ResponseGenerator, tools_in_prompt
from nodes.robot_tools import MAX_REPAIR_ROUNDS, UNABLE_TEXT, robot_tool_schemas, tool_turn
from tests.support.scripted import Scripted, call_message

CLOCK = datetime(2026, 6, 15, 10, 30)


_call = call_message


def _graph(model: Any, robot_tools: str) -> Any:
    settings = NailaSettings(robot_tools=robot_tools)  # type: ignore[arg-type]
    return build_graph(model, InMemorySaver(), settings=settings, clock=lambda: CLOCK)


def _turn(graph: Any, text: str, device: str = "bot") -> dict[str, Any]:
    return dict(graph.invoke(turn_input(text, device_id=device), turn_config(device)))


# ------------------------------------------------------------------------------------------- memory


def test_an_action_turn_is_stored_as_the_call_its_result_and_the_answer_and_the_next_prompt_shows_them() -> None:
    model = Scripted(messages=iter([_call("move_head", "c1", pan_degrees=-30), AIMessage("I turned my head left.")]))
    graph = _graph(model, "commands")
    first = _turn(graph, "Turn your head to the left.")
    assert first["commands"] and first["response_text"] == "Turning my head to the left."
    human, call, result, answer = first["messages"]
    assert isinstance(human, HumanMessage) and human.content == "Turn your head to the left."
    assert isinstance(call, AIMessage) and call.content == ""
    assert call.tool_calls == [
        {"name": "move_head", "args": {"pan_degrees": -30, "tilt_degrees": 0, "speed": 0.5}, "id": "c1",
         "type": "tool_call"}
    ]  # fmt: skip
    assert isinstance(result, ToolMessage) and result.tool_call_id == "c1" and result.name == "move_head"
    assert result.content == "Done: head pan=-30 tilt=0 speed=0.5."
    assert isinstance(answer, AIMessage) and answer.content == "Turning my head to the left."
    assert answer.additional_kwargs["actions"] == ["head pan=-30 tilt=0 speed=0.5"]

    second = _turn(graph, "What did you just do?")
    prompt = model.seen[-1]
    shown = [m for m in prompt if isinstance(m, AIMessage) and m.tool_calls]
    assert [c["name"] for m in shown for c in m.tool_calls] == ["move_head"]  # the call is in the history
    assert any(isinstance(m, ToolMessage) and m.tool_call_id == "c1" for m in prompt)
    assert second["response_text"] == "I turned my head to the left." or second["response_source"] == "llm"
    assert len(second["messages"]) == 6  # the action turn's four messages and this turn's two


def test_two_actions_are_stored_one_call_per_assistant_message() -> None:
    """Llama 3.1's template allows one call per assistant message; so each action gets its own."""
    model = Scripted(messages=iter([_call("move_head", "a", pan_degrees=-45), _call("set_lights", "b", color="red")]))
    state = _turn(_graph(model, "commands"), "Turn your head to the left and make your lights red")
    kinds = [(type(m).__name__, len(getattr(m, "tool_calls", []) or [])) for m in state["messages"]]
    assert kinds == [
        ("HumanMessage", 0), ("AIMessage", 1), ("ToolMessage", 0), ("AIMessage", 1), ("ToolMessage", 0),
        ("AIMessage", 0),
    ]  # fmt: skip


def test_the_memory_bound_drops_whole_turns_so_a_call_never_loses_its_result() -> None:
    calls = [{"name": "set_lights", "args": {"color": "blue"}, "id": "x"}]
    messages: list[BaseMessage] = [
        HumanMessage("make your lights blue", id="1"),
        *tool_turn(calls, ["Done: lights."]),
        AIMessage("Making my lights blue.", id="4"),
        HumanMessage("thanks", id="5"),
        AIMessage("You're welcome!", id="6"),
    ]
    for i, m in enumerate(messages):
        m.id = m.id or f"t{i}"
    removed = forget_oldest(messages, keep_turns=1)
    assert [r.id for r in removed] == [m.id for m in messages[:4]]  # the whole action turn, nothing else
    assert forget_oldest(messages, keep_turns=2) == []


def test_a_stored_call_and_result_render_through_the_real_template_and_count_in_the_history(tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=8, temperature=0.0).load()
    try:
        calls = [{"name": "move_head", "args": {"pan_degrees": -30}, "id": "c1"}]
        history = [HumanMessage("turn left"), *tool_turn(calls, ["Done: head pan=-30."]), AIMessage("Turning.")]
        text = model.render_prompt([SystemMessage("You are NAILA."), *history, HumanMessage("What did you do?")])
        assert '"pan_degrees": -30' in text and "Done: head pan=-30." in text  # neither call nor result lost
        generator = ResponseGenerator(model, persona="You are NAILA.", clock=lambda: CLOCK, max_turns=20)
        with_call = generator._count(history)
        without = generator._count([history[0], history[-1]])
        assert with_call > without  # the call and its result take room in the window
    finally:
        model.unload()


# --------------------------------------------------------------------------------- auto: any turn


def test_in_an_ordinary_turn_the_model_may_call_a_robot_tool_and_it_is_done() -> None:
    model = Scripted(messages=iter([_call("show_expression", "e1", expression="happy")]))
    state = _turn(_graph(model, "auto"), "I just got the job I wanted!")
    assert state["intent"] != "robot_command"  # not a clear command: generate_response with tools, auto
    assert [b["tool_choice"] for b in model.bound] == ["auto"]
    assert [t["function"]["name"] for t in model.bound[0]["tools"]] == [
        t["function"]["name"] for t in robot_tool_schemas()
    ]
    assert state["response_source"] == "llm" and state["response_text"] == "Making a happy face."
    assert state["commands"][0]["payload"]["expression"] == "happy"
    assert state["messages"][1].tool_calls[0]["name"] == "show_expression"


def test_an_invalid_auto_call_goes_back_to_the_model_which_may_answer_in_words() -> None:
    words = AIMessage("My head only turns 90 degrees each way, so I'll stay put.")
    model = Scripted(messages=iter([_call("move_head", "h1", pan_degrees=400), words]))
    state = _turn(_graph(model, "auto"), "I wonder what is behind you")
    assert state["commands"] == [] and state["actions"] == []
    assert state["response_text"] == words.content and state["response_source"] == "llm"
    repair = model.seen[-1]
    (error,) = [m for m in repair if isinstance(m, ToolMessage)]
    assert error.status == "error" and "pan_degrees=400 is out of range" in str(error.content)


def test_auto_calls_that_stay_invalid_are_refused_and_nothing_moves() -> None:
    bad = [_call("drive", str(i), direction="forward", distance_cm=10, speed=5.0) for i in range(1 + MAX_REPAIR_ROUNDS)]
    model = Scripted(messages=iter(bad))
    state = _turn(_graph(model, "auto"), "Come a bit closer to me")
    assert len(model.seen) == 1 + MAX_REPAIR_ROUNDS
    assert state["response_text"] == UNABLE_TEXT and state["commands"] == []
    assert state["fallback_reason"] == "invalid_action"


async def test_the_async_auto_path_takes_the_same_call() -> None:
    model = Scripted(messages=iter([_call("set_lights", "l1", color="green")]))
    graph = _graph(model, "auto")
    state = await graph.ainvoke(turn_input("It's so dark in here", device_id="bot"), turn_config("bot"))
    assert state["response_text"] == "Making my lights green." and state["commands"]


def test_commands_mode_binds_no_tools_in_ordinary_turns_and_off_never_acts() -> None:
    model = Scripted(messages=iter([AIMessage("Congratulations!")]))
    state = _turn(_graph(model, "commands"), "I just got the job I wanted!")
    assert model.bound == [] and state["response_text"] == "Congratulations!"
    silent = Scripted(messages=iter([AIMessage("I'd love to, but I can't move right now.")]))
    state = _turn(_graph(silent, "off"), "Turn your head to the left.")
    assert silent.bound == [] and state["commands"] == [] and state["response_source"] == "llm"


# ------------------------------------------------------------------ the tools in a real model's prompt


def test_the_tools_stay_out_of_ordinary_turns_when_they_would_crowd_the_window(tiny_model: str) -> None:
    """The tiny model's generic rendering of the robot tools is thousands of tokens: in a 2,048-token window
    they are bound for clear commands only; in a 32,768-token one, in every turn."""
    small = ChatLlamaCpp(model_path=tiny_model, n_ctx=2048, max_tokens=8).load()
    try:
        assert tools_in_prompt("auto", small) is None
        generator = ResponseGenerator(small, persona="x", clock=lambda: CLOCK, max_turns=20, robot_tools="auto")
        assert generator.prompt_tools is None and generator.inputs({"text": "hi"})["tools"] is False
    finally:
        small.unload()
    large = ChatLlamaCpp(model_path=tiny_model, n_ctx=32768, max_tokens=8).load()
    try:
        assert tools_in_prompt("auto", large) == robot_tool_schemas()
        assert tools_in_prompt("commands", large) is None and tools_in_prompt("off", large) is None
        generator = ResponseGenerator(large, persona="x", clock=lambda: CLOCK, max_turns=20, robot_tools="auto")
        assert generator.inputs({"text": "hi"})["tools"] is True
        rendered = large.render_prompt(generator.prompt_messages(generator.inputs({"text": "hi"})))
        assert "move_head" not in rendered  # render_prompt shows messages only; the tokens below include tools
        bare = generator._count([HumanMessage("hi")])
        assert generator._count([HumanMessage("hi")], with_tools=True) > bare + 500
    finally:
        large.unload()


def test_a_prompt_state_made_with_the_tools_is_restored_only_for_the_tools(tiny_model: str, tmp_path: Path) -> None:
    from naila_graph.brain import prime_prompt_cache

    tools = robot_tool_schemas()
    states = tmp_path / "prompt-states"
    first = ChatLlamaCpp(model_path=tiny_model, n_ctx=8192, max_tokens=8).load()
    try:
        primed = asyncio.run(
            prime_prompt_cache(first, None, None, should_stop=lambda: False, state_dir=states, tools=tools)
        )
        bare = len(first.prompt_tokens([SystemMessage("x")], add_generation_prompt=False))
        assert primed > 1000 + bare  # the persona and the tools' descriptions
    finally:
        first.unload()
    second = ChatLlamaCpp(model_path=tiny_model, n_ctx=8192, max_tokens=8).load()
    try:
        from prompts.persona import load_persona

        persona = [SystemMessage(load_persona(None))]
        assert second.restore_prefix_from_disk(persona, states) == 0  # made for another prompt: not used
        assert second.restore_prefix_from_disk(persona, states, tools=tools) == primed
    finally:
        second.unload()


@pytest.mark.parametrize("mode", ["sideways", "", "AUTO "])
def test_a_bad_robot_tools_setting_is_refused_with_the_choices(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("NAILA_ROBOT_TOOLS", mode)
    with pytest.raises(ValidationError, match=r"auto.*commands.*off"):
        NailaSettings()


def test_in_an_ordinary_turn_the_words_narrow_a_call_the_model_may_make(tiny_model: str) -> None:
    """ "Keep your lights purple" is no clear command (the model decides whether to act), but if it calls
    set_lights, purple it is; the prompt's tools stay as they are (the saved states match)."""
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=32768, max_tokens=8).load()
    try:
        generator = ResponseGenerator(model, persona="x", clock=lambda: CLOCK, max_turns=20, robot_tools="auto")
        inputs = generator.inputs({"text": "Keep your lights purple for a while", "intent": "general"})
        _, bound = generator._chain(inputs)
        assert bound is not None
        kwargs: Any = bound.kwargs  # type: ignore[attr-defined]
        assert kwargs["tool_choice"] == "auto" and kwargs["tools"] == robot_tool_schemas()
        assert kwargs["call_schemas"]["set_lights"]["properties"]["color"]["enum"] == ["purple"]
        _, plain = generator._chain(generator.inputs({"text": "What a lovely day", "intent": "general"}))
        assert plain is generator._bound  # nothing to narrow: the one bound model of every turn
    finally:
        model.unload()


def test_by_default_only_clear_commands_bind_the_tools_and_bring_two_turns_of_history() -> None:
    """NAILA_ROBOT_TOOLS=commands (default): on the 0.5B the tools in every prompt made it refuse ordinary
    requests ("I'm sorry, but I can't assist with that."). A command's prompt has them; it brings only the
    last two turns (its prompt shares nothing past the persona with the saved states of ordinary turns)."""
    assert NailaSettings().robot_tools == "commands"
    model = Scripted(messages=iter([AIMessage(f"answer {i}") for i in range(4)] + [_call("nod", "n")]))
    graph = _graph(model, "commands")
    for i in range(4):
        _turn(graph, f"Tell me fact number {i}.")
    model.messages = iter([_call("move_head", "h", pan_degrees=-20)])
    _turn(graph, "Turn your head to the left.")
    assert [b["tool_choice"] for b in model.bound] == ["move_head"]
    humans = [m.content for m in model.seen[-1] if isinstance(m, HumanMessage)]
    assert humans == ["Tell me fact number 2.", "Tell me fact number 3.", "Turn your head to the left."]


# ----------------------------------------------------------------------- whose facts (perspective)


def test_a_mirrored_my_is_given_back_to_the_person_in_the_stream_and_the_answer() -> None:
    """The 0.5B answers "what's my parrot called?" with "My parrot is Kiwi." (no prompt wording stopped it):
    with Kiwi among the person's facts, what is spoken and stored is "Your parrot is Kiwi."."""
    from langgraph.store.memory import InMemoryStore

    from naila_graph.turn import Final, Sentence, TurnRequest, TurnRunner

    model = Scripted(messages=iter([AIMessage("What a lovely bird!"), AIMessage("My parrot is Kiwi. I love birds.")]))
    settings = NailaSettings(robot_tools="commands")
    graph = build_graph(model, InMemorySaver(), settings=settings, clock=lambda: CLOCK, store=InMemoryStore())
    runner = TurnRunner(graph)

    def ask(text: str) -> tuple[list[str], Any]:
        events = runner.run_sync(TurnRequest(text=text, device_id="bot", thread_id="bot"))
        spoken = [e.text for e in events if isinstance(e, Sentence)]
        (final,) = [e for e in events if isinstance(e, Final)]
        return spoken, final

    ask("I have a parrot called Kiwi.")
    # asked more than the facts answer (nodes/recall.py answers "What's my parrot called?" alone): the model
    spoken, final = ask("What's my parrot called, and what do parrots eat?")
    assert " ".join([*spoken, final.tail] if final.tail else spoken).startswith("Your parrot is Kiwi.")
    assert final.text == "Your parrot is Kiwi. I love birds." and not final.replaced
