"""Benchmark: generation speed with a competing CPU load ÷ idle, per thread count and OpenMP wait policy.

A robot's server shares its CPU with speech-to-text and text-to-speech. llama.cpp's threads meet at a
barrier after every operation of every token; when another process holds one of the cores a thread
waiting there can spin away the time slice the thread it waits for needs, and generation collapsed
(issue #12: the tiny model from ~1,300 to ~4 tok/s with one busy process on 2 cores). How a waiting
thread behaves is libgomp's: ``OMP_WAIT_POLICY`` (PASSIVE sleeps at once, ACTIVE spins forever) and
``GOMP_SPINCOUNT`` (how long it spins before sleeping; 300,000 by default). libgomp reads them when the
library loads, so every configuration runs in a process of its own with its environment set before
``llama_cpp`` is imported.

Each configuration's process loads the model once, warms up, then generates the same number of tokens
idle and with ``--busy`` processes spinning (``while True: pass``, not pinned), the two in alternated
order between rounds; configurations too run in alternated order. ``under contention ÷ idle`` is taken
per round within one process, so noise that hits a whole round cancels. The first row is NAILA's
default (``llm.hardware.cpu_runtime_defaults`` and the default thread count); the others are the
alternatives it was chosen over.

    python -m evals.bench.contention [--model NAME|PATH] [--repeats N] [--max-tokens N] [--busy N] [--quick]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

from evals.bench.common import Option, Part, Rows, eprint, spread

OPTIONS = {
    "repeats": Option(3, quick=1, minimum=1, help="rounds over every configuration"),
    "max_tokens": Option(64, quick=24, minimum=4, help="new tokens per measurement"),
    "busy": Option(1, minimum=1, help="competing busy processes"),
    "cap_s": Option(20.0, quick=6.0, minimum=1.0, help="seconds of generation after which a measurement stops"),
    "full": Option(1, quick=0, minimum=0, help="1: every wait policy; 0: the default and the main alternatives"),
}

OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # llm.hardware.OPENMP_WAIT_VARIABLES, without importing llm
PROMPT = "Tell me a long story about a little robot who explores a kitchen at night."
BUSY_CODE = "while True: pass"


@dataclass(frozen=True)
class Config:
    """``threads`` llama.cpp threads with ``env`` set before llama_cpp loads; ``ours`` leaves both OpenMP
    variables unset so :mod:`llm` applies its defaults (otherwise llama_cpp is imported before llm, so
    the environment given is exactly what libgomp sees)."""

    name: str
    threads: int
    env: dict[str, str] = field(default_factory=dict)
    ours: bool = False


def configs(default_threads: int, cores: int, full: bool) -> list[Config]:
    """NAILA's default first, then thread counts × wait policies around it."""
    from llm.hardware import cpu_runtime_defaults

    policy = ", ".join(f"{k}={v}" for k, v in cpu_runtime_defaults().items()) or "library wait policy"
    out = [Config(f"default (threads {default_threads}, {policy})", default_threads, ours=True)]
    counts = sorted({cores, max(1, cores - 1)}, reverse=True)
    waits: list[tuple[str, dict[str, str]]] = [
        ("library default (spin 300000)", {}),
        ("OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}),
    ]
    if full:
        waits += [
            ("OMP_WAIT_POLICY=ACTIVE", {"OMP_WAIT_POLICY": "ACTIVE"}),
            ("GOMP_SPINCOUNT=1000", {"GOMP_SPINCOUNT": "1000"}),
            ("GOMP_SPINCOUNT=10000", {"GOMP_SPINCOUNT": "10000"}),
        ]
    ours_env = cpu_runtime_defaults()
    for threads in counts:
        for label, env in waits:
            if threads == default_threads and env == ours_env:
                continue  # the default row already measures it
            out.append(Config(f"threads {threads}, {label}", threads, env))
    return out


@dataclass
class Sample:
    idle_tps: float
    busy_tps: float


def _child_env(config: Config) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OMP_VARS and k != "LLM_THREADS"}
    env.update(config.env)
    return env


def _child_code(config: Config) -> str:
    first = "" if config.ours else "import llama_cpp; "  # before llm: no default of ours applies
    return f"{first}import sys; from evals.bench.contention import worker; sys.exit(worker(sys.argv[1]))"


