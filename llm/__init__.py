"""NAILA's LLM component: a LangChain chat model over llama-cpp-python."""

from __future__ import annotations

from llm.capabilities import LocalModel
from llm.chat_model import ChatLlamaCpp
from llm.settings import LLMSettings

__all__ = ["ChatLlamaCpp", "LLMSettings", "LocalModel", "load_chat_model"]


def load_chat_model(settings: LLMSettings | None = None, *, load: bool = False) -> ChatLlamaCpp:
    """Build the chat model from settings (env + `.env` when ``settings`` is None).

    Weights are read on first use, or now when ``load=True``.
    """
    settings = settings or LLMSettings()
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
