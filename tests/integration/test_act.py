"""The ``act`` node (nodes/act.py): a clear robot command becomes a checked call of the robot tools.

The repair loop is driven by a scripted chat model (its replies are the inputs under test); the graph and
server tests use the tiny GGUF through real llama.cpp and a real mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from llm import ChatLlamaCpp
from naila_graph import protocol as p
from naila_graph.graph import build_graph, turn_config, turn_input
from naila_graph.server import NailaServer
from naila_graph.settings import MQTTSettings, NailaSettings
from nodes.act import ActionTaker, likely_tool, named_tools
from nodes.generate_response import ResponseGenerator
from nodes.robot_tools import MAX_REPAIR_ROUNDS, UNABLE_TEXT
from tests.support.mqtt import robot
from tests.support.scripted import Scripted, call_message

_call = call_message


def _scripted(*replies: AIMessage) -> Scripted:
    return Scripted(messages=iter(replies))


def _actor(model: Any) -> ActionTaker:
    """The act node as the graph builds it: from the generate_response node (its prompt, history, tools);
    ``commands`` mode, so the model is bound only by the act node itself."""
    clock = lambda: datetime(2026, 6, 15, 10, 30)  # noqa: E731
    return ResponseGenerator(model, persona="You are NAILA.", clock=clock, max_turns=20, robot_tools="commands").actor


STATE = {"intent": "robot_command", "text": "Turn your head to the left.", "messages": []}


def test_a_valid_call_becomes_actions_commands_and_a_confirmation() -> None:
    model = _scripted(_call("move_head", "a", pan_degrees=-30))
    update = _actor(model).invoke(STATE, {})
    assert model.bound[0]["tool_choice"] == "move_head"  # the command names the head: only that tool
    assert update["response_text"] == "Turning my head to the left."
    assert update["response_source"] == "llm"
    assert update["commands"] == [
        {
            "type": "motor",
            "sequence": 0,
            "payload": {"motor_group": "head", "action": "pan", "degrees": -30, "speed": 0.5},
        }
    ]
    assert update["actions"] and "pan=-30" in update["actions"][0]


def test_an_out_of_range_call_is_sent_back_once_and_the_repaired_call_is_taken() -> None:
    model = _scripted(_call("move_head", "a", pan_degrees=200), _call("move_head", "b", pan_degrees=-90))
    update = _actor(model).invoke(STATE, {})
    assert update["commands"][0]["payload"]["degrees"] == -90
    second_prompt = model.seen[1]
    errors = [m for m in second_prompt if isinstance(m, ToolMessage)]
    assert len(errors) == 1 and errors[0].status == "error" and "pan_degrees=200" in str(errors[0].content)


def test_after_the_repair_rounds_nothing_is_done_and_naila_says_so() -> None:
    bad = [_call("move_head", str(i), pan_degrees=500) for i in range(1 + MAX_REPAIR_ROUNDS)]
    model = _scripted(*bad)
    update = _actor(model).invoke(STATE, {})
    assert len(model.seen) == 1 + MAX_REPAIR_ROUNDS
    assert update == {
        "response_text": UNABLE_TEXT,
        "response_source": "pattern",
        "fallback_reason": "invalid_action",
        "finish_reason": "stop",
    }


async def test_the_async_path_takes_the_same_call() -> None:
    model = _scripted(_call("set_lights", "a", color="blue"))
    update = await _actor(model).ainvoke(STATE, {})
    assert update["response_text"] == "Making my lights blue."
    assert update["commands"][0]["payload"]["color"] == "#0000FF"


def test_other_intents_and_models_without_tools_are_left_to_generate_response() -> None:
    model = _scripted(_call("move_head", "a", pan_degrees=-30))
    assert _actor(model).invoke({**STATE, "intent": "question"}, {}) == {}
    assert _actor(None).invoke(STATE, {}) == {}
    assert model.seen == []


@pytest.fixture(scope="module")
def tiny_tools_model(tiny_model: str) -> Iterator[ChatLlamaCpp]:
    # The robot tools' descriptions are ~4.7k tokens in the tiny model's generic rendering.
    model = ChatLlamaCpp(
        model_path=tiny_model, n_ctx=8192, max_tokens=96, temperature=0.0, seed=1, json_max_string_length=8
    ).load()
    yield model
    model.unload()


def _settled_outcome(state: dict[str, Any]) -> None:
    """Whatever a random model called: an action within limits from the model, or nothing and NAILA says so."""
    if state["response_source"] == "llm":
        assert state["actions"] and state["commands"]
    else:
        assert state["response_source"] == "pattern" and state["commands"] == [] and state["actions"] == []
        assert state["fallback_reason"] in ("invalid_action", "model_timeout", "context_overflow")


def test_the_graph_routes_a_command_through_act_on_the_real_llama_cpp(tiny_tools_model: ChatLlamaCpp) -> None:
    graph = build_graph(tiny_tools_model, InMemorySaver())
    state = graph.invoke(turn_input("Turn your head to the left.", device_id="bot"), turn_config("bot"))
    assert state["intent"] == "robot_command"
    _settled_outcome(state)
    stored = state["messages"][-1]
    assert stored.content == state["response_text"]
    assert stored.additional_kwargs.get("actions", []) == state["actions"]  # memory says what was done
    again = graph.invoke(turn_input("What time is it?", device_id="bot"), turn_config("bot"))
    assert again["actions"] == [] and again["commands"] == []  # nothing of the last turn leaks


async def test_the_server_publishes_the_command_before_the_answer(
    mosquitto: Any, tmp_path: Path, tiny_tools_model: ChatLlamaCpp
) -> None:
    settings = NailaSettings(data_dir=tmp_path, memory_url=f"sqlite:///{tmp_path / 'memory.sqlite'}")
    mqtt = MQTTSettings(
        broker_host=mosquitto.host, broker_port=mosquitto.port, client_id=f"naila-{uuid.uuid4().hex[:8]}"
    )
    async with robot(mosquitto.host, mosquitto.port) as bot, NailaServer(settings, mqtt, chat_model=tiny_tools_model):
        task = await bot.task("act_bot", "Please make your lights blue")
        answer = await bot.answer(task, within=120)
        await asyncio.sleep(0.3)
    response = answer["response"]
    commands = bot.on(p.COMMAND_TOPIC, task)
    if response["source"] == "llm":
        assert response["intent"] == "robot_command" and response["actions"]
        (command,) = commands
        assert command["target_device"] == "act_bot" and command["response"]["text"] == response["text"]
        topics = [r.topic for r in bot.received]
        assert topics.index(p.COMMAND_TOPIC) < topics.index(p.RESPONSE_TOPIC)  # the action, then the words
    else:
        assert commands == [] and "actions" not in response


@pytest.mark.parametrize(
    ("text", "tool"),
    [
        ("Turn your head to the left.", "move_head"),
        ("Look up!", "move_head"),
        ("Make your lights blue", "set_lights"),
        ("Drive forward 10 centimetres", "drive"),
        ("Turn around", "turn_body"),
        ("Look happy", "show_expression"),
        ("Stop!", "stop_all_motion"),
        ("Turn your head and make your lights red", None),  # two tools: the model chooses among all
        ("Do a little dance", None),
    ],
)
def test_a_command_that_names_one_part_allows_only_that_tool(text: str, tool: str | None) -> None:
    assert likely_tool(text) == tool


def test_a_command_naming_two_parts_gets_one_forced_call_per_part_in_the_order_said() -> None:
    text = "Turn your head to the left and make your lights red"
    assert named_tools(text) == ["move_head", "set_lights"]
    model = _scripted(_call("move_head", "a", pan_degrees=-45), _call("set_lights", "b", color="red"))
    update = _actor(model).invoke({**STATE, "text": text}, {})
    assert [b["tool_choice"] for b in model.bound] == ["move_head", "set_lights"]
    assert update["response_text"] == "Turning my head to the left. Making my lights red."
    assert [c["sequence"] for c in update["commands"]] == [0, 1]
    assert update["commands"][1]["payload"]["color"] == "#FF0000"


def test_when_one_part_of_a_two_part_command_fails_nothing_is_done() -> None:
    text = "Turn your head to the left and make your lights red"
    bad_lights = [_call("set_lights", str(i), color="red", duration_ms=1) for i in range(1 + MAX_REPAIR_ROUNDS)]
    model = _scripted(_call("move_head", "a", pan_degrees=-45), *bad_lights)
    update = _actor(model).invoke({**STATE, "text": text}, {})
    assert update["response_text"] == UNABLE_TEXT and "commands" not in update


def test_a_reply_without_a_call_is_asked_again_on_the_same_prompt() -> None:
    """A server that does not force the call (llama.cpp's takes tool_choice="required" as a hint) may answer
    in words: the prompt is sent again as it was (two assistant messages at its end are refused there)."""
    model = _scripted(AIMessage("Sure, turning my head!"), _call("move_head", "a", pan_degrees=-30))
    update = _actor(model).invoke(STATE, {})
    assert update["response_text"] == "Turning my head to the left."
    assert model.seen[0] == model.seen[1]  # the same prompt, no text reply appended
