"""Benchmark: generation speed as a fraction of what this machine's memory bandwidth allows.

Generating one token reads every weight of the model once (the KV cache adds a little), so on a CPU the
ceiling is ``memory bandwidth ÷ weight bytes`` tokens per second. One run measures both, alternating:
the read bandwidth with as many threads as the model uses (each thread reduces its own slice of a
buffer far larger than the caches; numpy releases the GIL), and the model's generation rate through
``ChatLlamaCpp``. Each round gives ``tok/s ÷ (GB/s ÷ weight GB)``; median and spread over the rounds.

    python -m evals.bench.roofline [--model NAME|PATH] [--repeats N] [--buffer-mb N] [--quick]
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np

from evals.bench.common import Option, Part, Rows, eprint, spread

OPTIONS = {
    "repeats": Option(6, quick=3, minimum=1, help="rounds, bandwidth and generation alternated"),
    "max_tokens": Option(96, quick=48, minimum=8, help="new tokens per generation"),
    "buffer_mb": Option(1024, quick=512, minimum=64, help="MiB read by the bandwidth probe (far above the caches)"),
}
QUESTION = "Tell me a long story about a robot who maps the stars, with many details."


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


def run_benchmark(model_path: str | None, repeats: int, max_tokens: int, buffer_mb: int) -> Rows:
    from llm import ChatLlamaCpp
    from llm.bundles import resolve_model_path

    path = str(resolve_model_path(model_path))
    model = ChatLlamaCpp(model_path=path, temperature=0.0, repeat_penalty=1.0, n_ctx=2048).load()
    threads = int(model.llama.n_threads)
    weights = weight_bytes(model)
    bandwidth = Bandwidth(buffer_mb, threads)
    eprint(
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
        eprint(f"round {i + 1}/{repeats}: {bw:.1f} GB/s -> ceiling {ceiling:.1f} tok/s; generated {rate:.1f} tok/s")
    model.unload()
    ceilings = [g * 1e9 / weights for g in gbps]
    return [
        ("metric", "median (min..max)", "note"),
        (f"memory read bandwidth GB/s, {threads} threads", spread(gbps), "numpy max-reduce, buffer >> caches"),
        ("model weights MB", f"{weights / 1e6:.2f}", "all read once per generated token"),
        ("ceiling tok/s (bandwidth / weights)", spread(ceilings), ""),
        ("generation tok/s (ChatLlamaCpp)", spread(tps), ""),
        ("fraction of the ceiling (per round)", spread(fractions, 2), ""),
    ]


PART = Part(__doc__, run_benchmark, OPTIONS)  # the suite's part 5

if __name__ == "__main__":
    sys.exit(PART.main())
