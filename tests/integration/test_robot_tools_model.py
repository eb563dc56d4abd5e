"""The robot tools bound to a real chat model: on the tiny random GGUF the grammar alone makes a forced
call well-formed, and :func:`validate_call` accepts it (commands within limits) or refuses it cleanly; on
the real 0.5B (``real_model``) a clear command becomes the right call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, ToolMessage

from llm import ChatLlamaCpp
from nodes.robot_tools import (
    ROBOT_TOOLS,
    MoveHead,
    ValidatedAction,
    call_schemas,
    commands_for,
    confirmation,
    robot_tool_schemas,
    validate_call,
)

NAMES = {tool["function"]["name"] for tool in robot_tool_schemas()}
COMMAND = [HumanMessage("Turn your head to the left.")]


@pytest.fixture(scope="module")
def tiny(tiny_model: str) -> Iterator[ChatLlamaCpp]:
    # the tiny model's tokenizer makes the six tool schemas ~4.7k tokens; short strings so random text ends
    fields: dict[str, Any] = {
        "model_path": tiny_model, "n_ctx": 8192, "max_tokens": 400, "temperature": 1.5, "top_k": 0, "top_p": 1.0,
        "repeat_penalty": 1.0, "state_cache_mb": 0, "json_max_string_length": 8,
    }  # fmt: skip
    with ChatLlamaCpp(**fields) as model:
        yield model


def test_binding_the_pydantic_classes_binds_the_same_schemas(tiny: ChatLlamaCpp) -> None:
    bound: Any = tiny.bind_tools(list(ROBOT_TOOLS), tool_choice="any")
    assert bound.kwargs["tools"] == robot_tool_schemas()


def test_a_forced_call_of_the_tiny_model_is_accepted_or_refused_cleanly(tiny: ChatLlamaCpp) -> None:
    bound = tiny.bind_tools(robot_tool_schemas(), tool_choice="any")
    names = set()
    for seed in range(10):
        reply = bound.invoke(COMMAND, seed=seed)
        assert reply.response_metadata["finish_reason"] == "stop"  # ended by the grammar, not max_tokens
        assert reply.invalid_tool_calls == []
        (call,) = reply.tool_calls  # forced: exactly one call
        assert call["name"] in NAMES
        result = validate_call(call)
        if isinstance(result, ToolMessage):
            assert result.status == "error" and result.tool_call_id == call["id"]
            continue
        assert isinstance(result, ValidatedAction) and result.call_id == call["id"]
        (command,) = commands_for([result])
        assert command["sequence"] == 0 and command["type"] in ("motor", "led")
        assert confirmation([result]).endswith(".")
        names.add(call["name"])
    assert len(names) >= 2  # the grammar admits every tool, not one fixed answer


def test_a_cut_off_call_is_not_a_call(tiny: ChatLlamaCpp) -> None:
    reply = tiny.bind_tools(robot_tool_schemas(), tool_choice="any").invoke(COMMAND, seed=0, max_tokens=6)
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.tool_calls == []  # nothing to validate, so nothing to execute
    assert len(reply.invalid_tool_calls) == 1


@pytest.mark.real_model
def test_the_real_model_turns_its_head_left_within_limits(real_model: str) -> None:
    with ChatLlamaCpp(model_path=real_model, temperature=0.0, max_tokens=160, n_ctx=4096) as model:
        reply = model.bind_tools(robot_tool_schemas(), tool_choice="any").invoke(COMMAND)
    (call,) = reply.tool_calls
    assert call["name"] == "move_head"
    result = validate_call(call)
    assert isinstance(result, ValidatedAction), getattr(result, "content", result)
    assert isinstance(result.args, MoveHead)
    assert -90 <= result.args.pan_degrees < 0  # negative = left
    assert confirmation([result]).startswith("Turning my head to the left")


@pytest.mark.parametrize(
    ("text", "tool", "check"),
    [
        ("Turn your head to the left.", "move_head", lambda a: a["pan_degrees"] < 0 and a["tilt_degrees"] == 0),
        ("Look down.", "move_head", lambda a: a["tilt_degrees"] < 0 and a["pan_degrees"] == 0),
        ("Turn your head 30 degrees to the right.", "move_head", lambda a: a["pan_degrees"] == 30),
        ("Drive backward 12 cm", "drive", lambda a: a["direction"] == "backward" and a["distance_cm"] == 12),
        ("Make your lights blue", "set_lights", lambda a: a["color"] == "blue"),
        ("Look sleepy", "show_expression", lambda a: a["expression"] == "sleepy"),
    ],
)
def test_what_a_command_says_holds_a_random_models_call(tiny: ChatLlamaCpp, text: str, tool: str, check: Any) -> None:
    """The tiny model samples at random (temperature 1.5): only the narrowed grammar makes it turn left when
    told "left". The prompt still shows the tools as they are (the same tokens as without narrowing)."""
    narrowed = call_schemas(text, [tool])
    bound: Any = tiny.bind_tools(robot_tool_schemas(), tool_choice=tool, call_schemas=narrowed)
    assert bound.kwargs["tools"] == robot_tool_schemas()
    for seed in (1, 2, 3):
        reply = bound.invoke([HumanMessage(text)], seed=seed)
        if reply.invalid_tool_calls:  # cut off by max_tokens: never executed, nothing to check
            continue
        (call,) = reply.tool_calls  # its speed may still be refused: the grammar bounds numbers by whole ones
        assert call["name"] == tool and check(call["args"]), call


def test_call_schemas_naming_an_unbound_tool_or_not_an_object_are_refused(tiny: ChatLlamaCpp) -> None:
    with pytest.raises(ValueError, match="call_schemas names tools that are not bound: fly"):
        tiny.bind_tools(robot_tool_schemas(), tool_choice="any", call_schemas={"fly": {"type": "object"}})
    with pytest.raises(ValueError, match=r"call_schemas\['drive'\] must be a JSON schema of type object"):
        tiny.bind_tools(robot_tool_schemas(), tool_choice="any", call_schemas={"drive": {"type": "string"}})
