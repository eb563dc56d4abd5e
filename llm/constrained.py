"""Grammar-constrained token loop: sample first, check only the sampled token against the grammar.

Applying a GBNF grammar to a 152k-token vocabulary costs 15–28 ms per token on this machine (llama.cpp
issues #7554, #4218), which llama-cpp-python's ``Llama.generate(grammar=...)`` pays for every token.
llama.cpp's own server (``common_sampler_sample`` in common/sampling.cpp, ``grammar_first == false``)
samples from the unconstrained chain, checks only the sampled token against the grammar (the grammar
sampler applied to a one-candidate array: a rejected token gets -inf), and only when that token is
rejected applies the grammar to the whole vocabulary and samples again. A weak model mostly proposes
tokens the grammar allows, so most steps cost one cheap check. :func:`constrained_tokens` does the same
through llama.cpp's C sampler API; :func:`llm.llama_session.LlamaSession` switches to it when
:attr:`GenerationParams.grammar` is set and feeds its tokens to :func:`llm.generation.stream_answer`.

Under a grammar the chain has no repeat penalty: penalising repeated ``"``, ``,`` or ``:`` damages
JSON. End-of-generation is allowed only where the grammar allows it (the grammar sampler gives EOG -inf
while the JSON is incomplete), and once the grammar is complete only EOG survives, so generation ends.

Lazy mode (:attr:`GenerationParams.grammar_triggers`, for ``tool_choice="auto"``): the answer is
sampled exactly as without a grammar (Llama's own chain, repeat penalty included) until the generated
text contains a trigger; from the trigger's first character on, the grammar constrains the text, so
the grammar describes the text *starting with the trigger* (as llama.cpp's lazy grammars do: for Qwen
``root ::= "<tool_call>" ...``, for Llama 3.1 a JSON object triggered by ``"^{"``). A trigger that
starts with ``^`` counts only at the start of the answer (after whitespace). llama.cpp's own
``llama_sampler_init_grammar_lazy_patterns`` exists in the 0.3.36 bindings but is not used: it gives no
way to know when it triggered (we drop the repeat penalty there), it runs a std::regex over the whole
generated text on every token, and if the trigger text is not accepted by the grammar it throws a C++
exception through ctypes, which aborts the process; here that case is a ValueError.

Every sampler made here is freed (``llama_sampler_free``) when the generator ends, however it ends.
A grammar llama.cpp refuses (``llama_sampler_init_grammar`` returns NULL) raises ValueError before any
chain sees it: a NULL grammar sampler in a chain segfaults.
"""

from __future__ import annotations

import ctypes
import importlib
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from llama_cpp import Llama

    from llm.generation import GenerationParams

__all__ = ["ConstrainedStats", "constrained_tokens", "grammar_sampler"]

_MIN_P = 0.05  # what Llama.generate uses when not told (the unconstrained path never sets it)
_ROOT = b"root"
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


@dataclass
class ConstrainedStats:
    """What one constrained generation did (for benchmarks and tests)."""

    sampled: int = 0  # tokens chosen under the grammar
    resampled: int = 0  # of those, how many needed the whole-vocabulary grammar pass
    triggered_at: int | None = None  # lazy mode: byte offset of the trigger in the generated text


def grammar_sampler(llama: Llama, grammar: str) -> Any:
    """A llama.cpp grammar sampler for GBNF ``grammar`` (root rule ``root``); the caller frees it.

    Raises ValueError when the grammar is refused, never handing llama.cpp's NULL on."""
    from llama_cpp import llama_cpp as api

    if not grammar or not grammar.strip():
        raise ValueError("the grammar is empty; pass a GBNF text with a 'root' rule")
    validate = _validator()
    if validate is not None:
        validate(grammar)
    sampler = api.llama_sampler_init_grammar(llama._model.vocab, grammar.encode("utf-8"), _ROOT)
    if not sampler:
        raise ValueError(
            "llama.cpp refused the grammar (llama_sampler_init_grammar returned NULL; its parse error is"
            " on stderr): check the GBNF syntax, that every rule used is defined and that a 'root' rule exists"
        )
    return sampler


