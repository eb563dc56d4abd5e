"""NAILA's LLM component: a LangChain chat model over llama-cpp-python."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llm.capabilities import LocalModel
from llm.chat_model import ChatLlamaCpp
from llm.settings import LLMSettings

if TYPE_CHECKING:
    from llm.openai_backend import ChatOpenAICompatible

__all__ = ["ChatLlamaCpp", "LLMSettings", "LocalModel", "load_chat_model"]


def load_chat_model(settings: LLMSettings | None = None, *, load: bool = False) -> ChatLlamaCpp | ChatOpenAICompatible:
    """Build the chat model from settings (env + `.env` when ``settings`` is None).

    ``LLM_BACKEND=llamacpp`` (default): a :class:`ChatLlamaCpp`, whose weights are read on first use, or now
    when ``load=True``. ``LLM_BACKEND=openai``: a ``ChatOpenAICompatible`` client of the server at
    ``LLM_BASE_URL`` (:mod:`llm.openai_backend`; needs the ``server`` extra); ``load=True`` asks the server
    for its window and tokenizer now.
    """
    settings = settings or LLMSettings()
    if settings.backend == "openai":
        return _openai_model(settings, load=load)
    model = ChatLlamaCpp(
        model_path=settings.model_path,
        n_ctx=settings.context_size,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        repeat_penalty=settings.repeat_penalty,
        seed=settings.seed,
        n_threads=settings.threads or None,
        n_gpu_layers=settings.gpu_layers,
        n_batch=settings.batch_size,
        flash_attn=settings.flash_attention,
        kv_cache_type=settings.kv_cache_type,
        use_mmap=settings.use_mmap,
        chat_format=settings.chat_format,
        timeout=settings.max_inference_time_seconds,
        queue_timeout=settings.queue_timeout_seconds,
        log_prompts=settings.log_prompts,
        state_cache_mb=settings.state_cache_mb,
    )
    return model.load() if load else model


def _openai_model(settings: LLMSettings, *, load: bool) -> ChatOpenAICompatible:
    try:
        from llm.openai_backend import build_openai_model
    except ImportError as exc:
        from llm.errors import ModelLoadError

        raise ModelLoadError(
            f"LLM_BACKEND=openai needs the optional extra: pip install 'naila-graph[server]' ({exc})"
        ) from exc
    assert settings.base_url is not None  # LLMSettings checks it
    model = build_openai_model(
        base_url=settings.base_url,
        api_key=settings.api_key.get_secret_value() if settings.api_key is not None else None,
        model=settings.model,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
        generation_timeout=settings.max_inference_time_seconds,
        context_size=settings.context_size,
    )
    return model.load() if load else model
