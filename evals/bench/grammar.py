"""Benchmark: grammar-constrained decoding against free decoding (issue #13, part 1 "Speed").

Three ratios of decode speed (tokens per second after the first token), each taken per round between
two variants measured back to back (order alternated between rounds), so noise that hits a round cancels:

- ours: ``ChatLlamaCpp`` with a structured-output grammar (a small object: a string, an enum, an
  integer) ÷ the same prompts without a grammar. Our token loop (:mod:`llm.constrained`) samples first
  and checks only the sampled token against the grammar. Target ≥ 0.85.
- naive: llama-cpp-python's own ``Llama.create_completion(grammar=LlamaGrammar...)``, which applies the
  grammar to the whole vocabulary on every token, ÷ the same raw ``Llama`` without a grammar.
- lazy: ``ChatLlamaCpp`` with the grammar behind a trigger that the answer never contains
  (``tool_choice="auto"`` with no call) ÷ no grammar; the text must be identical. Target ≥ 0.97.

And the time from a robot's clear command ("turn your head to the left") to the server's
``naila/command/request`` message: the real server in this process on a local broker, one new device per
command (no history), ``--commands`` commands after one warm-up (the first evaluates the persona and the
robot tools' ~1,000 tokens; the others reuse that saved prompt state).

The grammar comes from ``llm.json_grammar.schema_to_grammar`` when that module exists, else the GBNF
written here for the same schema. Each variant runs every prompt once per round (seeded sampling); the
naive pair runs one prompt for at most ``--naive-tokens`` tokens (enough for the object), since a
whole-vocabulary pass per token makes it slow. "tokens needing the whole-vocabulary pass" is the share
of our constrained tokens whose sampled token the grammar refused.

    python -m evals.bench.grammar [--model NAME|PATH] [--repeats N] [--max-tokens N] [--naive-tokens N] [--quick]
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evals.bench.common import Option, Part, Rows, eprint, spread

OPTIONS = {
    "repeats": Option(7, quick=3, minimum=1, help="rounds over every variant"),
    "max_tokens": Option(64, quick=48, minimum=8, help="new tokens per answer at most"),
    "naive_tokens": Option(48, quick=32, minimum=3, help="new tokens per answer on the naive path (it is slow)"),
    "commands": Option(8, quick=4, minimum=0, help="robot commands timed to naila/command/request (0: none)"),
}
COMMANDS = [
    "Turn your head to the left.",
    "Make your lights blue.",
    "Drive forward 10 centimetres.",
    "Show me a happy face.",
]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "mood": {"type": "string", "enum": ["happy", "sad", "curious", "sleepy"]},
        "age": {"type": "integer"},
    },
    "required": ["name", "mood", "age"],
    "additionalProperties": False,
}

# The same schema by hand (strict JSON strings: no raw control characters).
SCHEMA_GBNF = r"""
root ::= "{" ws "\"name\"" ws ":" ws name "," ws "\"mood\"" ws ":" ws mood "," ws "\"age\"" ws ":" ws age ws "}"
name ::= "\"" char{0,40} "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
mood ::= "\"happy\"" | "\"sad\"" | "\"curious\"" | "\"sleepy\""
age ::= "-"? ([0-9] | [1-9] [0-9]{0,15})
ws ::= | " " | "\n" [ \t]{0,20}
"""

SYSTEM = (
    "You describe characters. Reply with one JSON object only, with the keys name (a string), mood (one of"
    " happy, sad, curious, sleepy) and age (an integer)."
)
QUESTIONS = ["Describe a small robot that lives on a desk.", "Describe an old cat.", "Describe a child at the beach."]
FREE_QUESTION = "Tell me a short story about a robot and a lamp."  # for the lazy mode: never a trigger
TRIGGER = "<tool_call>"
SEED = 7


@dataclass
class Rate:
    tokens: int  # tokens after the first, over all prompts of one run
    seconds: float
    text: str = ""

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def schema_grammar() -> tuple[str, str]:
    """(GBNF, where it came from)."""
    try:
        module = importlib.import_module("llm.json_grammar")
    except ModuleNotFoundError as exc:
        if exc.name != "llm.json_grammar":
            raise
        return SCHEMA_GBNF, "hand-written GBNF"
    return str(module.schema_to_grammar(SCHEMA)), "llm.json_grammar.schema_to_grammar"


def _ours(model: Any, conversations: list[list[Any]], max_tokens: int, **kw: Any) -> Callable[[], Rate]:
    def run() -> Rate:
        rate = Rate(0, 0.0)
        for messages in conversations:
            message = model.invoke(messages, max_tokens=max_tokens, seed=SEED, **kw)
            tps = message.response_metadata.get("tokens_per_second")
            produced = int(message.usage_metadata["output_tokens"]) if message.usage_metadata else 0
            if produced > 1 and tps:
                rate.tokens += produced - 1
                rate.seconds += (produced - 1) / float(tps)
            rate.text += message.text
        if not rate.tokens:
            raise RuntimeError("the model produced at most one token per answer: no decode rate to compare")
        return rate

    return run


def _raw(
    llama: Any, prompts: list[list[int]], max_tokens: int, grammar: Any, params: dict[str, Any]
) -> Callable[[], Rate]:
    def run() -> Rate:
        rate = Rate(0, 0.0)
        for prompt in prompts:
            first: float | None = None
            last = 0.0
            count = 0
            for _chunk in llama.create_completion(
                prompt, max_tokens=max_tokens, stream=True, grammar=grammar, seed=SEED, **params
            ):
                last = time.perf_counter()
                first = last if first is None else first
                count += 1  # one chunk per token, text or not
            if first is not None and count > 1:
                rate.tokens += count - 1
                rate.seconds += last - first
        if not rate.tokens:
            raise RuntimeError("the raw model produced at most one token per answer: no decode rate to compare")
        return rate

    return run


def _resampled_share(
    model: Any, prompts: list[list[int]], grammar: str, max_tokens: int, sampling: dict[str, Any]
) -> float:
    """The share of constrained tokens whose sampled token the grammar refused (one more run per prompt)."""
    from llm.constrained import ConstrainedStats, constrained_tokens
    from llm.generation import GenerationParams

    llama = model.llama
    stats = ConstrainedStats()
    for prompt in prompts:
        llama.reset()
        llama.set_seed(SEED)
        params = GenerationParams(
            stop=[], max_tokens=max_tokens, seed=SEED, timeout=None, grammar=grammar,
            temperature=sampling["temperature"], top_p=sampling["top_p"], top_k=sampling["top_k"],
            repeat_penalty=sampling["repeat_penalty"],
        )  # fmt: skip
        tokens = constrained_tokens(llama, prompt, params, stats=stats)
        for _n, _token in zip(range(max_tokens), tokens, strict=False):
            pass
        tokens.close()
    return stats.resampled / stats.sampled if stats.sampled else 0.0


def _pairs(
    name: str, a: Callable[[], Rate], b: Callable[[], Rate], repeats: int, warm_up: bool = True
) -> tuple[list[Rate], list[Rate]]:
    """``repeats`` rounds of a and b back to back, order alternated (after one warm-up run of each)."""
    if warm_up:
        a(), b()
    got_a: list[Rate] = []
    got_b: list[Rate] = []
    for i in range(repeats):
        if i % 2 == 0:
            got_a.append(a())
            got_b.append(b())
        else:
            got_b.append(b())
            got_a.append(a())
        eprint(f"{name} round {i + 1}/{repeats}: {got_a[-1].tps:.1f} vs {got_b[-1].tps:.1f} tok/s")
    return got_a, got_b


async def _command_latency(path: str, count: int) -> tuple[list[float], list[float], int]:
    """Seconds from publishing a clear command to its naila/command/request message and to the spoken
    answer, for ``count`` commands after one warm-up; and how many of them took an action."""
    import tempfile
    from pathlib import Path

    from evals.bench.common import local_broker, robot
    from llm import ChatLlamaCpp
    from naila_graph.server import NailaServer
    from naila_graph.settings import MQTTSettings, NailaSettings

    to_command: list[float] = []
    to_answer: list[float] = []
    acted = 0
    devices = [f"bench-act-{i}" for i in range(count + 1)]
    model = ChatLlamaCpp(model_path=path, temperature=0.0, max_tokens=128)
    with local_broker() as (port, _), tempfile.TemporaryDirectory() as tmp:
        settings = NailaSettings(data_dir=Path(tmp), memory_url=f"sqlite:///{tmp}/memory.sqlite")
        mqtt = MQTTSettings(broker_host="127.0.0.1", broker_port=port, client_id="bench-act-server")
        async with NailaServer(settings, mqtt, chat_model=model), robot(port, devices) as bot:
            for i, device in enumerate(devices):
                task, sent = await bot.ask(device, COMMANDS[i % len(COMMANDS)])
                if i == 0:
                    continue  # warm-up: the persona and the tools are evaluated once
                if task in bot.command:
                    acted += 1
                    to_command.append(bot.command[task] - sent)
                to_answer.append(bot.final[task] - sent)
    return to_command, to_answer, acted


def run_benchmark(
    model_path: str | None, repeats: int, max_tokens: int, naive_tokens: int, commands: float = 0
) -> Rows:
    from langchain_core.messages import HumanMessage, SystemMessage
    from llama_cpp.llama_grammar import LlamaGrammar

    from llm import ChatLlamaCpp
    from llm.bundles import resolve_model_path
    from llm.llama_session import open_raw_llama

    repeats, max_tokens = int(repeats), int(max_tokens)
    path = str(resolve_model_path(model_path))
    grammar, source = schema_grammar()
    sampling: dict[str, Any] = {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "repeat_penalty": 1.1}
    model = ChatLlamaCpp(model_path=path, n_ctx=2048, state_cache_mb=0, **sampling).load()
    conversations = [[SystemMessage(SYSTEM), HumanMessage(q)] for q in QUESTIONS]
    eprint(f"model {path}; grammar from {source}; {repeats} rounds, {max_tokens} tokens at most per answer")

    ours_g, ours_free = _pairs(
        "ours",
        _ours(model, conversations, max_tokens, grammar=grammar),
        _ours(model, conversations, max_tokens),
        repeats,
    )
    lazy_conv = [[SystemMessage("You are a storyteller."), HumanMessage(FREE_QUESTION)]]
    lazy_g, lazy_free = _pairs(
        "lazy",
        _ours(model, lazy_conv, max_tokens, grammar=grammar, grammar_triggers=[TRIGGER]),
        _ours(model, lazy_conv, max_tokens),
        repeats,
    )
    prompts = [model.prompt_tokens(c) for c in conversations]
    resampled = _resampled_share(model, prompts, grammar, max_tokens, sampling)
    threads = model.llama.n_threads
    model.unload()
    raw = open_raw_llama(path, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    params = {**sampling, "min_p": 0.05}
    naive_tokens = int(naive_tokens)  # one prompt, few tokens: the whole-vocabulary pass is slow
    naive_g, naive_free = _pairs(
        "naive",
        _raw(raw, prompts[:1], naive_tokens, LlamaGrammar.from_string(grammar, verbose=False), params),
        _raw(raw, prompts[:1], naive_tokens, None, params),
        repeats,
        warm_up=False,  # the weights are paged in already; a naive run takes long
    )
    raw.close()

    def ratio(a: list[Rate], b: list[Rate]) -> str:
        return spread([x.tps / y.tps for x, y in zip(a, b, strict=True)], 2)

    same = all(g.text == f.text for g, f in zip(lazy_g, lazy_free, strict=True))
    command_rows: Rows = []
    if int(commands) > 0:
        import asyncio

        eprint(f"robot commands: {int(commands)} after one warm-up")
        to_command, to_answer, acted = asyncio.run(_command_latency(path, int(commands)))
        command_rows = [
            ("clear command → naila/command/request (s)", spread(to_command, 2), f"{acted} of {int(commands)} acted"),
            ("clear command → spoken answer (s)", spread(to_answer, 2), ""),
        ]
    return [
        ("metric", "median (min..max)", "target"),
        ("ours: constrained tok/s", spread([r.tps for r in ours_g]), ""),
        ("ours: unconstrained tok/s", spread([r.tps for r in ours_free]), ""),
        ("ours: constrained ÷ unconstrained", ratio(ours_g, ours_free), "≥ 0.85"),
        ("ours: tokens needing the whole-vocabulary pass", f"{resampled:.0%}", ""),
        ("naive (llama-cpp-python grammar): constrained tok/s", spread([r.tps for r in naive_g]), ""),
        ("naive: unconstrained tok/s", spread([r.tps for r in naive_free]), ""),
        ("naive: constrained ÷ unconstrained", ratio(naive_g, naive_free), "(0.25–0.5 in the issue)"),
        ("lazy grammar, no trigger ÷ no grammar", ratio(lazy_g, lazy_free), "≥ 0.97"),
        ("lazy grammar, no trigger: same text as no grammar", "yes" if same else "NO", "yes"),
        *command_rows,
    ]


PART = Part(__doc__, run_benchmark, OPTIONS)  # the suite's part 10

if __name__ == "__main__":
    sys.exit(PART.main())
