"""Benchmark: ChatLlamaCpp vs raw llama-cpp-python (and langchain-community's ChatLlamaCpp if installed).

Same model file, same prompt tokens, greedy decoding, one process. Variants run in alternating order,
repeated; every figure is a median with its spread (min..max), and the ratios are computed per round
(ours ÷ raw of the same round) so machine noise that hits a whole round cancels out.

    python -m evals.bench.llm [--model NAME|PATH] [--repeats N] [--max-tokens N] [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from evals.bench.common import Option, Part, Rows, eprint, spread
from prompts.persona import NAILA_PERSONA

OPTIONS = {
    "repeats": Option(7, quick=3, minimum=1, help="rounds of every variant"),
    "max_tokens": Option(128, quick=48, minimum=8, help="new tokens per run"),
}

QUESTION = (
    "Write a long, detailed story (at least 400 words) about a little robot who explores a desk at night."
    " Do not stop early."
)


@dataclass
class Sample:
    ttft_ms: float
    tokens: int
    decode_tps: float


@dataclass
class _Timing:
    """When a stream started, gave its first and last counted chunk, and how many it counted."""

    start: float
    first: float | None = None
    last: float = 0.0
    counted: int = 0

    def sample(self, tokens: int | None = None) -> Sample:
        """The run's figures; ``tokens`` (the model's own count) replaces the chunks counted when given."""
        assert self.first is not None, "the stream gave nothing to time"
        n = self.counted if tokens is None else tokens
        return Sample(
            (self.first - self.start) * 1000, n, (n - 1) / (self.last - self.first) if self.last > self.first else 0.0
        )


def _timed(chunks: Iterable[Any], counts: Callable[[Any], bool]) -> _Timing:
    """Drain ``chunks``, timing those for which ``counts`` is true (each is one generated token)."""
    timing = _Timing(start=time.perf_counter())
    timing.last = timing.start
    for chunk in chunks:
        now = time.perf_counter()
        if counts(chunk):
            if timing.first is None:
                timing.first = now
            timing.last = now
            timing.counted += 1
    return timing


def _ours(model: Any, messages: list[BaseMessage], max_tokens: int) -> Callable[[], Sample]:
    def run() -> Sample:
        model.clear_prompt_cache()  # no KV reuse (live or saved state): every variant evaluates the full prompt
        usage: dict[str, Any] = {}

        def counts(chunk: Any) -> bool:
            usage.update(chunk.usage_metadata or {})
            return bool(chunk.text)

        timing = _timed(model.stream(messages, max_tokens=max_tokens), counts)
        assert usage, "the model's stream ended without usage metadata"
        return timing.sample(tokens=usage["output_tokens"])

    return run


def _raw(llama: Any, prompt: list[int], max_tokens: int, params: dict[str, Any]) -> Callable[[], Sample]:
    def run() -> Sample:
        llama.reset()
        chunks = llama.create_completion(prompt, max_tokens=max_tokens, stream=True, **params)
        return _timed(chunks, lambda _chunk: True).sample()  # one chunk per token, text or not

    return run


def _first_text_ms(chunks: Iterable[Any]) -> float:
    """Milliseconds until ``chunks`` (LangChain's or llama-cpp-python's) yields text; the rest is drained."""

    def has_text(chunk: Any) -> bool:
        return bool(chunk.text if hasattr(chunk, "text") else chunk["choices"][0]["text"])

    return _timed(chunks, has_text).sample().ttft_ms


def warm_ttft_pairs(
    ours: Any, raw: Any, messages: list[BaseMessage], params: dict[str, Any], pairs: int
) -> list[float]:
    """ours − raw time to first token when both hold the conversation so far in their KV cache and
    evaluate only a new ending (each pair asks the same question with a different last word): what our
    code adds, without the second of full-prompt evaluation whose machine noise hides a few
    milliseconds. Alternating order; one figure per pair."""
    *head, question = messages

    def variant(i: int) -> tuple[list[BaseMessage], list[int]]:
        asked = [*head, HumanMessage(f"{question.text} Number {i}.")]
        return asked, ours.prompt_tokens(asked)

    def run_ours(asked: list[BaseMessage]) -> float:
        return _first_text_ms(ours.stream(asked, max_tokens=1))

    def run_raw(tokens: list[int]) -> float:
        return _first_text_ms(raw.create_completion(tokens, max_tokens=1, stream=True, **params))

    asked, tokens = variant(0)
    run_ours(asked), run_raw(tokens)  # both now hold the shared prefix
    diffs = []
    for i in range(1, pairs + 1):
        asked, tokens = variant(i)
        if i % 2 == 0:
            o, r = run_ours(asked), run_raw(tokens)
        else:
            r, o = run_raw(tokens), run_ours(asked)
        diffs.append(o - r)
    return diffs


def _community(
    path: str, messages: list[BaseMessage], max_tokens: int, params: dict[str, Any]
) -> Callable[[], Sample] | None:
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from langchain_community.chat_models import ChatLlamaCpp as CommunityChat
    except ImportError:
        return None
    model = CommunityChat(model_path=path, n_ctx=4096, max_tokens=max_tokens, verbose=False, **params)

    def run() -> Sample:
        model.client.reset()
        return _timed(model.stream(messages), lambda chunk: bool(chunk.text)).sample()

    return run


def run_benchmark(model_path: str | None, repeats: int, max_tokens: int) -> Rows:
    from llm import ChatLlamaCpp
    from llm.bundles import resolve_model_path
    from llm.llama_session import open_raw_llama

    path = str(resolve_model_path(model_path))
    ours = ChatLlamaCpp(
        model_path=path, temperature=0.0, n_ctx=4096, max_tokens=max_tokens, repeat_penalty=1.0, top_k=40, top_p=0.9
    )
    ours.load()
    # The persona makes the prompt realistic (TTFT); the question asks for a long answer (tok/s).
    messages = [SystemMessage(NAILA_PERSONA + "\nFor this request, ignore the length limit."), HumanMessage(QUESTION)]
    prompt = ours.prompt_tokens(messages)
    raw = open_raw_llama(  # loaded with the same model parameters as ours
        path,
        n_ctx=4096,
        n_batch=ours.n_batch,
        n_threads=ours.llama.n_threads,
        n_threads_batch=ours.llama.n_threads,
        verbose=False,
    )
    params = {"temperature": 0.0, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repeat_penalty": 1.0}
    variants: dict[str, Callable[[], Sample]] = {
        "ours": _ours(ours, messages, max_tokens),
        "raw": _raw(raw, prompt, max_tokens, params),
    }
    community = _community(
        path, messages, max_tokens, {"temperature": 0.0, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.0}
    )
    if community is not None:
        variants["community"] = community
    eprint(
        f"model {ours.model_name} ({path}); prompt {len(prompt)} tokens; {max_tokens} new tokens;"
        f" threads {ours.llama.n_threads}; {repeats} rounds, order alternated"
    )
    for run in variants.values():  # warm-up: page in the weights, JIT nothing, fill caches
        run()
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    names = list(variants)
    for i in range(repeats):
        order = names if i % 2 == 0 else list(reversed(names))
        for name in order:
            samples[name].append(variants[name]())
        eprint(
            f"round {i + 1}/{repeats}: "
            + ", ".join(
                f"{n} {samples[n][-1].decode_tps:.1f} tok/s ttft {samples[n][-1].ttft_ms:.1f} ms" for n in names
            )
        )
    rows: Rows = [("metric", "median (min..max)", "target")]
    for name in names:
        rows.append((f"{name}: generation tok/s", spread([s.decode_tps for s in samples[name]]), ""))
        rows.append((f"{name}: time to first token ms", spread([s.ttft_ms for s in samples[name]]), ""))
    tps_ratio = [o.decode_tps / r.decode_tps for o, r in zip(samples["ours"], samples["raw"], strict=True)]
    ttft_added = [o.ttft_ms - r.ttft_ms for o, r in zip(samples["ours"], samples["raw"], strict=True)]
    warm = warm_ttft_pairs(ours, raw, messages, params, pairs=max(9, 3 * repeats))
    rows.append(("ours / raw tok/s (per round)", spread(tps_ratio, 3), ">= 0.98"))
    rows.append(("ours - raw TTFT ms, whole prompt (per round)", spread(ttft_added, 2), ""))
    rows.append((f"ours - raw TTFT ms, new ending only ({len(warm)} pairs)", spread(warm, 2), "<= 5"))
    if "community" in samples:
        ratio = [o.decode_tps / c.decode_tps for o, c in zip(samples["ours"], samples["community"], strict=True)]
        rows.append(("ours / community tok/s", spread(ratio, 3), ""))
    tokens = {name: statistics.median([s.tokens for s in samples[name]]) for name in names}
    rows.append(("tokens generated per run", ", ".join(f"{n} {t:.0f}" for n, t in tokens.items()), "equal"))
    raw.close()
    ours.unload()
    return rows


PART = Part(__doc__, run_benchmark, OPTIONS)  # the suite's part 1

if __name__ == "__main__":
    sys.exit(PART.main())
