"""The tiny random-weight GGUF generator: llama.cpp loads it, its tokens and template are right,
and its ``eot`` modes control end-of-turn regardless of the prompt."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import jinja2
import pytest
from llama_cpp import Llama

from llm.testing import CHATML_TEMPLATE, LLAMA31_CHAT_TEMPLATE, write_tiny_gguf

LLAMA3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
)
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
USER_TEXTS = ("Hi", "What's 12 times 7?", "Tell me a joke about robots.", "x" * 300, "")


def _load(path: Path, n_ctx: int = 512) -> Llama:
    return Llama(model_path=str(path), n_ctx=n_ctx, verbose=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        (template, eot): write_tiny_gguf(root / f"{template}-{eot}.gguf", template=template, eot=eot)
        for template in ("llama3", "chatml")
        for eot in ("never", "always", "random")
    }


@pytest.fixture
def open_models() -> Iterator[list[Llama]]:
    opened: list[Llama] = []
    yield opened
    for llm in opened:
        llm.close()


def _open(opened: list[Llama], path: Path, n_ctx: int = 512) -> Llama:
    llm = _load(path, n_ctx)
    opened.append(llm)
    return llm


def _prompt(llm: Llama, template: str, user_text: str) -> list[int]:
    """The chat prompt for one user turn, rendered by the model's own template, as token ids."""
    source = llm.metadata["tokenizer.chat_template"]
    rendered = (
        jinja2.Environment()
        .from_string(source)
        .render(
            messages=[{"role": "user", "content": user_text}],
            add_generation_prompt=True,
            bos_token="<|begin_of_text|>" if template == "llama3" else "",
        )
    )
    return llm.tokenize(rendered.encode(), add_bos=False, special=True)


def _greedy(llm: Llama, tokens: list[int], n: int) -> list[int]:
    llm.reset()
    return list(itertools.islice(llm.generate(tokens, temp=0), n))


def _control_ids(llm: Llama, names: tuple[str, ...]) -> set[int]:
    ids = set()
    for name in names:
        token = llm.tokenize(name.encode(), add_bos=False, special=True)
        assert len(token) == 1, name
        ids.add(token[0])
    return ids


# the file --------------------------------------------------------------------------------------------


def test_file_is_small_deterministic_and_seeded(tmp_path: Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=3)
    b = write_tiny_gguf(str(tmp_path / "b.gguf"), seed=3)
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=4)
    assert a == tmp_path / "a.gguf"
    assert isinstance(b, Path)
    assert 100_000 < a.stat().st_size < 1_000_000
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]  # no temp files left


def test_rejects_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="template"):
        write_tiny_gguf(tmp_path / "x.gguf", template="mistral")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eot"):
        write_tiny_gguf(tmp_path / "x.gguf", eot="sometimes")  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_llama31_template_is_the_official_text() -> None:
    # Pinned: the Llama 3.1 Instruct tokenizer_config.json chat_template, byte for byte.
    digest = hashlib.sha256(LLAMA31_CHAT_TEMPLATE.encode()).hexdigest()
    assert digest == "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65"
    rendered = (
        jinja2.Environment()
        .from_string(LLAMA31_CHAT_TEMPLATE)
        .render(
            messages=[{"role": "system", "content": "You are NAILA."}, {"role": "user", "content": " Hi "}],
            add_generation_prompt=True,
            bos_token="<|begin_of_text|>",
        )
    )
    assert rendered == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are NAILA.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


# loading and tokenizer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "expected"), [("llama3", LLAMA31_CHAT_TEMPLATE), ("chatml", CHATML_TEMPLATE)])
def test_loads_with_template_name_and_context(
    models: dict[tuple[str, str], Path], open_models: list[Llama], template: str, expected: str
) -> None:
    llm = _open(open_models, models[(template, "never")], n_ctx=4096)
    assert llm.metadata["tokenizer.chat_template"] == expected
    assert llm.metadata["general.name"] == "tiny-llama3-test"
    assert llm.metadata["llama.context_length"] == "4096"
    assert llm.n_ctx() == 4096


