"""LangChain's own standard test suites, run against the tiny generated GGUF through real llama.cpp."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from llm import ChatLlamaCpp
from tests.support.models import tiny_model_path


def _params() -> dict[str, Any]:
    # Greedy and short; the tiny model never ends its turn early, so every answer has text.
    # Tool calls and structured output: the grammar ends the answer once the JSON is complete; short strings
    # keep a random model's JSON short (it would fill any string to its maxLength).
    return {
        "model_path": tiny_model_path("never"),
        "temperature": 0.0,
        "max_tokens": 160,
        "n_ctx": 2048,
        "json_max_string_length": 6,
        "json_max_items": 2,
    }


class TestChatLlamaCppUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatLlamaCpp]:
        return ChatLlamaCpp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # the suite adds max_tokens/stop itself in test_standard_params
        return {k: v for k, v in _params().items() if k != "max_tokens"}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True


class TestChatLlamaCppIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatLlamaCpp]:
        return ChatLlamaCpp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    # The grammar makes every call and structured answer valid JSON of its schema, but these tests check
    # *which* values a model chose for a question; the tiny model's weights are random. The real 0.5B
    # passes them (tests/e2e/test_real_model_tools.py).
    @pytest.mark.xfail(reason="exact tool arguments need a model that understands the question", strict=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason="exact tool arguments need a model that understands the question", strict=True)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason="exact unicode arguments need a model that understands the question", strict=True)
    def test_unicode_tool_call_integration(
        self, model: BaseChatModel, *, tool_choice: str | None = None, force_tool_call: bool = True
    ) -> None:
        super().test_unicode_tool_call_integration(model, tool_choice=tool_choice, force_tool_call=force_tool_call)

    @pytest.mark.xfail(reason="an agent loop needs a model that answers the tool's question", strict=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(reason="JSON mode fixes the syntax, not the keys: a model must choose them", strict=True)
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)
