"""Exceptions raised by the chat model. All derive from :class:`LLMError`."""

from __future__ import annotations


class LLMError(Exception):
    """Base class of every error the LLM component raises on purpose."""


class ModelNotFoundError(LLMError):
    """The configured model file (or bundle) does not exist."""


class ModelLoadError(LLMError):
    """The file exists but llama.cpp cannot load it (not a GGUF, corrupt, unsupported)."""


class ModelUnavailableError(LLMError):
    """The model server cannot be reached (``LLM_BACKEND=openai``: refused, reset, down)."""


class ContextOverflowError(LLMError):
    """The prompt does not fit in the context window."""


class GenerationTimeoutError(LLMError):
    """Generation exceeded its deadline (``timeout`` / ``LLM_MAX_INFERENCE_TIME_SECONDS``)."""


class QueueTimeoutError(LLMError):
    """The request waited longer than ``queue_timeout`` for the model."""


class EmptyGenerationError(LLMError):
    """The model produced nothing usable (empty, whitespace only, or leaked control markup)."""


class GenerationCancelledError(LLMError):
    """The caller cancelled the generation (barge-in, closed stream, shutdown)."""