def test_llama3_special_tokens(models: dict[tuple[str, str], Path], open_models: list[Llama]) -> None:
    llm = _open(open_models, models[("llama3", "never")])
    eot = llm.tokenize(b"<|eot_id|>", add_bos=False, special=True)
    assert eot == [llm.token_eos()]
    assert llm.metadata["tokenizer.ggml.eot_token_id"] == str(eot[0])
    assert llm.metadata["tokenizer.ggml.eom_token_id"] == str(_control_ids(llm, ("<|eom_id|>",)).pop())
    # As plain text the markup is ordinary byte-level tokens, none of them special.
    plain = llm.tokenize(b"<|eot_id|>", add_bos=False, special=False)
    assert len(plain) > 1
    assert not set(plain) & _control_ids(llm, LLAMA3_SPECIALS)
    assert llm.detokenize(plain) == b"<|eot_id|>"
    bos = llm.tokenize(b"<|begin_of_text|>", add_bos=False, special=True)
    assert bos == [llm.token_bos()]
    assert llm.tokenize(b"Hi", add_bos=True)[0] == llm.token_bos()
    assert len(_control_ids(llm, LLAMA3_SPECIALS)) == len(LLAMA3_SPECIALS)


def test_chatml_special_tokens(models: dict[tuple[str, str], Path], open_models: list[Llama]) -> None:
    llm = _open(open_models, models[("chatml", "never")])
    assert llm.tokenize(b"<|im_end|>", add_bos=False, special=True) == [llm.token_eos()]
    assert len(llm.tokenize(b"<|im_end|>", add_bos=False, special=False)) > 1
    assert len(_control_ids(llm, CHATML_SPECIALS)) == len(CHATML_SPECIALS)
    assert llm.metadata["tokenizer.ggml.add_bos_token"] == "false"
    assert llm.tokenize(b"Hi", add_bos=True) == llm.tokenize(b"Hi", add_bos=False)  # no BOS is added


def test_byte_level_bpe_round_trips_text(models: dict[tuple[str, str], Path], open_models: list[Llama]) -> None:
    llm = _open(open_models, models[("llama3", "never")])
    text = "Hello the world and then, NAILA! Grüße 🤖\n\nDone."
    ids = llm.tokenize(text.encode(), add_bos=False)
    assert llm.detokenize(ids).decode() == text
    assert len(ids) < len(text.encode())  # merges apply ("Ġt he", "Ġa nd", ...)


# end-of-turn control -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "specials"), [("llama3", LLAMA3_SPECIALS), ("chatml", CHATML_SPECIALS)])
def test_never_generates_text_without_control_tokens(
    models: dict[tuple[str, str], Path], open_models: list[Llama], template: str, specials: tuple[str, ...]
) -> None:
    llm = _open(open_models, models[(template, "never")])
    control = _control_ids(llm, specials)
    n_normal = min(control)  # control tokens sit after all normal (byte-level) tokens
    for text in USER_TEXTS:
        out = _greedy(llm, _prompt(llm, template, text), 64)
        assert len(out) == 64, text
        assert all(t < n_normal for t in out), (text, out)
        assert len(set(out)) >= 20, (text, out)  # random text, not one token (or a short loop) forever
        longest_run = max(len(list(run)) for _, run in itertools.groupby(out))
        assert longest_run <= 16, (text, out)
        text_bytes = llm.detokenize(out)
        assert not {b for b in text_bytes if b < 0x20 and b not in b"\t\n"} and 0x7F not in text_bytes, text_bytes
    llm.reset()
    sampled = list(itertools.islice(llm.generate(_prompt(llm, template, "Hi"), temp=1.0, top_k=0, top_p=1.0), 200))
    assert all(t < n_normal for t in sampled)


@pytest.mark.parametrize("template", ["llama3", "chatml"])
def test_always_ends_the_turn_first(
    models: dict[tuple[str, str], Path], open_models: list[Llama], template: str
) -> None:
    llm = _open(open_models, models[(template, "always")])
    for text in USER_TEXTS:
        assert _greedy(llm, _prompt(llm, template, text), 1) == [llm.token_eos()], text


def test_eot_modes_share_everything_but_the_bias(models: dict[tuple[str, str], Path], open_models: list[Llama]) -> None:
    never = _open(open_models, models[("llama3", "never")])
    random = _open(open_models, models[("llama3", "random")])
    assert never.metadata == random.metadata
    tokens = never.tokenize(b"same tokenizer for all modes", add_bos=True)
    assert random.tokenize(b"same tokenizer for all modes", add_bos=True) == tokens


def test_generation_is_deterministic_across_loads(
    models: dict[tuple[str, str], Path], open_models: list[Llama]
) -> None:
    path = models[("llama3", "never")]
    first, second = _open(open_models, path), _open(open_models, path)
    prompt = _prompt(first, "llama3", "Hi")
    assert _greedy(first, prompt, 48) == _greedy(second, prompt, 48)
