"""Grammar-constrained decoding (llm.constrained) on the tiny random GGUF.

The tiny model's random weights produce garbage, so valid JSON can only come from the grammar: every
assertion here that output parses would fail without it (one test shows that explicitly).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from llama_cpp.llama_grammar import JSON_GBNF

from llm import ChatLlamaCpp
from llm.chat_template import to_chat_dicts
from llm.constrained import ConstrainedStats, _TriggerWatch, constrained_tokens
from llm.errors import GenerationCancelledError
from llm.generation import Done, GenerationParams
from llm.llama_session import LlamaSession
from llm.load_options import LoadOptions

PROMPT = [SystemMessage("You are NAILA."), HumanMessage("Describe yourself as JSON.")]
ROOT = Path(__file__).resolve().parents[2]

# A small object (a string, an enum, an integer) with a bounded string, so a random model completes it.
OBJECT_GBNF = r"""
root ::= "{" ws "\"name\":" ws name "," ws "\"mood\":" ws mood "," ws "\"age\":" ws age ws "}"
name ::= "\"" [a-zA-Z ]{1,12} "\""
mood ::= "\"happy\"" | "\"sad\""
age ::= "0" | [1-9] [0-9]{0,2}
ws ::= [ ]?
"""
LETTERS_GBNF = r'root ::= "\"" [a-z ]{40} "\""'  # many repeats of few characters: a penalty would show


def make(path: str, **kw: Any) -> ChatLlamaCpp:
    fields: dict[str, Any] = {
        "model_path": path, "n_ctx": 1024, "max_tokens": 200, "temperature": 1.5, "top_k": 0, "top_p": 1.0,
        "repeat_penalty": 1.0, "state_cache_mb": 0,
    }  # fmt: skip
    fields.update(kw)
    return ChatLlamaCpp(**fields)


def params(**kw: Any) -> GenerationParams:
    fields: dict[str, Any] = {
        "stop": [], "max_tokens": 200, "temperature": 1.5, "top_p": 1.0, "top_k": 0, "repeat_penalty": 1.0,
        "seed": 3, "timeout": None,
    }  # fmt: skip
    fields.update(kw)
    return GenerationParams(**fields)


@pytest.fixture(scope="module")
def model(tiny_model: str) -> Any:
    with make(tiny_model) as m:
        yield m


def test_the_structured_grammar_gives_strict_json_for_several_seeds(model: ChatLlamaCpp) -> None:
    free = model.invoke(PROMPT, seed=0, max_tokens=40).text
    with pytest.raises(ValueError):
        json.loads(free)  # without the grammar: garbage
    outputs = set()
    for seed in range(5):
        message = model.invoke(PROMPT, seed=seed, grammar=OBJECT_GBNF)
        assert message.response_metadata["finish_reason"] == "stop"
        value = json.loads(message.text)  # strict: no raw control characters
        assert set(value) == {"name", "mood", "age"} and value["mood"] in ("happy", "sad")
        outputs.add(message.text)
    assert len(outputs) > 1  # the seeds matter: sampling still samples


def test_the_generic_json_grammar_gives_strict_json(model: ChatLlamaCpp) -> None:
    for seed in range(4):
        message = model.invoke(PROMPT, seed=seed, grammar=JSON_GBNF, temperature=0.8, max_tokens=400)
        if message.response_metadata["finish_reason"] == "stop":
            assert isinstance(json.loads(message.text), dict)
        else:  # a random model may wander in an unbounded string until max_tokens: a prefix of JSON
            assert message.text.startswith("{")


@pytest.mark.parametrize("grammar_first", [False, True], ids=["check-sampled-token", "whole-vocabulary"])
def test_both_paths_give_valid_output(model: ChatLlamaCpp, grammar_first: bool) -> None:
    llama = model.llama
    prompt = model.prompt_tokens(PROMPT)
    for seed in (1, 2):
        llama.reset()
        llama.set_seed(seed)
        stats = ConstrainedStats()
        out = bytearray()
        for token in constrained_tokens(
            llama, prompt, params(grammar=OBJECT_GBNF), grammar_first=grammar_first, stats=stats
        ):
            if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                break
            out += llama.detokenize([token])
        json.loads(out.decode())
        assert stats.sampled >= len(out) // 12  # every token went through the grammar
        if grammar_first:
            assert stats.resampled == 0
        else:  # the random model proposes many tokens the grammar refuses: the slow pass catches them
            assert 0 < stats.resampled <= stats.sampled


def test_the_grammar_ends_generation_once_complete(model: ChatLlamaCpp) -> None:
    # The "never" tiny model never ends a turn on its own: here only the grammar can end it.
    message = model.invoke(PROMPT, grammar=r'root ::= "{\"a\":" [0-9] "}"', temperature=0.0, max_tokens=100)
    assert message.response_metadata["finish_reason"] == "stop"
    assert json.loads(message.text).keys() == {"a"}
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] <= 8


def test_max_tokens_cuts_a_constrained_answer(model: ChatLlamaCpp) -> None:
    message = model.invoke(PROMPT, grammar=r'root ::= "\"" [a-z]{30,40} "\""', max_tokens=5)
    assert message.response_metadata["finish_reason"] == "length"
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] == 5
    assert message.text.startswith('"') and not message.text.endswith('"')


def test_repeat_penalty_is_not_applied_under_a_grammar(model: ChatLlamaCpp) -> None:
    # Without a grammar the penalty changes the greedy answer (so it would show under one too) ...
    free = [model.invoke(PROMPT, temperature=0.0, repeat_penalty=rp, max_tokens=30).text for rp in (1.0, 1.8)]
    assert free[0] != free[1]
    # ... under the grammar it does not: repeated characters are not penalised.
    held = [model.invoke(PROMPT, temperature=0.0, repeat_penalty=rp, grammar=LETTERS_GBNF).text for rp in (1.0, 1.8)]
    assert held[0] == held[1]
    assert len(held[0]) == 42


def test_cancel_stops_a_constrained_generation(tiny_model: str) -> None:
    session = LlamaSession()
    session.load(_options(tiny_model))
    try:
        cancel = threading.Event()
        p = params(grammar=r'root ::= "\"" [a-z]{300} "\""', max_tokens=500, cancel=cancel)
        seen = 0
        with pytest.raises(GenerationCancelledError):
            for event in session.generate(to_chat_dicts(PROMPT), p, queue_timeout=None):
                assert not isinstance(event, Done)
                seen += 1
                cancel.set()
        assert seen >= 1
        # The model is free and generates again, constrained, after a cancel.
        again = list(session.generate(to_chat_dicts(PROMPT), params(grammar=OBJECT_GBNF), queue_timeout=None))
        json.loads("".join(e for e in again if isinstance(e, str)))
    finally:
        session.unload()


def test_lazy_grammar_without_trigger_is_exactly_the_free_answer(model: ChatLlamaCpp) -> None:
    for seed in (0, 5):
        kw: dict[str, Any] = {"seed": seed, "temperature": 0.9, "top_k": 40, "top_p": 0.95, "repeat_penalty": 1.3}
        free = model.invoke(PROMPT, max_tokens=60, **kw).text
        lazy = model.invoke(PROMPT, max_tokens=60, grammar=OBJECT_GBNF, grammar_triggers=["<tool_call>"], **kw).text
        assert "<tool_call>" not in free
        assert lazy == free


def test_lazy_grammar_constrains_from_the_trigger_on(model: ChatLlamaCpp) -> None:
    kw: dict[str, Any] = {"seed": 11, "temperature": 0.9, "top_k": 40, "top_p": 0.95}
    free = model.invoke(PROMPT, max_tokens=60, **kw).text
    ascii_runs = [i for i in range(5, len(free) - 2) if free[i : i + 2].isascii() and free[i : i + 2].isalnum()]
    assert ascii_runs, f"no ASCII pair in the free answer to use as a trigger: {free!r}"
    at = ascii_runs[0]
    trigger = free[at : at + 2]
    first = free.find(trigger)  # the first occurrence is where it triggers
    grammar = "root ::= " + json.dumps(trigger) + r' "=" [0-9]{3} "."'
    lazy = model.invoke(PROMPT, max_tokens=60, grammar=grammar, grammar_triggers=[trigger], **kw).text
    assert lazy.startswith(free[:first])  # unconstrained, the same, up to the trigger
    rest = lazy[first:]
    assert rest[:2] == trigger and rest[2] == "=" and rest[3:6].isdigit() and rest[6:] == "."


def test_a_grammar_llama_cpp_refuses_raises_value_error_without_crashing(tiny_model: str) -> None:
    # In a subprocess: a NULL grammar sampler reaching a chain would segfault the process.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import llm.constrained
        from llm import ChatLlamaCpp
        model = ChatLlamaCpp(model_path={tiny_model!r}, n_ctx=512, max_tokens=8, state_cache_mb=0)
        bad = ['root ::= undefined-rule', 'root ::= "unterminated', 'not a grammar', '']
        for validated in (True, False):
            if not validated:  # llama.cpp's own NULL check alone, as when llm.json_grammar is absent
                llm.constrained._validator = lambda: None
            for grammar in bad:
                try:
                    model.invoke("hi", grammar=grammar)
                except ValueError as exc:
                    print("ValueError:", str(exc).splitlines()[0])
                else:
                    print("no error for", repr(grammar))
        print("still works:", bool(model.invoke("hi").text))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert sum(line.startswith("ValueError:") for line in lines) == 8, done.stdout
    assert any("llama_sampler_init_grammar returned NULL" in line for line in lines), done.stdout
    assert lines[-1] == "still works: True"


def test_an_empty_trigger_list_is_refused(model: ChatLlamaCpp) -> None:
    session_params = params(grammar=OBJECT_GBNF, grammar_triggers=[""])
    with pytest.raises(ValueError, match="grammar_triggers is empty"):
        next(constrained_tokens(model.llama, model.prompt_tokens(PROMPT), session_params))


def _options(path: str) -> LoadOptions:
    fields: dict[str, object] = {
        "model_path": path, "fetch_bundle": False, "n_ctx": 1024, "n_batch": 512, "n_threads": None,
        "n_gpu_layers": 0, "use_mmap": True, "flash_attn": False, "kv_cache_type": "f16", "seed": None,
        "chat_format": None, "state_cache_bytes": 0,
    }  # fmt: skip
    return LoadOptions(**fields)  # type: ignore[arg-type]


def test_triggers_are_found_across_token_pieces_and_anchored_ones_only_at_the_start() -> None:
    watch = _TriggerWatch(["<tool_call>"])
    assert watch.feed(b"Sure. <tool") is None
    assert watch.feed(b'_call>{"') == (6, 17)  # split over two pieces, found once complete
    anchored = _TriggerWatch(["^{"])
    assert anchored.feed(b" \n") is None
    assert anchored.feed(b'{"na') == (2, 3)  # after leading whitespace
    late = _TriggerWatch(["^{"])
    assert late.feed(b"Sure ") is None
    assert late.feed(b'{"a": 1}') is None  # "{" later in the text is prose, not a call