def measure(path: str, config: Config, max_tokens: int, busy: int, cap_s: float, busy_first: bool) -> Sample:
    """One round of ``config`` in a fresh process: generation tok/s idle and with ``busy`` processes."""
    job = json.dumps(
        {
            "path": path,
            "threads": config.threads,
            "max_tokens": max_tokens,
            "busy": busy,
            "cap_s": cap_s,
            "busy_first": busy_first,
        }
    )
    result = subprocess.run(
        [sys.executable, "-c", _child_code(config), job],
        env=_child_env(config),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{config.name}: the measuring process failed with exit code {result.returncode}")
    got = json.loads(result.stdout.strip().splitlines()[-1])
    return Sample(idle_tps=float(got["idle"]), busy_tps=float(got["busy"]))


def worker(job_json: str) -> int:
    """The measuring process: print ``{"idle": tok/s, "busy": tok/s}`` as the last line of stdout."""
    from langchain_core.messages import HumanMessage

    from llm import ChatLlamaCpp

    job = json.loads(job_json)
    model = ChatLlamaCpp(
        model_path=job["path"],
        n_ctx=1024,
        temperature=0.0,
        repeat_penalty=1.0,
        state_cache_mb=0,
        n_threads=job["threads"],
        timeout=float(job["cap_s"]) + 300,  # the cap ends a slow measurement; this only bounds a stuck one
    ).load()
    try:
        model.invoke([HumanMessage("Hi")], max_tokens=4)  # warm-up: weights paged in, buffers allocated

        def generate() -> float:
            # Streamed and capped in time: a collapsed configuration (< 1 tok/s) must not stall the run.
            # The rate excludes the first token (its time is the prompt's).
            stamps: list[float] = []
            for chunk in model.stream([HumanMessage(PROMPT)], max_tokens=int(job["max_tokens"])):
                if chunk.content:
                    stamps.append(time.perf_counter())
                if len(stamps) >= 3 and stamps[-1] - stamps[0] > float(job["cap_s"]):
                    break
            if len(stamps) < 3:
                raise RuntimeError(f"only {len(stamps)} tokens came back; no rate to compare")
            return (len(stamps) - 1) / (stamps[-1] - stamps[0])

        rates: dict[str, float] = {}
        for phase in ("busy", "idle") if job["busy_first"] else ("idle", "busy"):
            if phase == "idle":
                rates[phase] = generate()
                continue
            spinners = [subprocess.Popen([sys.executable, "-c", BUSY_CODE]) for _ in range(int(job["busy"]))]
            try:
                time.sleep(0.3)  # the spinners are running before the first token
                rates[phase] = generate()
            finally:
                for spinner in spinners:
                    spinner.kill()
                for spinner in spinners:
                    spinner.wait()
        print(json.dumps(rates))
        return 0
    finally:
        model.unload()


def run_benchmark(model_path: str | None, repeats: int, max_tokens: int, busy: int, cap_s: float, full: int) -> Rows:
    from llm.bundles import resolve_model_path
    from llm.hardware import resolve_threads

    path = str(resolve_model_path(model_path))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    sweep = configs(resolve_threads(None), cores, bool(full))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    eprint(
        f"{len(sweep)} configurations of {path} on {cores} CPUs (load average {load:.2f} before);"
        f" {repeats} rounds of {max_tokens} tokens idle and with {busy} busy process(es), order alternated"
    )
    samples: dict[str, list[Sample]] = {c.name: [] for c in sweep}
    for i in range(repeats):
        order = sweep if i % 2 == 0 else list(reversed(sweep))
        for j, config in enumerate(order):
            got = measure(path, config, max_tokens, busy, cap_s, busy_first=(i + j) % 2 == 1)
            samples[config.name].append(got)
            eprint(f"  {config.name}: idle {got.idle_tps:.1f}, contended {got.busy_tps:.1f} tok/s")
        eprint(
            f"round {i + 1}/{repeats}: "
            + "; ".join(
                f"{c.name.split(' (')[0]} {samples[c.name][-1].idle_tps:.1f}/{samples[c.name][-1].busy_tps:.1f}"
                for c in sweep
            )
        )
    base_idle = statistics.median(s.idle_tps for s in samples[sweep[0].name])
    contended = f"with {busy} busy process{'es' if busy > 1 else ''}"
    rows: Rows = [
        (
            "configuration (generation)",
            f"under contention ÷ idle ({contended})",
            f"idle | {contended} tok/s (÷ default idle)",
        )
    ]
    for config in sweep:
        runs = samples[config.name]
        ratio = [s.busy_tps / s.idle_tps for s in runs]
        idle = [s.idle_tps for s in runs]
        busy_tps = [s.busy_tps for s in runs]
        label = f"under contention ÷ idle: {config.name}" if config is sweep[0] else config.name
        rows.append(
            (
                label,
                spread(ratio, 2),
                f"{spread(idle)} | {spread(busy_tps)} ({statistics.median(idle) / base_idle:.2f}"
                f" | {statistics.median(busy_tps) / base_idle:.2f})",
            )
        )
    return rows


PART = Part(__doc__, run_benchmark, OPTIONS)  # the suite's part 7

if __name__ == "__main__":
    sys.exit(PART.main())
