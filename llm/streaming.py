"""What NAILA's two chat models share on the LangChain side: answers aggregated from their own streams, tool
call pieces (:class:`llm.tool_calls.Piece`) as LangChain chunks, and the types of ``bind_tools``.

:class:`StreamedChatModel` gives a model whose ``_stream``/``_astream`` do the work its ``_generate`` and
``_agenerate`` (``invoke`` is the stream aggregated: one code path, the same chunks, metadata and errors).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.tools import BaseTool

from llm.tool_calls import Piece

__all__ = ["CallSchemas", "StreamedChatModel", "ToolChoice", "Tools", "piece_chunks"]

# bind_tools(tools, *, tool_choice, call_schemas): LangChain tools, functions, pydantic models, TypedDicts or
# JSON/OpenAI tool dicts; "auto", "none", "any", "required", True or a tool name; per tool name, a narrower
# JSON schema of its arguments that a forced call is held to.
Tools = Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool]
ToolChoice = str | bool | dict[str, Any] | None
CallSchemas = Mapping[str, Mapping[str, Any]] | None


class StreamedChatModel(BaseChatModel):
    """A chat model whose ``invoke``/``ainvoke`` aggregate its ``_stream``/``_astream``."""

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stream = self._astream(messages, stop, run_manager, **kwargs)
        try:
            return await agenerate_from_stream(stream)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator


def piece_chunks(pieces: Iterable[Piece]) -> list[ChatGenerationChunk]:
    """Content text and tool call chunks (:class:`llm.tool_calls.CallStreamer`) as LangChain chunks."""
    return [
        ChatGenerationChunk(
            message=AIMessageChunk(
                content=piece.content,
                tool_call_chunks=[tool_call_chunk(**piece.call)] if piece.call is not None else [],
            )
        )
        for piece in pieces
    ]