def constrained_tokens(
    llama: Llama,
    prompt: Sequence[int],
    params: GenerationParams,
    *,
    grammar_first: bool = False,
    stats: ConstrainedStats | None = None,
) -> Generator[int, Any, None]:
    """Tokens sampled under ``params.grammar`` after evaluating what ``llama`` has not yet seen of
    ``prompt``; a drop-in for ``Llama.generate(prompt, reset=True)`` once the prompt's prefix is in the
    KV cache (the caller reused it). ``grammar_first`` applies the grammar to the whole vocabulary on
    every token (the naive path, kept for tests and benchmarks)."""
    from llama_cpp import llama_cpp as api

    if params.grammar is None:
        raise ValueError("constrained_tokens needs params.grammar")
    stats = stats if stats is not None else ConstrainedStats()
    triggers = [t for t in (params.grammar_triggers or []) if t]
    if params.grammar_triggers is not None and not triggers:
        raise ValueError(
            "grammar_triggers is empty: pass at least one trigger string, or None for a grammar from the start"
        )
    vocab = llama._model.vocab
    ctx = llama._ctx.ctx
    n_vocab = int(api.llama_vocab_n_tokens(vocab))
    samplers: list[Any] = []
    try:
        grammar = grammar_sampler(llama, params.grammar)
        samplers.append(grammar)
        constrained_chain = _chain(llama, params, penalties=False)
        samplers.append(constrained_chain)
        free_chain = _chain(llama, params, penalties=True) if triggers else None
        if free_chain is not None:
            samplers.append(free_chain)
        check = _OneTokenCheck(grammar)
        full = _FullVocab(n_vocab)
        watch = _TriggerWatch(triggers) if triggers else None

        pending = list(prompt[llama.n_tokens :])
        if not pending:  # all in the cache, but its logits may be another's: evaluate the last token again
            llama.n_tokens -= 1
            pending = [prompt[-1]]
        while True:
            llama.eval(pending)
            if watch is not None and free_chain is not None:
                # Unconstrained until a trigger: exactly Llama's own sampling (same chain, same seed).
                token = int(api.llama_sampler_sample(free_chain, ctx, -1))
                if api.llama_vocab_is_eog(vocab, token):
                    yield token
                    return
                piece = llama.detokenize([token])
                hit = watch.feed(piece)
                if hit is None:
                    yield token
                    pending = [token]
                    continue
                start, end = hit
                stats.triggered_at = start
                out = [token]
                advanced = _advanced(llama, grammar, watch.text[start:])
                if advanced is None:
                    # The token runs on past the trigger into text the grammar refuses: cut it at the
                    # trigger's end (its text before that stays), and the grammar continues from there.
                    advanced = _advanced(llama, grammar, watch.text[start:end])
                    if advanced is None:
                        raise ValueError(
                            f"the grammar does not accept its trigger {watch.text[start:end]!r}: a lazy grammar"
                            ' describes the text starting with the trigger, e.g. root ::= "<tool_call>" ...'
                        )
                    out = llama.tokenize(watch.text[len(watch.text) - len(piece) : end], add_bos=False, special=True)
                samplers[samplers.index(grammar)] = advanced
                api.llama_sampler_free(grammar)
                grammar, check, watch = advanced, _OneTokenCheck(advanced), None
                yield from out
                pending = out
                continue
            if grammar_first:
                token = full.sample(api, ctx, grammar, constrained_chain)
            else:
                token = int(api.llama_sampler_sample(constrained_chain, ctx, -1))
                if not check.allows(token):
                    stats.resampled += 1
                    token = full.sample(api, ctx, grammar, constrained_chain)
            stats.sampled += 1
            if api.llama_vocab_is_eog(vocab, token):
                yield token  # allowed by the grammar: it is complete
                return
            api.llama_sampler_accept(grammar, token)
            yield token
            pending = [token]
    finally:
        for sampler in reversed(samplers):
            api.llama_sampler_free(sampler)


def _chain(llama: Llama, params: GenerationParams, *, penalties: bool) -> Any:
    """Llama.generate's chain (top_k, top_p, min_p, temperature, seeded dist; greedy at temperature 0),
    with its repeat penalty only when ``penalties`` (text outside a grammar)."""
    from llama_cpp import llama_cpp as api

    chain = api.llama_sampler_chain_init(api.llama_sampler_chain_default_params())
    parts = []
    if penalties:
        # The arguments Llama._init_sampler passes, so the unconstrained text is the same token for token.
        parts.append(
            api.llama_sampler_init_penalties(llama._n_vocab, llama.last_n_tokens_size, params.repeat_penalty, 0.0, 0.0)
        )
    temp = float(params.temperature)
    if temp < 0.0:
        parts.append(api.llama_sampler_init_dist(llama._seed))
    elif temp == 0.0:
        parts.append(api.llama_sampler_init_greedy())
    else:
        parts += [
            api.llama_sampler_init_top_k(int(params.top_k)),
            api.llama_sampler_init_top_p(float(params.top_p), 1),
            api.llama_sampler_init_min_p(_MIN_P, 1),
            api.llama_sampler_init_temp(temp),
            api.llama_sampler_init_dist(llama._seed),
        ]
    for part in parts:
        api.llama_sampler_chain_add(chain, part)  # the chain owns it from here
    return chain


