"""LLMSettings: env + .env, defaults from INTERFACES.md, clear errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llm import ChatLlamaCpp, LLMSettings, load_chat_model
from llm.settings import describe_settings_error


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("LLM_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_match_the_interface_table() -> None:
    s = LLMSettings()
    assert (s.model_path, s.context_size, s.max_tokens) == (None, 4096, 512)
    assert (s.temperature, s.top_p, s.top_k, s.repeat_penalty) == (0.7, 0.9, 40, 1.1)
    assert (s.seed, s.threads, s.gpu_layers, s.batch_size, s.use_mmap) == (None, 0, "auto", 512, True)
    assert (s.max_inference_time_seconds, s.queue_timeout_seconds, s.state_cache_mb) == (120, 60, 512)
    assert s.log_prompts is False


def test_reads_environment_and_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("LLM_CONTEXT_SIZE=2048\nLLM_TEMPERATURE=0.2\n")
    monkeypatch.setenv("LLM_TEMPERATURE", "0.5")  # the environment wins over .env
    monkeypatch.setenv("LLM_GPU_LAYERS", "-1")
    s = LLMSettings()
    assert s.context_size == 2048
    assert s.temperature == 0.5
    assert s.gpu_layers == "-1"


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("LLM_CONTEXT_SIZE", "12", "LLM_CONTEXT_SIZE='12'"),
        ("LLM_TEMPERATURE", "hot", "LLM_TEMPERATURE='hot'"),
        ("LLM_TOP_P", "1.5", "LLM_TOP_P='1.5'"),
        ("LLM_GPU_LAYERS", "many", "LLM_GPU_LAYERS"),
        ("LLM_GPU_LAYERS", "-3", ">= -1"),
        ("LLM_MAX_INFERENCE_TIME_SECONDS", "0", "LLM_MAX_INFERENCE_TIME_SECONDS"),
        ("LLM_KV_CACHE_TYPE", "q9", "LLM_KV_CACHE_TYPE='q9': Input should be 'f16'"),
        ("LLM_KV_CACHE_TYPE", "q8_0", "LLM_KV_CACHE_TYPE=q8_0 needs LLM_FLASH_ATTENTION=true"),
        ("LLM_FLASH_ATTENTION", "sometimes", "LLM_FLASH_ATTENTION='sometimes'"),
    ],
)
def test_bad_values_are_rejected_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError) as info:
        LLMSettings()
    assert expected in describe_settings_error(info.value)


def test_load_chat_model_maps_settings_without_loading_weights() -> None:
    s = LLMSettings(model_path="/nonexistent/model.gguf", context_size=1024, max_inference_time_seconds=5)
    model = load_chat_model(s)
    assert isinstance(model, ChatLlamaCpp)
    assert model.is_loaded is False
    assert (model.n_ctx, model.timeout, model.queue_timeout) == (1024, 5, 60)
    assert model.model_path == "/nonexistent/model.gguf"


def test_flash_attention_and_kv_cache_type_reach_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_FLASH_ATTENTION", "true")
    monkeypatch.setenv("LLM_KV_CACHE_TYPE", "Q8_0")
    model = load_chat_model(LLMSettings(model_path="/nonexistent/model.gguf"))
    assert (model.flash_attn, model.kv_cache_type) == (True, "q8_0")
    with pytest.raises(ValidationError, match="needs flash attention"):
        ChatLlamaCpp(model_path="/nonexistent/model.gguf", kv_cache_type="q4_0")
