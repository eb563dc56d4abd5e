"""Benchmark: the llama.cpp knobs that matter on a CPU, swept one at a time from the defaults.

Knobs: threads, batch size (n_batch), flash attention, KV cache type. Every configuration is
``ChatLlamaCpp`` with one knob changed from today's defaults; each round loads every configuration in
turn (order alternated between rounds), evaluates the same ~400-token prompt from scratch and generates
the same number of tokens. Figures are medians with min..max, and ``÷ default`` is taken per round
against the default configuration of that same round, so machine noise that hits a whole round cancels.

    python -m evals.bench.knobs [--model NAME|PATH] [--repeats N] [--max-tokens N] [--quick]
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from evals.bench.common import Option, Part, Rows, eprint, spread

OPTIONS = {
    "repeats": Option(5, quick=2, minimum=1, help="rounds over every configuration"),
    "max_tokens": Option(64, quick=32, minimum=8, help="new tokens per run"),
}

PROMPT_REPEAT = 6  # persona + this many copies of a paragraph: a prompt of ~400 tokens
PARAGRAPH = (
    "The little robot rolled to the edge of the desk, looked at the lamp, the pencils and the sleeping cat,"
    " and wondered what each of them would say if it could talk."
)


@dataclass(frozen=True)
class Config:
    name: str
    fields: dict[str, Any]


@dataclass
class Sample:
    prompt_tps: float
    gen_tps: float


def configs(default_threads: int, logical_cores: int) -> list[Config]:
    """The defaults, then one knob changed at a time."""
    from llm import ChatLlamaCpp

    defaults = ChatLlamaCpp.model_fields
    base_batch = int(defaults["n_batch"].default)
    base_fa = bool(defaults["flash_attn"].default)
    base_kv = str(defaults["kv_cache_type"].default)
    out = [Config(f"default (threads {default_threads}, batch {base_batch}, flash {base_fa}, kv {base_kv})", {})]
    for threads in sorted({1, default_threads, logical_cores} - {default_threads}):
        out.append(Config(f"threads {threads}", {"n_threads": threads}))
    for batch in (64, 128, 512, 2048):
        if batch != base_batch:
            out.append(Config(f"batch {batch}", {"n_batch": batch}))
    out.append(Config(f"flash attention {not base_fa}", {"flash_attn": not base_fa}))
    for kv in ("q8_0", "f16"):
        if kv != base_kv:
            out.append(Config(f"kv cache {kv} (+ flash attention)", {"kv_cache_type": kv, "flash_attn": True}))
    return out


def measure(path: str, config: Config, max_tokens: int) -> Sample:
    from langchain_core.messages import HumanMessage, SystemMessage

    from llm import ChatLlamaCpp
    from prompts.persona import NAILA_PERSONA

    model = ChatLlamaCpp(
        model_path=path, n_ctx=2048, temperature=0.0, repeat_penalty=1.0, state_cache_mb=0, **config.fields
    ).load()
    try:
        model.invoke([HumanMessage("Hi")], max_tokens=2)  # warm-up: weights paged in, buffers allocated
        model.clear_prompt_cache()
        messages = [
            SystemMessage(NAILA_PERSONA + "\nFor this request, ignore the length limit."),
            HumanMessage(" ".join([PARAGRAPH] * PROMPT_REPEAT) + " Continue this story at length."),
        ]
        n_prompt = len(model.prompt_tokens(messages))
        start = time.perf_counter()
        message = model.invoke(messages, max_tokens=max_tokens)
        elapsed = time.perf_counter() - start
        meta = message.response_metadata
        ttft_s = float(meta["time_to_first_token_ms"]) / 1000
        gen = float(meta.get("tokens_per_second") or 0.0)
        if not gen or elapsed <= 0:
            raise RuntimeError(f"{config.name}: the model stopped before generating; no rate to compare")
        return Sample(prompt_tps=n_prompt / ttft_s, gen_tps=gen)
    finally:
        model.unload()


def run_benchmark(model_path: str | None, repeats: int, max_tokens: int) -> Rows:
    from llm.bundles import resolve_model_path
    from llm.hardware import detect_hardware, resolve_threads

    path = str(resolve_model_path(model_path))
    hw = detect_hardware()
    sweep = configs(resolve_threads(None), hw.logical_cores)
    eprint(f"{len(sweep)} configurations of {path}; {repeats} rounds of {max_tokens} tokens, order alternated")
    samples: dict[str, list[Sample]] = {c.name: [] for c in sweep}
    for i in range(repeats):
        order = sweep if i % 2 == 0 else list(reversed(sweep))
        for config in order:
            samples[config.name].append(measure(path, config, max_tokens))
        eprint(
            f"round {i + 1}/{repeats}: "
            + "; ".join(
                f"{c.name.split(' (')[0]} {samples[c.name][-1].prompt_tps:.0f}/{samples[c.name][-1].gen_tps:.1f}"
                for c in sweep
            )
        )
    base = samples[sweep[0].name]
    rows: Rows = [("configuration", "prompt tok/s | generation tok/s", "÷ default (prompt | generation)")]
    for config in sweep:
        got = samples[config.name]
        prompt_ratio = [s.prompt_tps / b.prompt_tps for s, b in zip(got, base, strict=True)]
        gen_ratio = [s.gen_tps / b.gen_tps for s, b in zip(got, base, strict=True)]
        rows.append(
            (
                config.name,
                f"{spread([s.prompt_tps for s in got], 0)} | {spread([s.gen_tps for s in got])}",
                "1.00 | 1.00" if config is sweep[0] else f"{spread(prompt_ratio, 2)} | {spread(gen_ratio, 2)}",
            )
        )
    return rows


PART = Part(__doc__, run_benchmark, OPTIONS)  # the suite's part 6

if __name__ == "__main__":
    sys.exit(PART.main())
