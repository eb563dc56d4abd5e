"""Leak check: RSS growth of the process over many graph turns on the tiny generated GGUF.

Real llama.cpp (tiny random Llama-3 GGUF written to a temp dir), the real graph, SQLite memory, the
prompt-state cache on; 4 devices take turns. RSS is sampled after a warm-up and every 100 turns; the figure
is the growth from the first sample after warm-up to the last, minus what the prompt-state cache holds
(bounded by LLM_STATE_CACHE_MB, reported separately). Target: <= 50 MB over 1000 turns.

    python -m evals.bench.memory [--turns N] [--warmup N] [--state-cache-mb MB] [--quick]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import tempfile
from pathlib import Path

from evals.bench.common import Option, Part, Rows, eprint, spread
from llm.capabilities import LocalModel

OPTIONS = {
    "turns": Option(1000, quick=300, minimum=100, help="turns measured (RSS sampled every 100)"),
    "warmup": Option(100, quick=50, minimum=0, help="turns before the first sample"),
    "state_cache_mb": Option(512.0, minimum=0, help="prompt-state cache budget (0 = off)"),
}


def _cache_mb(model: LocalModel) -> float:
    return model.state_cache_stats.bytes / 1e6


async def _run(turns: int, warmup: int, cache_mb: float) -> list[tuple[int, float, float]]:
    from llm import ChatLlamaCpp
    from llm.testing import write_tiny_gguf
    from naila_graph.graph import build_graph
    from naila_graph.memory import open_async_checkpointer
    from naila_graph.telemetry import rss_mb
    from naila_graph.turn import TurnEvent, TurnRequest, TurnRunner, consume

    async def ignore(event: TurnEvent) -> None:
        return None

    samples: list[tuple[int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.gguf"
        write_tiny_gguf(path, template="llama3", eot="never", seed=0)
        model = ChatLlamaCpp(
            model_path=str(path), n_ctx=2048, max_tokens=16, temperature=0.0, seed=1, state_cache_mb=cache_mb
        )
        async with open_async_checkpointer(f"sqlite:///{Path(tmp) / 'memory.sqlite'}") as saver:
            runner = TurnRunner(build_graph(model, saver))  # the turns as every front end runs them
            for i in range(warmup + turns):
                device = f"leak_dev_{i % 4}"
                request = TurnRequest(text=f"turn {i}: tell me something", device_id=device, thread_id=device)
                await consume(runner.start(request), ignore)
                done = i + 1 - warmup
                if done >= 0 and done % 100 == 0:
                    samples.append((done, rss_mb(), _cache_mb(model)))
                    eprint(
                        f"after {done} turns: RSS {samples[-1][1]:.1f} MB, prompt-state cache {samples[-1][2]:.1f} MB"
                    )
        model.unload()
    return samples


def run_benchmark(turns: int = 1000, warmup: int = 100, state_cache_mb: float = 512.0) -> Rows:
    samples = asyncio.run(_run(turns, warmup, state_cache_mb))
    growth = samples[-1][1] - samples[0][1]
    cache_growth = samples[-1][2] - samples[0][2]
    rows: Rows = [("metric", "value", "target")]
    rows.append((f"RSS growth over {samples[-1][0]} turns MB", f"{growth:.1f}", ""))
    rows.append(("  of which the prompt-state cache (bounded by its budget) MB", f"{cache_growth:.1f}", ""))
    rows.append(("  the rest (leak check) MB", f"{growth - cache_growth:.1f}", "<= 50"))
    rows.append(("RSS after warm-up / at the end MB", f"{samples[0][1]:.1f} / {samples[-1][1]:.1f}", ""))
    steps = [b[1] - a[1] for a, b in itertools.pairwise(samples)]
    if steps:
        rows.append(("growth per 100 turns MB, median (min..max)", spread(steps), ""))
    return rows


PART = Part(__doc__, run_benchmark, OPTIONS, takes_model=False)  # the suite's part 4: always the tiny model

if __name__ == "__main__":
    sys.exit(PART.main())
