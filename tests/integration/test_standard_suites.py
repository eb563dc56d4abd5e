"""LangChain's own standard test suites, run against the tiny generated GGUF through real llama.cpp."""

from __future__ import annotations

from typing import Any

from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from llm import ChatLlamaCpp
from tests.support.models import tiny_model_path


def _params() -> dict[str, Any]:
    # Greedy and short; the tiny model never ends its turn early, so every answer has text.
    return {"model_path": tiny_model_path("never"), "temperature": 0.0, "max_tokens": 24, "n_ctx": 2048}


class TestChatLlamaCppUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatLlamaCpp]:
        return ChatLlamaCpp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # the suite adds max_tokens/stop itself in test_standard_params
        return {k: v for k, v in _params().items() if k != "max_tokens"}

    # Honest capability flags: tool calling and structured output come in a later issue.
    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False


class TestChatLlamaCppIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatLlamaCpp]:
        return ChatLlamaCpp

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return _params()

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True
