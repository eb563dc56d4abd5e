"""Hardware detection without torch: CPU cores, memory, and what llama.cpp can offload to."""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass
from typing import Literal

import psutil

logger = logging.getLogger(__name__)

Acceleration = Literal["cpu", "cuda", "metal"]


@dataclass(frozen=True)
class HardwareInfo:
    physical_cores: int
    logical_cores: int
    total_memory_mb: int
    available_memory_mb: int
    gpu_offload: bool
    acceleration: Acceleration
    system_info: str

    @property
    def default_threads(self) -> int:
        """Generation is memory-bound: one thread per physical core is llama.cpp's own advice."""
        usable = _usable_cpus()
        return max(1, min(self.physical_cores, usable))

    @property
    def amx_backend(self) -> bool:
        """llama.cpp was built with its AMX matmul backend (native build on an AMX CPU).

        That backend segfaults in ``ggml_backend_amx_mul_mat`` on the first Q4_K_M inference on these
        machines (llama.cpp issue #20824); ``scripts/setup.sh`` builds without it.
        """
        return "AMX_INT8 = 1" in self.system_info

    @property
    def default_gpu_layers(self) -> int:
        """All layers when llama.cpp was built with a GPU backend, none otherwise."""
        return -1 if self.gpu_offload else 0


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def _llama_backend() -> tuple[bool, Acceleration, str]:
    try:
        import llama_cpp
    except ImportError:
        return False, "cpu", "llama_cpp not installed"
    try:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception as exc:  # older bindings
        logger.debug("llama.cpp cannot tell whether it offloads to a GPU (%s): assuming it does not", exc)
        offload = False
    try:
        info_raw = llama_cpp.llama_print_system_info()
        info = info_raw.decode("utf-8", "replace") if isinstance(info_raw, bytes) else str(info_raw)
    except Exception as exc:
        logger.debug("llama.cpp's system info is unavailable (%s)", exc)
        info = ""
    kind: Acceleration = "cpu"
    if offload:
        upper = info.upper()
        if "CUDA" in upper or "HIP" in upper:
            kind = "cuda"
        elif "METAL" in upper or sys.platform == "darwin":
            kind = "metal"
        else:
            kind = "cuda"  # other offload backends (Vulkan, SYCL) report as a GPU; cuda is the closest label
    return offload, kind, info


@functools.lru_cache(maxsize=1)
def detect_hardware() -> HardwareInfo:
    """Probe the machine once per process (cheap; no model is loaded)."""
    vm = psutil.virtual_memory()
    offload, kind, info = _llama_backend()
    return HardwareInfo(
        physical_cores=psutil.cpu_count(logical=False) or _usable_cpus(),
        logical_cores=psutil.cpu_count(logical=True) or _usable_cpus(),
        total_memory_mb=int(vm.total / 2**20),
        available_memory_mb=int(vm.available / 2**20),
        gpu_offload=offload,
        acceleration=kind,
        system_info=info,
    )


def resolve_threads(requested: int | None) -> int:
    """``0``/``None`` means auto."""
    if requested and requested > 0:
        return requested
    return detect_hardware().default_threads


def resolve_gpu_layers(requested: int | str | None) -> int:
    """``auto`` offloads everything when a GPU backend exists; ``-1`` = all, ``0`` = CPU only."""
    if requested is None or str(requested).strip().lower() == "auto":
        return detect_hardware().default_gpu_layers
    return int(requested)


def safe_model_params() -> dict[str, object]:
    """``llama_model_params`` fields this llama.cpp build needs to run safely here (see ``amx_backend``);
    :func:`llm.llama_session.open_raw_llama` applies them."""
    return {"use_extra_bufts": False} if detect_hardware().amx_backend else {}
