"""Tool calling and structured output on the real 0.5B (Qwen2.5-Coder-0.5B-Instruct): the standard tests
that need a model that understands the question (xfail on the tiny random model) pass here."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from llm import ChatLlamaCpp
from tests.integration import test_standard_suites as standard  # a module: pytest collects no class from it

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def qwen(real_model: str) -> Iterator[ChatLlamaCpp]:
    model = ChatLlamaCpp(model_path=real_model, temperature=0.0, max_tokens=160, n_ctx=4096)
    model.load()
    yield model
    model.unload()


SUITE = standard.TestChatLlamaCppIntegration
STANDARD = SUITE()  # LangChain's standard integration tests, called directly with the real model
UNDERSTANDING = ["test_tool_calling", "test_agent_loop", "test_unicode_tool_call_integration", "test_json_mode"]


@pytest.mark.parametrize("name", UNDERSTANDING)
def test_standard_tests_that_need_understanding_pass_on_the_real_model(qwen: ChatLlamaCpp, name: str) -> None:
    method: Any = getattr(super(SUITE, STANDARD), name)
    method(qwen)


async def test_standard_async_tool_calling_passes_on_the_real_model(qwen: ChatLlamaCpp) -> None:
    await super(SUITE, STANDARD).test_tool_calling_async(qwen)


class Head(BaseModel):
    """Turn the robot's head."""

    pan_degrees: int = Field(ge=-90, le=90, description="negative is left, positive is right")


def test_a_forced_call_names_the_tool_with_arguments_in_its_limits(qwen: ChatLlamaCpp) -> None:
    bound = qwen.bind_tools([Head], tool_choice="Head")
    reply = bound.invoke([SystemMessage("You control a desk robot."), HumanMessage("Look 40 degrees to the right.")])
    assert [call["name"] for call in reply.tool_calls] == ["Head"]
    assert -90 <= reply.tool_calls[0]["args"]["pan_degrees"] <= 90
    assert reply.response_metadata["finish_reason"] == "stop"  # ended by the grammar, not max_tokens


class Mood(BaseModel):
    mood: str = Field(description="one word")
    score: int = Field(ge=0, le=10)


def test_structured_output_is_parsed_from_the_models_answer(qwen: ChatLlamaCpp) -> None:
    result = qwen.with_structured_output(Mood, include_raw=True).invoke("How does a robot feel with a full battery?")
    assert isinstance(result, dict)
    assert isinstance(result["parsed"], Mood) and result["parsing_error"] is None
    assert 0 <= result["parsed"].score <= 10
    assert result["raw"].response_metadata["finish_reason"] == "stop"


def test_a_spoken_command_moves_the_head_the_right_way_through_the_graph(qwen: ChatLlamaCpp) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    from naila_graph.graph import build_graph, turn_config, turn_input

    graph = build_graph(qwen, InMemorySaver())
    state = graph.invoke(turn_input("Turn your head to the left.", device_id="desk"), turn_config("desk"))
    assert state["intent"] == "robot_command" and state["response_source"] == "llm"  # the model's call
    (command,) = state["commands"]
    assert command["payload"]["motor_group"] == "head" and command["payload"]["action"] == "pan"
    assert -90 <= command["payload"]["degrees"] < 0  # left
    assert state["response_text"] == "Turning my head to the left."
    lights = graph.invoke(turn_input("Make your lights blue.", device_id="desk"), turn_config("desk"))
    assert [c["payload"]["color"] for c in lights["commands"]] == ["#0000FF"]


# ------------------------------------------------------------------------------ NAILA's own robot tools


@pytest.fixture(scope="module")
def naila_graph(qwen: ChatLlamaCpp) -> Any:
    from langgraph.checkpoint.memory import InMemorySaver

    from naila_graph.graph import build_graph
    from naila_graph.settings import NailaSettings

    return build_graph(qwen, InMemorySaver(), settings=NailaSettings(robot_tools="auto"))


def _say(graph: Any, device: str, text: str) -> dict[str, Any]:
    from naila_graph.graph import turn_config, turn_input

    return dict(graph.invoke(turn_input(text, device_id=device), turn_config(device)))


def test_the_real_model_says_what_it_just_did_from_the_stored_call(naila_graph: Any) -> None:
    done = _say(naila_graph, "memory_bot", "Turn your head to the left.")
    assert done["response_source"] == "llm" and done["actions"][0].startswith("head pan=-")  # the words fix "left"
    answer = _say(naila_graph, "memory_bot", "What did you just do?")
    assert answer["response_source"] == "llm" and answer["commands"] == []  # the model's words, no new action
    text = answer["response_text"].lower()
    assert "head" in text and ("left" in text or "turn" in text), text


def test_with_the_tools_bound_an_ordinary_question_is_answered_in_words(naila_graph: Any) -> None:
    answer = _say(naila_graph, "quiz_bot", "What's the capital of France?")
    assert answer["response_source"] == "llm" and answer["commands"] == [] and answer["actions"] == []
    assert "paris" in answer["response_text"].lower()


def test_the_real_model_looks_down_when_told_to(naila_graph: Any) -> None:
    """Before the command's words held the call, the 0.5B panned its head when told to look down."""
    done = _say(naila_graph, "look_bot", "Look down.")
    (command,) = [c for c in done["commands"] if c["payload"].get("action") == "tilt"]
    assert command["payload"]["degrees"] < 0 and done["response_source"] == "llm"
