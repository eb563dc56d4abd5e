"""A scripted chat model for the robot-action tests: a random model cannot be made to call a tool, so the
replies a case needs come from a script."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import Field


class Scripted(GenericFakeChatModel):
    """Replies from a script; records the messages of every call; bind_tools is accepted (and recorded)."""

    seen: list[list[BaseMessage]] = Field(default_factory=list)
    bound: list[dict[str, Any]] = Field(default_factory=list)

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> Any:
        self.bound.append({"tools": tools, "tool_choice": tool_choice})
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def call_message(name: str, call_id: str, **args: Any) -> AIMessage:
    """An assistant message with one call of ``name``."""
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])
