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
        """Generation is memory-bound: one thread per physical core is llama.cpp's own advice. It holds
        under contention too: with the PASSIVE wait policy (:func:`cpu_runtime_defaults`) two threads
        with another process busy are as fast as one, and faster when the CPU is free (PERFORMANCE.md
        part 7), so a core is not left idle for speech-to-text in advance."""
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


OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
# How llama.cpp's threads wait for each other (libgomp, which it computes with, reads these when it loads).
# libgomp's own default spins 300,000 times at every barrier before sleeping: on a quiet machine that is
# fastest, but when another process (speech-to-text, text-to-speech) holds a core, the spinning thread
# burns the time slice the thread it waits for needs, and generation fell ~100x (issue #12). PASSIVE
# (sleep at once) never collapsed and costs ~19 % of generation speed on a quiet machine; measured in
# docs/PERFORMANCE.md, part 7 (evals/bench/contention.py).
_OPENMP_DEFAULTS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}


def cpu_runtime_defaults() -> dict[str, str]:
    """The OpenMP wait settings NAILA sets for llama.cpp when the user set neither of
    :data:`OPENMP_WAIT_VARIABLES` (see :func:`apply_cpu_runtime_defaults`)."""
    return dict(_OPENMP_DEFAULTS)


def apply_cpu_runtime_defaults() -> dict[str, str]:
    """Put :func:`cpu_runtime_defaults` in the environment unless the user set ``OMP_WAIT_POLICY`` or
    ``GOMP_SPINCOUNT`` (either one is a choice of how to wait; ours must not half-override it). Returns
    what it set. It only takes effect before llama_cpp (and with it libgomp) loads: this module runs it
    on import, and every import of llama_cpp in :mod:`llm` comes after importing this module."""
    if any(name in os.environ for name in OPENMP_WAIT_VARIABLES):
        return {}
    if "llama_cpp" in sys.modules:
        logger.debug("llama_cpp was imported before llm: its OpenMP wait policy stays the library's default")
    for name, value in _OPENMP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return cpu_runtime_defaults()


apply_cpu_runtime_defaults()


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
