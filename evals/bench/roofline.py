"""Benchmark: generation speed as a fraction of what this machine's memory bandwidth allows.

Generating one token reads every weight of the model once (the KV cache adds a little), so on a CPU the
ceiling is ``memory bandwidth ÷ weight bytes`` tokens per second. One run measures both, alternating:
the read bandwidth with as many threads as the model uses (each thread reduces its own slice of a
buffer far larger than the caches; numpy releases the GIL), and the model's generation rate through
``ChatLlamaCpp``. Each round gives ``tok/s ÷ (GB/s ÷ weight GB)``; median and spread over the rounds.

    python -m evals.bench_roofline [--model NAME|PATH] [--repeats N] [--buffer-mb N] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

import numpy as np

from evals.bench_llm import print_table

QUESTION = "Tell me a long story about a robot who maps the stars, with many details."


def _eprint(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _fmt(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


class Bandwidth:
    """Memory read bandwidth: ``threads`` threads each take the maximum over their own slice."""

    def __init__(self, buffer_mb: int, threads: int) -> None:
        self.buffer = np.ones(buffer_mb * 2**20, dtype=np.uint8)  # written once: every page is resident
        self.threads = max(1, threads)
        self.slices = np.array_split(self.buffer, self.threads)

    def measure(self, passes: int = 4) -> float:
        """GB/s (10^9 bytes) read, over ``passes`` sweeps of the whole buffer."""
        barrier = threading.Barrier(self.threads + 1)
        results: list[int] = []

        def work(part: np.ndarray) -> None:
            barrier.wait()
            for _ in range(passes):
                results.append(int(np.maximum.reduce(part)))

        workers = [threading.Thread(target=work, args=(part,)) for part in self.slices]
        for w in workers:
            w.start()
        barrier.wait()
        start = time.perf_counter()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        assert all(r == 1 for r in results)  # every byte was read
        return self.buffer.nbytes * passes / elapsed / 1e9


def weight_bytes(model: Any) -> int:
    """Bytes of all weight tensors of the loaded model (``llama_model_size``)."""
    import llama_cpp

    return int(llama_cpp.llama_model_size(model.llama.model))


def generation_tps(model: Any, max_tokens: int) -> float:
    from langchain_core.messages import HumanMessage

    model.clear_prompt_cache()
    message = model.invoke([HumanMessage(QUESTION)], max_tokens=max_tokens)
    tps = message.response_metadata.get("tokens_per_second")
    if not tps:
        raise RuntimeError("the model stopped before generating two tokens; no rate to compare")
    return float(tps)


def run_benchmark(model_path: str | None, repeats: int, max_tokens: int, buffer_mb: int) -> list[tuple[str, str, str]]:
    from llm import ChatLlamaCpp
    from llm.bundles import resolve_model_path

    path = str(resolve_model_path(model_path))
    model = ChatLlamaCpp(model_path=path, temperature=0.0, repeat_penalty=1.0, n_ctx=2048).load()
    threads = int(model.llama.n_threads)
    weights = weight_bytes(model)
    bandwidth = Bandwidth(buffer_mb, threads)
    _eprint(
        f"model {model.model_name} ({path}): {weights / 1e9:.3f} GB of weights; {threads} threads;"
        f" {buffer_mb} MiB buffer; {repeats} rounds, order alternated"
    )
    bandwidth.measure(1)  # warm-up
    generation_tps(model, 8)
    gbps: list[float] = []
    tps: list[float] = []
    fractions: list[float] = []
    for i in range(repeats):
        if i % 2 == 0:
            bw, rate = bandwidth.measure(), generation_tps(model, max_tokens)
        else:
            rate = generation_tps(model, max_tokens)
            bw = bandwidth.measure()
        ceiling = bw * 1e9 / weights
        gbps.append(bw)
        tps.append(rate)
        fractions.append(rate / ceiling)
        _eprint(f"round {i + 1}/{repeats}: {bw:.1f} GB/s -> ceiling {ceiling:.1f} tok/s; generated {rate:.1f} tok/s")
    model.unload()
    ceilings = [g * 1e9 / weights for g in gbps]
    return [
        ("metric", "median (min..max)", "note"),
        (f"memory read bandwidth GB/s, {threads} threads", _fmt(gbps), "numpy max-reduce, buffer >> caches"),
        ("model weights MB", f"{weights / 1e6:.2f}", "all read once per generated token"),
        ("ceiling tok/s (bandwidth / weights)", _fmt(ceilings), ""),
        ("generation tok/s (ChatLlamaCpp)", _fmt(tps), ""),
        ("fraction of the ceiling (per round)", _fmt(fractions, 2), ""),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle name or GGUF path (default: the default bundle)")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--buffer-mb", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="3 rounds, 48 tokens, 512 MiB buffer")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.max_tokens, args.buffer_mb = 3, 48, 512
    if args.repeats < 1 or args.max_tokens < 8 or args.buffer_mb < 64:
        parser.error("--repeats must be >= 1, --max-tokens >= 8 and --buffer-mb >= 64")
    print_table(run_benchmark(args.model, args.repeats, args.max_tokens, args.buffer_mb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
