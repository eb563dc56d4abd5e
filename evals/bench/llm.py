"""Benchmark: ChatLlamaCpp vs raw llama-cpp-python (and langchain-community's ChatLlamaCpp if installed).

Same model file, same prompt tokens, greedy decoding, one process. Variants run in alternating order,
repeated; every figure is a median with its spread (min..max), and the ratios are computed per round
(ours ÷ raw of the same round) so machine noise that hits a whole round cancels out.

    python -m evals.bench_llm [--model NAME|PATH] [--repeats N] [--max-tokens N] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage

from prompts.persona import NAILA_PERSONA

QUESTION = (
    "Write a long, detailed story (at least 400 words) about a little robot who explores a desk at night."
    " Do not stop early."
)


@dataclass
class Sample:
    ttft_ms: float
    tokens: int
    decode_tps: float


def _eprint(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _ours(model: Any, messages: list, max_tokens: int) -> Callable[[], Sample]:
    def run() -> Sample:
        model.clear_prompt_cache()  # no KV reuse (live or saved state): every variant evaluates the full prompt
        start = time.perf_counter()
        first = None
        last = start
        usage = None
        for chunk in model.stream(messages, max_tokens=max_tokens):
            now = time.perf_counter()
            if chunk.text:
                if first is None:
                    first = now
                last = now
            if chunk.usage_metadata:
                usage = chunk.usage_metadata
        assert usage is not None and first is not None
        n = usage["output_tokens"]
        return Sample((first - start) * 1000, n, (n - 1) / (last - first) if last > first else 0.0)

    return run


def _raw(llama: Any, prompt: list[int], max_tokens: int, params: dict[str, Any]) -> Callable[[], Sample]:
    def run() -> Sample:
        llama.reset()
        start = time.perf_counter()
        first = None
        last = start
        n = 0
        for _chunk in llama.create_completion(prompt, max_tokens=max_tokens, stream=True, **params):
            now = time.perf_counter()
            if first is None:
                first = now
            last = now
            n += 1
        assert first is not None
        return Sample((first - start) * 1000, n, (n - 1) / (last - first) if last > first else 0.0)

    return run


def _first_text_ms(chunks: Any) -> float:
    """Milliseconds until ``chunks`` yields its first piece of text (the rest is drained)."""
    start = time.perf_counter()
    first = None
    for chunk in chunks:
        text = chunk.text if hasattr(chunk, "text") else chunk["choices"][0]["text"]
        if text and first is None:
            first = time.perf_counter()
    assert first is not None
    return (first - start) * 1000


def warm_ttft_pairs(ours: Any, raw: Any, messages: list, params: dict[str, Any], pairs: int) -> list[float]:
    """ours − raw time to first token when both hold the conversation so far in their KV cache and
    evaluate only a new ending (each pair asks the same question with a different last word): what our
    code adds, without the second of full-prompt evaluation whose machine noise hides a few
    milliseconds. Alternating order; one figure per pair."""
    *head, question = messages

    def variant(i: int) -> tuple[list, list[int]]:
        asked = [*head, HumanMessage(f"{question.text} Number {i}.")]
        return asked, ours.prompt_tokens(asked)

    def run_ours(asked: list) -> float:
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


def _community(path: str, messages: list, max_tokens: int, params: dict[str, Any]) -> Callable[[], Sample] | None:
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
        start = time.perf_counter()
        first = None
        last = start
        n = 0
        for chunk in model.stream(messages):
            now = time.perf_counter()
            if chunk.text:
                if first is None:
                    first = now
                last = now
                n += 1
        assert first is not None
        return Sample((first - start) * 1000, n, (n - 1) / (last - first) if last > first else 0.0)

    return run


def _fmt(values: list[float], digits: int = 1) -> str:
    med = statistics.median(values)
    return f"{med:.{digits}f} ({min(values):.{digits}f}..{max(values):.{digits}f})"


def run_benchmark(model_path: str | None, repeats: int, max_tokens: int) -> list[tuple[str, str, str]]:
    import llama_cpp

    from llm import ChatLlamaCpp
    from llm.bundles import resolve_model_path
    from llm.hardware import model_params_override, safe_model_params

    path = str(resolve_model_path(model_path))
    ours = ChatLlamaCpp(
        model_path=path, temperature=0.0, n_ctx=4096, max_tokens=max_tokens, repeat_penalty=1.0, top_k=40, top_p=0.9
    )
    ours.load()
    # The persona makes the prompt realistic (TTFT); the question asks for a long answer (tok/s).
    messages = [SystemMessage(NAILA_PERSONA + "\nFor this request, ignore the length limit."), HumanMessage(QUESTION)]
    prompt = ours.prompt_tokens(messages)
    with model_params_override(**safe_model_params()):  # the same load parameters as ours
        raw = llama_cpp.Llama(
            model_path=path,
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
    _eprint(
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
        _eprint(
            f"round {i + 1}/{repeats}: "
            + ", ".join(
                f"{n} {samples[n][-1].decode_tps:.1f} tok/s ttft {samples[n][-1].ttft_ms:.1f} ms" for n in names
            )
        )
    rows = [("metric", "median (min..max)", "target")]
    for name in names:
        rows.append((f"{name}: generation tok/s", _fmt([s.decode_tps for s in samples[name]]), ""))
        rows.append((f"{name}: time to first token ms", _fmt([s.ttft_ms for s in samples[name]]), ""))
    tps_ratio = [o.decode_tps / r.decode_tps for o, r in zip(samples["ours"], samples["raw"], strict=True)]
    ttft_added = [o.ttft_ms - r.ttft_ms for o, r in zip(samples["ours"], samples["raw"], strict=True)]
    warm = warm_ttft_pairs(ours, raw, messages, params, pairs=max(9, 3 * repeats))
    rows.append(("ours / raw tok/s (per round)", _fmt(tps_ratio, 3), ">= 0.98"))
    rows.append(("ours - raw TTFT ms, whole prompt (per round)", _fmt(ttft_added, 2), ""))
    rows.append((f"ours - raw TTFT ms, new ending only ({len(warm)} pairs)", _fmt(warm, 2), "<= 5"))
    if "community" in samples:
        ratio = [o.decode_tps / c.decode_tps for o, c in zip(samples["ours"], samples["community"], strict=True)]
        rows.append(("ours / community tok/s", _fmt(ratio, 3), ""))
    tokens = {name: statistics.median([s.tokens for s in samples[name]]) for name in names}
    rows.append(("tokens generated per run", ", ".join(f"{n} {t:.0f}" for n, t in tokens.items()), "equal"))
    raw.close()
    ours.unload()
    return rows


def print_table(rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for j, row in enumerate(rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        if j == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="bundle name or GGUF path (default: the default bundle)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 48 tokens")
    args = parser.parse_args(argv)
    repeats, max_tokens = (3, 48) if args.quick else (args.repeats, args.max_tokens)
    print_table(run_benchmark(args.model, repeats, max_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
