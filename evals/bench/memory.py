"""Leak check: RSS growth of the process over many graph turns on the tiny generated GGUF.

Real llama.cpp (tiny random Llama-3 GGUF written to a temp dir), the real graph, SQLite memory, the
prompt-state cache on; 4 devices take turns. RSS is sampled after a warm-up and every 100 turns; the figure
is the growth from the first sample after warm-up to the last, minus what the prompt-state cache holds
(bounded by LLM_STATE_CACHE_MB, reported separately). Target: <= 50 MB over 1000 turns.

    python -m evals.bench_memory [--turns N] [--warmup N]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
from pathlib import Path

import psutil


def _cache_mb(model: object) -> float:
    stats = getattr(model, "state_cache_stats", None)
    return float(getattr(stats, "bytes", 0)) / 1e6


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 1e6


async def _run(turns: int, warmup: int, cache_mb: float) -> list[tuple[int, float, float]]:
    from llm import ChatLlamaCpp
    from llm.testing import write_tiny_gguf
    from naila_graph.graph import build_graph, turn_config, turn_input
    from naila_graph.memory import open_async_checkpointer

    samples: list[tuple[int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.gguf"
        write_tiny_gguf(path, template="llama3", eot="never", seed=0)
        model = ChatLlamaCpp(
            model_path=str(path), n_ctx=2048, max_tokens=16, temperature=0.0, seed=1, state_cache_mb=cache_mb
        )
        async with open_async_checkpointer(f"sqlite:///{Path(tmp) / 'memory.sqlite'}") as saver:
            graph = build_graph(model, saver)
            for i in range(warmup + turns):
                device = f"leak_dev_{i % 4}"
                await graph.ainvoke(turn_input(f"turn {i}: tell me something", device_id=device), turn_config(device))
                done = i + 1 - warmup
                if done >= 0 and done % 100 == 0:
                    samples.append((done, _rss_mb(), _cache_mb(model)))
                    print(
                        f"after {done} turns: RSS {samples[-1][1]:.1f} MB, prompt-state cache {samples[-1][2]:.1f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
        model.unload()
    return samples


def main(argv: list[str] | None = None) -> int:
    from evals.bench_llm import print_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--state-cache-mb", type=float, default=512.0, help="prompt-state cache budget (0 = off)")
    args = parser.parse_args(argv)
    if args.turns < 100 or args.warmup < 0:
        parser.error("--turns must be at least 100 and --warmup not negative")
    print_table(run_benchmark(args.turns, args.warmup, args.state_cache_mb))
    return 0


def run_benchmark(turns: int = 1000, warmup: int = 100, state_cache_mb: float = 512.0) -> list[tuple[str, str, str]]:
    samples = asyncio.run(_run(turns, warmup, state_cache_mb))
    growth = samples[-1][1] - samples[0][1]
    cache_growth = samples[-1][2] - samples[0][2]
    rows: list[tuple[str, str, str]] = [("metric", "value", "target")]
    rows.append((f"RSS growth over {samples[-1][0]} turns MB", f"{growth:.1f}", ""))
    rows.append(("  of which the prompt-state cache (bounded by its budget) MB", f"{cache_growth:.1f}", ""))
    rows.append(("  the rest (leak check) MB", f"{growth - cache_growth:.1f}", "<= 50"))
    rows.append(("RSS after warm-up / at the end MB", f"{samples[0][1]:.1f} / {samples[-1][1]:.1f}", ""))
    steps = [b[1] - a[1] for a, b in itertools.pairwise(samples)]
    if steps:
        rows.append(
            (
                "growth per 100 turns MB, median (min..max)",
                f"{sorted(steps)[len(steps) // 2]:.1f} ({min(steps):.1f}..{max(steps):.1f})",
                "",
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
