"""Why a model could not answer, as one short stable label (``fallback_reason``, ``degraded_reason``)."""

from __future__ import annotations

from llm.errors import (
    ContextOverflowError,
    EmptyGenerationError,
    GenerationTimeoutError,
    LLMError,
    ModelLoadError,
    ModelNotFoundError,
    ModelUnavailableError,
    QueueTimeoutError,
)

__all__ = ["INTERNAL_ERROR", "failure_reason"]

INTERNAL_ERROR = "internal_error"  # not an LLMError: a bug, logged with its traceback wherever it is caught

_REASONS: tuple[tuple[type[LLMError], str], ...] = (
    (ModelNotFoundError, "model_not_found"),
    (ModelLoadError, "model_load_failed"),
    (ModelUnavailableError, "model_unavailable"),
    (GenerationTimeoutError, "model_timeout"),
    (QueueTimeoutError, "queue_timeout"),
    (EmptyGenerationError, "empty_output"),
    (ContextOverflowError, "context_overflow"),
)


def failure_reason(error: BaseException) -> str:
    """The label of ``error``: a specific one for the LLM errors above, ``model_error`` for any other
    :class:`~llm.errors.LLMError`, and ``internal_error`` for everything else (a programming bug)."""
    for kind, label in _REASONS:
        if isinstance(error, kind):
            return label
    return "model_error" if isinstance(error, LLMError) else INTERNAL_ERROR
