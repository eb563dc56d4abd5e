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
