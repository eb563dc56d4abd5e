"""The llama session on its own (no LangChain) and the chat model's lifecycle as a context manager."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from llm import ChatLlamaCpp
from llm.chat_template import to_chat_dicts
from llm.errors import ModelLoadError
from llm.generation import Done, GenerationParams
from llm.llama_session import LlamaSession
from llm.load_options import LoadOptions

PROMPT = [SystemMessage("You are NAILA."), HumanMessage("Tell me something.")]


def options(path: str, **kw: object) -> LoadOptions:
    fields: dict[str, object] = {
        "model_path": path, "fetch_bundle": False, "n_ctx": 512, "n_batch": 512, "n_threads": None,
        "n_gpu_layers": 0, "use_mmap": True, "flash_attn": False, "kv_cache_type": "f16", "seed": None,
        "chat_format": None, "state_cache_bytes": 0,
    }  # fmt: skip
    fields.update(kw)
    return LoadOptions(**fields)  # type: ignore[arg-type]


def greedy(max_tokens: int) -> GenerationParams:
    return GenerationParams(
        stop=[],
        max_tokens=max_tokens,
        temperature=0.0,
        top_p=0.9,
        top_k=40,
        repeat_penalty=1.1,
        seed=None,
        timeout=None,
    )


def test_with_loads_the_model_and_unloads_it_on_exit(tiny_model: str) -> None:
    with ChatLlamaCpp(model_path=tiny_model, n_ctx=256, max_tokens=4, temperature=0) as model:
        assert model.is_loaded
        assert model.resolved_path == Path(tiny_model)
        assert model.invoke("hi").text
    assert not model.is_loaded
    assert model.resolved_path == Path(tiny_model)  # still says which file was used


def test_with_unloads_when_the_body_raises(tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=256)
    with pytest.raises(RuntimeError, match="body failed"), model:
        assert model.is_loaded
        raise RuntimeError("body failed")
    assert not model.is_loaded


async def test_async_with_loads_and_unloads(tiny_model: str) -> None:
    async with ChatLlamaCpp(model_path=tiny_model, n_ctx=256, max_tokens=4, temperature=0) as model:
        assert model.is_loaded
        assert (await model.ainvoke("hi")).text
    assert not model.is_loaded


def test_the_session_generates_the_chat_models_answer_from_chat_dicts(tiny_model: str) -> None:
    session = LlamaSession()
    session.load(options(tiny_model))
    try:
        chats = to_chat_dicts(PROMPT)
        events = list(session.generate(chats, greedy(12), queue_timeout=None))
        report = events[-1]
        assert isinstance(report, Done) and report.output_tokens == 12
        assert report.input_tokens == len(session.prompt_tokens(chats))
        text = "".join(e for e in events if isinstance(e, str))
        with ChatLlamaCpp(model_path=tiny_model, n_ctx=512, max_tokens=12, temperature=0, state_cache_mb=0) as model:
            assert model.invoke(PROMPT).text == text
    finally:
        session.unload()
    assert session.llama is None and session.model_name == "tiny-llama3-test"


def test_a_session_that_was_never_loaded_says_so() -> None:
    with pytest.raises(ModelLoadError, match="not loaded"):
        LlamaSession().prompt_tokens([{"role": "user", "content": "hi"}])
