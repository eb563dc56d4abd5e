"""What a local chat model offers beyond LangChain's ``BaseChatModel`` (DESIGN.md decision 11).

The graph and the server need only a ``BaseChatModel``; when the model is also a :class:`LocalModel`
(``isinstance(model, LocalModel)``) they use its exact token counts, prefill, load/unload and
statistics. Any other LangChain chat model still works, with approximate token counting and no prefill;
one that is a :class:`WindowedModel` (the ``openai`` backend) has its history chosen for its own window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, Self, runtime_checkable

from langchain_core.messages import BaseMessage

from llm.state_cache import StateCacheStats

__all__ = ["LocalModel", "WindowedModel"]


@runtime_checkable
class WindowedModel(Protocol):
    """A chat model that says how many tokens one request may use, prompt and answer together: its
    context (``ChatLlamaCpp``: ``n_ctx``; ``ChatOpenAICompatible``: the server's context per slot, from its
    ``/props``, else ``LLM_CONTEXT_SIZE``). The graph chooses the history to fit it."""

    @property
    def context_window(self) -> int: ...


@runtime_checkable
class LocalModel(Protocol):
    """A chat model that runs in this process on weights it loads itself (e.g. ``ChatLlamaCpp``).

    ``isinstance`` checks that every member exists (on Python 3.11 it reads the properties to do so).
    """

    n_ctx: int  # context window in tokens
    max_tokens: int  # new tokens per answer at most
    temperature: float

    @property
    def is_loaded(self) -> bool: ...

    @property
    def model_name(self) -> str: ...

    @property
    def load_time_ms(self) -> float | None: ...

    @property
    def resolved_path(self) -> Path | None:
        """The model file actually loaded (None before the first load)."""
        ...

    @property
    def queue_depth(self) -> int:
        """Callers waiting for the model (not counting the one using it)."""
        ...

    @property
    def state_cache_stats(self) -> StateCacheStats: ...

    def load(self) -> Self:
        """Load the weights (idempotent); raises an ``LLMError`` that says what to do."""
        ...

    def unload(self) -> None: ...

    def prompt_tokens(
        self,
        messages: Sequence[BaseMessage],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Any] | None = None,
    ) -> list[int]:
        """The exact token ids the model would evaluate for ``messages`` with ``tools`` bound."""
        ...

    async def aprefill(
        self,
        messages: Sequence[BaseMessage],
        *,
        should_stop: Callable[[], bool] | None = None,
        conversation: str | None = None,
        next_role: Literal["human"] | None = None,
        tools: Sequence[Any] | None = None,
    ) -> int:
        """Evaluate ``messages`` ahead of the next turn of ``conversation`` (with ``tools`` bound, as that
        turn will have them); returns the tokens evaluated."""
        ...