class _OneTokenCheck:
    """Whether the grammar allows one token: the grammar sampler applied to a one-candidate array."""

    def __init__(self, grammar: Any) -> None:
        from llama_cpp import llama_cpp as api

        self._api = api
        self._grammar = grammar
        self._one = api.llama_token_data(0, 1.0, 0.0)
        self._array = api.llama_token_data_array(ctypes.pointer(self._one), 1, -1, False)
        self._ref = ctypes.byref(self._array)

    def allows(self, token: int) -> bool:
        one, array = self._one, self._array
        one.id = token  # type: ignore[assignment]  # ctypes converts the int
        one.logit = 1.0
        array.size, array.selected, array.sorted = 1, -1, False  # the grammar sampler keeps .data
        self._api.llama_sampler_apply(self._grammar, self._ref)
        return not math.isinf(one.logit)


class _FullVocab:
    """The whole vocabulary as llama_token_data, grammar applied, then the chain (the slow path)."""

    def __init__(self, n_vocab: int) -> None:
        self._n = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._cur = np.zeros(n_vocab, dtype=_TOKEN_DATA)

    def sample(self, api: Any, ctx: Any, grammar: Any, chain: Any) -> int:
        logits = np.ctypeslib.as_array(api.llama_get_logits_ith(ctx, -1), shape=(self._n,))
        cur = self._cur
        cur["id"] = self._ids  # samplers sort the array in place: refill every time
        cur["logit"] = logits
        cur["p"] = 0.0
        data = cur.ctypes.data_as(api.llama_token_data_p)
        array = api.llama_token_data_array(data, self._n, -1, False)
        api.llama_sampler_apply(grammar, ctypes.byref(array))
        if np.isneginf(cur["logit"]).all():
            raise RuntimeError("the grammar allows no token of the vocabulary here (the model cannot continue it)")
        api.llama_sampler_apply(chain, ctypes.byref(array))
        if array.selected < 0 or array.selected >= array.size:
            raise RuntimeError("the sampler chain selected no token")
        token = int(array.data[array.selected].id)
        api.llama_sampler_accept(chain, token)
        return token


class _TriggerWatch:
    """Finds the first trigger in the generated bytes; looks only at the tail each token (cheap)."""

    def __init__(self, triggers: list[str]) -> None:
        self._anywhere = [t.encode("utf-8") for t in triggers if not t.startswith("^")]
        self._at_start = [t[1:].encode("utf-8") for t in triggers if t.startswith("^") and len(t) > 1]
        self._longest = max((len(t) for t in self._anywhere + self._at_start), default=1)
        self.text = b""

    def feed(self, piece: bytes) -> tuple[int, int] | None:
        """(start, end) byte offsets of the first trigger once the text contains one, else None."""
        before = len(self.text)
        self.text += piece
        if self._at_start:
            stripped = self.text.lstrip()
            for trig in self._at_start:
                if stripped.startswith(trig):
                    start = len(self.text) - len(stripped)
                    return start, start + len(trig)
            self._at_start = [t for t in self._at_start if t.startswith(stripped)]  # those still possible
        if self._anywhere:
            window_start = max(0, before - self._longest + 1)
            hits = [(i, i + len(t)) for t in self._anywhere if (i := self.text.find(t, window_start)) >= 0]
            if hits:
                return min(hits)
        return None


def _advanced(llama: Llama, grammar: Any, text: bytes) -> Any:
    """A copy of ``grammar`` advanced over ``text`` (token by token, each checked first: accepting a token
    the grammar rejects throws inside llama.cpp, an abort), or None when the grammar refuses the text."""
    from llama_cpp import llama_cpp as api

    copy = api.llama_sampler_clone(grammar)
    check = _OneTokenCheck(copy)
    for token in llama.tokenize(text, add_bos=False, special=True):
        if not check.allows(token):
            api.llama_sampler_free(copy)
            return None
        api.llama_sampler_accept(copy, token)
    return copy


def _validator() -> Any:
    """``llm.json_grammar.validate_grammar`` when that module exists (it names the schema feature at
    fault), else None: llama.cpp's NULL check is then the only guard."""
    try:
        module = importlib.import_module("llm.json_grammar")
    except ModuleNotFoundError as exc:
        if exc.name != "llm.json_grammar":
            raise  # the module exists but something it imports is missing: say so
        return None
    return getattr(module, "validate_grammar", None)
