"""The LocalModel protocol: what our model offers beyond BaseChatModel, tested with isinstance."""

from __future__ import annotations

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage

from llm import ChatLlamaCpp, LocalModel
from llm.state_cache import StateCacheStats


def test_chat_llama_cpp_is_a_local_model_without_loading_anything() -> None:
    model = ChatLlamaCpp(model_path="/nonexistent/model.gguf")
    assert isinstance(model, LocalModel)
    assert model.is_loaded is False  # the check read the properties; none of them loads the weights
    assert model.resolved_path is None and model.load_time_ms is None
    assert model.queue_depth == 0
    assert isinstance(model.state_cache_stats, StateCacheStats)


def test_another_langchain_chat_model_is_not_a_local_model() -> None:
    fake = GenericFakeChatModel(messages=iter([AIMessage("hi")]))
    assert not isinstance(fake, LocalModel)
