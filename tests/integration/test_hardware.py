"""Hardware detection and the load parameters that keep llama.cpp from crashing on this CPU."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import llama_cpp.llama_cpp as lc
import pytest

from llm import ChatLlamaCpp
from llm.hardware import detect_hardware, resolve_threads, safe_model_params
from llm.llama_session import model_params_override, open_raw_llama


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_detect_hardware_reports_this_machine() -> None:
    hw = detect_hardware()
    assert hw.physical_cores >= 1 and hw.logical_cores >= hw.physical_cores
    assert hw.total_memory_mb > 0
    assert hw.acceleration in ("cpu", "cuda", "metal")
    assert "CPU" in hw.system_info  # llama.cpp's own feature line
    assert 1 <= resolve_threads(None) <= hw.logical_cores
    assert resolve_threads(3) == 3


@pytest.mark.skipif("amx_int8" not in _cpu_flags(), reason="this CPU has no AMX, so no AMX backend can be built")
def test_setup_built_llama_cpp_without_the_crashing_amx_backend() -> None:
    # scripts/setup.sh rebuilds llama-cpp-python with -U__AMX_INT8__ on AMX CPUs (llama.cpp #20824).
    info = llama_cpp.llama_print_system_info().decode()
    assert "AMX_INT8 = 1" not in info, info
    assert "AVX512 = 1" in info  # the rest of the native build is kept


def test_model_params_override_reaches_the_loaded_model(tiny_model: str) -> None:
    original = lc.llama_model_default_params
    with model_params_override(use_extra_bufts=False):
        llama = llama_cpp.Llama(model_path=tiny_model, n_ctx=64, verbose=False)
    try:
        assert llama.model_params.use_extra_bufts is False
        assert lc.llama_model_default_params is original  # restored
        assert lc.llama_model_default_params().use_extra_bufts is True
    finally:
        llama.close()


def test_model_params_override_restores_on_error(tmp_path: Path) -> None:
    original = lc.llama_model_default_params
    with pytest.raises(ValueError), model_params_override(use_extra_bufts=False):
        llama_cpp.Llama(model_path=str(tmp_path / "missing.gguf"), verbose=False)
    assert lc.llama_model_default_params is original


def test_chat_model_loads_with_the_safe_parameters(tiny_model: str) -> None:
    model = ChatLlamaCpp(model_path=tiny_model, n_ctx=256, max_tokens=4)
    try:
        expected = not detect_hardware().amx_backend
        assert model.llama.model_params.use_extra_bufts is expected
        assert safe_model_params() == ({} if expected else {"use_extra_bufts": False})
    finally:
        model.unload()


def test_open_raw_llama_loads_with_the_same_safe_parameters(tiny_model: str) -> None:
    llama = open_raw_llama(tiny_model, n_ctx=512, verbose=False)
    try:
        assert llama.model_params.use_extra_bufts is not detect_hardware().amx_backend
        assert llama.n_ctx() == 512  # the keyword arguments reach Llama
    finally:
        llama.close()
