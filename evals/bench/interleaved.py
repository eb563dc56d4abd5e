"""Benchmark: interleaved devices — time to first token of a returning device ÷ of one that never left.

Four devices talk round-robin, six turns each, with NAILA's real prompt (persona → history → per-turn
guidance → message, built by ``prompts.templates.build_prompt``). A device *returns* when the other
devices spoke since its last turn; the baseline is the same conversation run alone (*never left*),
turn for turn. Three variants see the same prompt tokens in one process:

- ``cache``: ChatLlamaCpp with per-conversation prompt states (``LLM_STATE_CACHE_MB``);
- ``no cache``: ChatLlamaCpp with ``state_cache_mb=0`` (llama.cpp reuses only the previous call's prefix);
- ``raw``: ``llama_cpp.Llama.create_completion`` on the same tokens.

The histories hold the model's own greedy answers, produced once before measuring, so every variant
and round replays identical prompts. Rounds alternate the order of the variants (and of the two
phases); a round's figure is the median over the returning turns (turns 2..N of every device) of
returning TTFT ÷ never-left TTFT of the same device and turn; the table shows the median of the
rounds and their spread (min..max).

    python -m evals.bench.interleaved [--model NAME|PATH] [--repeats N] [--devices N] [--turns N] [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from evals.bench.common import Option, Part, Rows, eprint, spread

SCRIPTS = [
    [
        "Hi NAILA, I'm Ana.",
        "What's twelve times seven?",
        "Can you remind me why the sky is blue?",
        "That's neat. What should I cook tonight?",
        "I have rice, eggs and spinach.",
        "Thanks, what's my name again?",
    ],
    [
        "Hello robot, tell me a joke.",
        "Ha, another one please.",
        "Why do people like puns?",
        "Tell me something about octopuses.",
        "How many hearts do they have?",
        "Okay, good night NAILA.",
    ],
    [
        "Good morning, I need to focus on my homework.",
        "It's about the water cycle.",
        "What is evaporation?",
        "And condensation?",
        "Can you quiz me with one question?",
        "Clouds form when vapour condenses, right?",
    ],
    [
        "Hey NAILA, can you turn your head?",
        "What can you see with your camera?",
        "Do you like living on my desk?",
        "What would you do if you could walk?",
        "Do you have a favourite colour?",
        "Bye, see you tomorrow.",
    ],
]
INTENTS = ["greeting", "question", "question", "general", "question", "general"]
VARIANTS = ("cache", "no cache", "raw")
OPTIONS = {
    "repeats": Option(3, quick=1, minimum=1, help="rounds of every variant"),
    "devices": Option(4, minimum=1, help="devices taking turns"),
    "turns": Option(6, quick=3, minimum=2, help="turns per device (the first is never a returning one)"),
    "state_cache_mb": Option(512, minimum=0, help="prompt-state cache budget of the cache variant"),
}


@dataclass
class Turn:
    messages: list[BaseMessage]
    tokens: list[int]


@dataclass
class Timing:
    ttft_ms: float
    evaluated: int  # prompt tokens evaluated (not reused)


@dataclass
class RoundResult:
    returning: dict[tuple[int, int], Timing] = field(default_factory=dict)
    alone: dict[tuple[int, int], Timing] = field(default_factory=dict)


def _rss_mib() -> float:
    from naila_graph.telemetry import rss_mb  # the server's own measure, in MB

    return rss_mb() * 1e6 / 2**20


def build_script(model: Any, devices: int, turns: int, answer_tokens: int) -> dict[tuple[int, int], Turn]:
    """Every device's prompts, with the model's own greedy answers in the history."""
    from prompts.persona import load_persona
    from prompts.templates import build_prompt, turn_guidance

    template = build_prompt(load_persona())
    start = datetime(2025, 3, 14, 9, 0)
    answers: dict[tuple[int, int], str] = {}
    script: dict[tuple[int, int], Turn] = {}
    for turn in range(turns):
        for device in range(devices):
            lines = SCRIPTS[device % len(SCRIPTS)]
            history: list[BaseMessage] = []
            for t in range(turn):
                history += [HumanMessage(lines[t % len(lines)]), AIMessage(answers[(device, t)])]
            guidance = turn_guidance(intent=INTENTS[turn % len(INTENTS)], now=start + timedelta(minutes=2 * turn))
            messages = template.format_messages(history=history, guidance=guidance, input=lines[turn % len(lines)])
            script[(device, turn)] = Turn(messages, model.prompt_tokens(messages))
            answers[(device, turn)] = model.invoke(messages, max_tokens=answer_tokens).text.strip() or "Okay."
    return script


def _ours(model: Any, gen_tokens: int) -> tuple[Callable[[Turn], Timing], Callable[[], None]]:
    def run(turn: Turn) -> Timing:
        started = time.perf_counter()
        first: float | None = None
        reused = 0
        for chunk in model.stream(turn.messages, max_tokens=gen_tokens):
            if first is None:
                first = time.perf_counter()
            if chunk.usage_metadata:
                reused = int(chunk.response_metadata["prompt_tokens_cached"])
        assert first is not None
        return Timing((first - started) * 1000, len(turn.tokens) - reused)

    return run, model.clear_prompt_cache


def _raw(llama: Any, gen_tokens: int) -> tuple[Callable[[Turn], Timing], Callable[[], None]]:
    def run(turn: Turn) -> Timing:
        previous = llama.input_ids[: llama.n_tokens].tolist()
        reused = 0
        for a, b in zip(previous, turn.tokens, strict=False):
            if a != b:
                break
            reused += 1
        started = time.perf_counter()
        first: float | None = None
        for _chunk in llama.create_completion(
            turn.tokens, max_tokens=gen_tokens, stream=True, temperature=0.0, top_k=40, top_p=0.9, repeat_penalty=1.0
        ):
            if first is None:
                first = time.perf_counter()
        assert first is not None
        return Timing((first - started) * 1000, len(turn.tokens) - min(reused, len(turn.tokens) - 1))

    return run, llama.reset


def _measure(
    run: Callable[[Turn], Timing],
    clear: Callable[[], None],
    script: dict[tuple[int, int], Turn],
    devices: int,
    turns: int,
    alone_first: bool,
    after_interleaved: Callable[[], None] = lambda: None,
) -> RoundResult:
    result = RoundResult()

    def interleaved() -> None:
        clear()
        for turn in range(turns):
            for device in range(devices):
                result.returning[(device, turn)] = run(script[(device, turn)])
        after_interleaved()

    def alone() -> None:
        for device in range(devices):
            clear()
            for turn in range(turns):
                result.alone[(device, turn)] = run(script[(device, turn)])

    for phase in (alone, interleaved) if alone_first else (interleaved, alone):
        phase()
    return result


def run(
    model_path: str | None = None,
    *,
    repeats: int = 3,
    devices: int = 4,
    turns: int = 6,
    answer_tokens: int = 48,
    gen_tokens: int = 16,
    state_cache_mb: int = 512,
) -> Rows:
    """Measure and return the table rows (header first)."""
    from llm import ChatLlamaCpp
    from llm.bundles import resolve_model_path
    from llm.llama_session import open_raw_llama
    from llm.state_cache import StateCacheStats

    path = str(resolve_model_path(model_path))
    common: dict[str, Any] = {
        "model_path": path,
        "temperature": 0.0,
        "n_ctx": 4096,
        "repeat_penalty": 1.0,
        "top_k": 40,
        "top_p": 0.9,
        "max_tokens": gen_tokens,
    }
    cached = ChatLlamaCpp(**common, state_cache_mb=state_cache_mb).load()
    plain = ChatLlamaCpp(**common, state_cache_mb=0).load()
    threads = cached.llama.n_threads
    raw = open_raw_llama(  # loaded with the same model parameters as ours
        path,
        n_ctx=4096,
        n_batch=cached.n_batch,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    eprint(f"model {cached.model_name} ({path}); threads {threads}; writing the {devices}x{turns} script ...")
    script = build_script(cached, devices, turns, answer_tokens)
    sizes = [len(t.tokens) for t in script.values()]
    eprint(
        f"prompts {min(sizes)}..{max(sizes)} tokens; {gen_tokens} new tokens per turn;"
        f" {repeats} rounds, order alternated"
    )
    runners = {"cache": _ours(cached, gen_tokens), "no cache": _ours(plain, gen_tokens), "raw": _raw(raw, gen_tokens)}
    for runner, _clear in runners.values():  # warm-up
        runner(script[(0, 0)])
    results: dict[str, list[RoundResult]] = {name: [] for name in VARIANTS}
    after_rounds: list[StateCacheStats] = []
    rss_growth: list[float] = []
    rss_cleared = [0.0]
    run_cached, clear_cached = runners["cache"]

    def clear_and_note_rss() -> None:
        clear_cached()
        rss_cleared[0] = _rss_mib()

    def note_cache() -> None:  # after the interleaved turns of the cache variant
        after_rounds.append(cached.state_cache_stats)
        rss_growth.append(_rss_mib() - rss_cleared[0])

    runners["cache"] = (run_cached, clear_and_note_rss)

    for i in range(repeats):
        order = VARIANTS if i % 2 == 0 else tuple(reversed(VARIANTS))
        for name in order:
            runner, clear = runners[name]
            after = note_cache if name == "cache" else (lambda: None)
            results[name].append(_measure(runner, clear, script, devices, turns, i % 2 == 1, after))
        eprint(
            f"round {i + 1}/{repeats}: "
            + ", ".join(f"{n} {statistics.median(_ratios(results[n][-1])):.2f}x" for n in VARIANTS)
        )
    largest = max(after_rounds, key=lambda s: s.bytes)
    rows: Rows = [("metric (median of rounds, min..max)", *VARIANTS, "target")]
    rows.append(
        (
            "returning ÷ never-left TTFT",
            *(spread([statistics.median(_ratios(r)) for r in results[n]], 2) for n in VARIANTS),
            "<= 1.3 (cache)",
        )
    )
    rows.append(("returning device TTFT ms", *(spread(_per_round(results[n], "returning")) for n in VARIANTS), ""))
    rows.append(("never-left device TTFT ms", *(spread(_per_round(results[n], "alone")) for n in VARIANTS), ""))
    rows.append(
        (
            "prompt tokens evaluated, returning",
            *(spread(_per_round(results[n], "returning", tokens=True), 0) for n in VARIANTS),
            "",
        )
    )
    rows.append(
        (
            "prompt tokens evaluated, never-left",
            *(spread(_per_round(results[n], "alone", tokens=True), 0) for n in VARIANTS),
            "",
        )
    )
    rows.append(
        (
            "state cache after the interleaved turns",
            f"{largest.entries} states, {largest.bytes / 2**20:.0f} MiB of {state_cache_mb}",
            "-",
            "-",
            "<= budget",
        )
    )
    rows.append(("RSS growth over the interleaved turns MiB", spread(rss_growth, 0), "-", "-", "<= budget"))
    raw.close()
    cached.unload()
    plain.unload()
    return rows


def _returning_keys(result: RoundResult) -> list[tuple[int, int]]:
    return sorted(k for k in result.returning if k[1] > 0)


def _ratios(result: RoundResult) -> list[float]:
    return [result.returning[k].ttft_ms / result.alone[k].ttft_ms for k in _returning_keys(result)]


def _per_round(rounds: list[RoundResult], phase: str, *, tokens: bool = False) -> list[float]:
    values = []
    for result in rounds:
        timings = result.returning if phase == "returning" else result.alone
        keys = _returning_keys(result)
        values.append(statistics.median(timings[k].evaluated if tokens else timings[k].ttft_ms for k in keys))
    return values


def _one_row_per_variant(rows: Rows) -> Rows:
    """The suite's shape: ``metric [variant] | value | target`` (the target on the cache variant's row)."""
    header, body = rows[0], rows[1:]
    variants = header[1:-1]
    flat: Rows = [("metric", "median (min..max)", "target")]
    for row in body:
        metric, values, target = row[0], row[1:-1], row[-1]
        for variant, value in zip(variants, values, strict=True):
            if value != "-":
                flat.append((f"{metric} [{variant}]", value, target if variant == "cache" else ""))
    return flat


PART = Part(__doc__, run, OPTIONS, for_suite=_one_row_per_variant)  # the suite's part 2

if __name__ == "__main__":
    sys.exit(PART.main())
