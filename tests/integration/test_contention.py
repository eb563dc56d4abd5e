"""The CPU defaults that keep generation alive under contention (issue #12, defect 5), and their benchmark.

libgomp reads its wait policy once, when llama_cpp loads it, so every check runs in a fresh process and
asks libgomp itself (``omp_display_env``) what it took. Speed is measured by ``evals/bench/contention.py``
(docs/PERFORMANCE.md), never asserted here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from llm import load_chat_model
from llm.hardware import OPENMP_WAIT_VARIABLES, cpu_runtime_defaults, resolve_threads
from llm.settings import LLMSettings
from tests.support.models import tiny_model_path

# In a fresh process: import llm first (as every NAILA entry point does), then llama_cpp, and print what
# libgomp took from the environment plus what the environment holds.
_SHOW = """
import ctypes, os, sys
import llm.llama_session, llama_cpp
maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
if "libgomp" not in maps:
    print("NO-LIBGOMP"); sys.exit(0)
print("ENV", os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"), flush=True)
ctypes.CDLL("libgomp.so.1").omp_display_env(1)
"""


def _libgomp_settings(**env: str) -> tuple[str, str]:
    """(the process's OMP_WAIT_POLICY / GOMP_SPINCOUNT line, libgomp's own report) with ``env`` set."""
    clean = {k: v for k, v in os.environ.items() if k not in OPENMP_WAIT_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", _SHOW], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    if "NO-LIBGOMP" in result.stdout:
        pytest.skip("this llama.cpp build does not compute with libgomp: no OpenMP wait policy to set")
    env_line = next(line for line in result.stdout.splitlines() if line.startswith("ENV "))
    return env_line, result.stdout + result.stderr


def _spincount(report: str) -> int:
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", report)
    assert found, report
    return int(found.group(1))


def test_the_default_wait_policy_reaches_libgomp_when_the_user_set_none() -> None:
    env_line, report = _libgomp_settings()
    expected = cpu_runtime_defaults()
    assert expected, "NAILA sets an OpenMP wait policy by default"
    assert env_line == f"ENV {expected.get('OMP_WAIT_POLICY')} {expected.get('GOMP_SPINCOUNT')}"
    # libgomp's own default spins 300,000 times at a barrier: the spin that collapsed under contention
    assert _spincount(report) < 300_000, report


def test_a_wait_policy_the_user_set_wins() -> None:
    env_line, report = _libgomp_settings(OMP_WAIT_POLICY="ACTIVE")
    assert env_line.startswith("ENV ACTIVE ")
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in report
    assert _spincount(report) > 300_000  # ACTIVE: spin for ever


def test_a_spin_count_the_user_set_wins_and_is_not_half_overridden() -> None:
    env_line, report = _libgomp_settings(GOMP_SPINCOUNT="1234")
    assert env_line == "ENV None 1234"  # no wait policy of ours beside the user's spin count
    assert _spincount(report) == 1234


def test_llm_threads_wins_over_the_default_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = 3 if resolve_threads(None) != 3 else 4
    monkeypatch.setenv("LLM_THREADS", str(chosen))
    model = load_chat_model(LLMSettings(_env_file=None, model_path=tiny_model_path()), load=True)  # type: ignore[call-arg]
    try:
        llama = model.llama
        assert llama is not None
        assert llama.n_threads == chosen and llama.n_threads_batch == chosen
    finally:
        model.unload()


def test_the_contention_bench_runs_on_the_tiny_model_and_prints_the_ratio_rows() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evals.bench.contention",
            "--model",
            tiny_model_path(),
            "--repeats",
            "1",
            "--max-tokens",
            "16",
            "--cap-s",
            "3",
            "--full",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    ratio = r"\d+\.\d\d \(\d+\.\d\d\.\.\d+\.\d\d\)"
    lines = result.stdout.splitlines()
    assert "under contention ÷ idle" in lines[0]
    headline = lines[2]
    assert headline.startswith("under contention ÷ idle: default (threads "), result.stdout
    assert re.search(rf"\| {ratio} +\|", headline), headline
    alternatives = lines[3:]
    assert any(line.startswith("threads ") and "OMP_WAIT_POLICY=PASSIVE" in line for line in alternatives)
    assert any("library default" in line for line in alternatives), result.stdout
    assert all(re.search(rf"\| {ratio} +\|", line) for line in alternatives), result.stdout
