"""What the llama session loads: its options, the KV cache types, and the check that a file is a GGUF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llm.errors import ModelLoadError, ModelNotFoundError
from llm.hardware import resolve_gpu_layers, resolve_threads

__all__ = ["KV_GGML_TYPES", "QUANTIZED_KV_TYPES", "KVCacheType", "LoadOptions", "check_gguf"]

KVCacheType = Literal["f16", "bf16", "f32", "q8_0", "q4_0"]
# ggml_type ids (ggml.h): the KV cache element types llama.cpp accepts for type_k / type_v
KV_GGML_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}
QUANTIZED_KV_TYPES = frozenset({"q8_0", "q4_0"})  # llama.cpp quantizes the V cache only with flash attention


@dataclass(frozen=True)
class LoadOptions:
    """What :meth:`LlamaSession.load` needs (the chat model builds it from its fields)."""

    model_path: str | None  # GGUF path or bundle name; None = default bundle
    fetch_bundle: bool
    n_ctx: int
    n_batch: int
    n_threads: int | None
    n_gpu_layers: int | str
    use_mmap: bool
    flash_attn: bool
    kv_cache_type: KVCacheType
    seed: int | None
    chat_format: str | None
    state_cache_bytes: int

    def llama_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``llama_cpp.Llama`` for these options ("auto" threads and layers resolved)."""
        import llama_cpp

        threads = resolve_threads(self.n_threads)
        return {
            "n_ctx": self.n_ctx,
            "n_batch": min(self.n_batch, self.n_ctx),
            "n_threads": threads,
            "n_threads_batch": threads,
            "n_gpu_layers": resolve_gpu_layers(self.n_gpu_layers),
            "use_mmap": self.use_mmap,
            "flash_attn": self.flash_attn,
            "type_k": KV_GGML_TYPES[self.kv_cache_type],
            "type_v": KV_GGML_TYPES[self.kv_cache_type],
            "seed": self.seed if self.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED,
            "verbose": False,
        }


def check_gguf(path: Path) -> None:
    """Raise ModelNotFoundError / ModelLoadError, naming the remedy, unless ``path`` is a GGUF file."""
    if not path.exists():
        raise ModelNotFoundError(
            f"model file not found: {path}. Set LLM_MODEL_PATH to a GGUF file or a bundle name"
            " (see `naila models list`), or run `naila models fetch qwen2.5-coder-0.5b-instruct`."
        )
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory, not a GGUF file")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if magic != b"GGUF":
        raise ModelLoadError(
            f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF');"
            " llama.cpp needs a .gguf model such as Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
        )
