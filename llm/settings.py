"""Settings of the LLM component, read from the environment and `.env` (names in INTERFACES.md)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llm.load_options import QUANTIZED_KV_TYPES, KVCacheType


class LLMSettings(BaseSettings):
    """Everything needed to build the chat model. Each field maps to an ``LLM_*`` variable."""

    model_config = SettingsConfigDict(
        env_prefix="LLM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    model_path: str | None = Field(
        default=None,
        description="A GGUF file path or a bundle name; unset means the default bundle.",
    )
    context_size: int = Field(default=4096, ge=256, le=1_048_576, description="n_ctx (256..1048576)")
    max_tokens: int = Field(default=512, ge=1, le=131_072, description="max new tokens per answer (1..131072)")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="sampling temperature (0..2)")
    top_p: float = Field(default=0.9, gt=0.0, le=1.0, description="nucleus sampling (0 < p <= 1)")
    top_k: int = Field(default=40, ge=0, le=1000, description="top-k sampling (0 = off .. 1000)")
    repeat_penalty: float = Field(default=1.1, ge=0.5, le=2.0, description="repeat penalty (0.5..2)")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 2, description="sampling seed (unset = random)")
    threads: int = Field(default=0, ge=0, le=1024, description="CPU threads (0 = auto)")
    gpu_layers: str = Field(default="auto", description="'auto', -1 (all), 0 (CPU only) or a layer count")
    batch_size: int = Field(default=512, ge=1, le=65_536, description="n_batch (1..65536)")
    flash_attention: bool = Field(default=False, description="llama.cpp flash attention (true/false)")
    kv_cache_type: KVCacheType = Field(
        default="f16", description="KV cache precision: f16, bf16, f32, q8_0 or q4_0 (q8_0/q4_0 need flash attention)"
    )
    use_mmap: bool = True
    chat_format: str | None = Field(default=None, description="override of the GGUF's chat template")
    max_inference_time_seconds: float = Field(
        default=120.0, gt=0, le=86_400, description="generation deadline in seconds (0 < t <= 86400)"
    )
    queue_timeout_seconds: float = Field(
        default=60.0, gt=0, le=86_400, description="max wait for the model in seconds (0 < t <= 86400)"
    )
    backend: Literal["llamacpp", "openai"] = Field(
        default="llamacpp", description="'llamacpp' (the model in this process) or 'openai' (a server at LLM_BASE_URL)"
    )
    base_url: str | None = Field(
        default=None, description="LLM_BACKEND=openai: the server, e.g. http://127.0.0.1:8080/v1"
    )
    api_key: SecretStr | None = Field(default=None, description="LLM_BACKEND=openai: the server's API key, if any")
    model: str | None = Field(default=None, description="LLM_BACKEND=openai: the model name (unset: the server's)")
    state_cache_mb: int = Field(default=512, ge=0, le=1_048_576, description="prompt-state budget in MB")
    log_prompts: bool = False

    @field_validator("model_path", "chat_format", "base_url", "api_key", "model", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("gpu_layers", mode="before")
    @classmethod
    def _check_gpu_layers(cls, value: Any) -> str:
        text = str(value).strip().lower()
        if text == "auto":
            return text
        try:
            number = int(text)
        except ValueError:
            raise ValueError(
                f"LLM_GPU_LAYERS must be 'auto', -1 (all layers), 0 (CPU only) or a positive layer count; got {value!r}"
            ) from None
        if number < -1:
            raise ValueError(f"LLM_GPU_LAYERS must be >= -1; got {number}")
        return str(number)

    @field_validator("backend", mode="before")
    @classmethod
    def _lower_backend(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"must be an http:// or https:// URL such as http://127.0.0.1:8080/v1; got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _openai_needs_base_url(self) -> LLMSettings:
        if self.backend == "openai" and not self.base_url:
            raise ValueError(
                "LLM_BACKEND=openai needs LLM_BASE_URL, the OpenAI-compatible server's URL"
                " (e.g. http://127.0.0.1:8080/v1, what `naila llm-server` prints)"
            )
        return self

    @field_validator("kv_cache_type", mode="before")
    @classmethod
    def _lower_kv_type(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _quantized_kv_needs_flash_attention(self) -> LLMSettings:
        if self.kv_cache_type in QUANTIZED_KV_TYPES and not self.flash_attention:
            raise ValueError(
                f"LLM_KV_CACHE_TYPE={self.kv_cache_type} needs LLM_FLASH_ATTENTION=true (llama.cpp quantizes"
                " the V cache only with flash attention); use f16 otherwise"
            )
        return self


def describe_settings_error(exc: Exception, settings_class: type[BaseSettings] | None = None) -> str:
    """Turn a pydantic ValidationError into lines naming the env variable and what is accepted.

    The variables' prefix is ``settings_class``'s ``env_prefix``; without it, that of the imported
    settings class whose name the error carries (``exc.title``).
    """
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    prefix = _env_prefix(exc.title, settings_class)
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ()))
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        if not field:  # a check across several settings: its message names them
            lines.append(message)
            continue
        lines.append(f"{prefix}{field.upper()}={shown_setting(field, err.get('input'))}: {mask_secrets(message)}")
    return "invalid settings:\n  " + "\n  ".join(lines)


_SECRET_FIELD = re.compile(r"password|secret|token|api_?key|credential", re.I)
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_PARAM = re.compile(r"(password=)[^&\s'\"]*", re.I)


def mask_secrets(text: str) -> str:
    """``text`` with the passwords of URLs (``user:pw@host``, ``password=pw``) replaced by ``***``: error
    messages and logs never show them."""
    return _PASSWORD_PARAM.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


def shown_setting(field: str, value: Any) -> str:
    """A rejected setting's value for an error message: ``'***'`` for secrets, URLs without passwords."""
    if _SECRET_FIELD.search(field) and value not in (None, ""):
        return "'***'"
    return mask_secrets(repr(value))


def _env_prefix(title: str, settings_class: type[BaseSettings] | None) -> str:
    if settings_class is not None:
        return str(settings_class.model_config.get("env_prefix") or "")
    prefixes = {
        str(cls.model_config.get("env_prefix") or "") for cls in _subclasses(BaseSettings) if cls.__name__ == title
    }
    return prefixes.pop() if len(prefixes) == 1 else ""  # unknown or ambiguous: plain field names


def _subclasses(cls: type[BaseSettings]) -> list[type[BaseSettings]]:
    found: list[type[BaseSettings]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found
