# ruff: noqa: E501  (the verbatim Llama 3.1 chat template below has two lines over 120 characters)
"""Tiny random-weight GGUF models for tests and benchmarks.

``write_tiny_gguf`` writes a ~0.5 MB llama-architecture GGUF (2 layers, width 64, F32) that
llama-cpp-python loads in milliseconds. Its tokenizer is a real byte-level BPE (``gpt2`` model,
``llama-bpe`` pre-tokenizer) with the Llama 3 (or ChatML) special tokens as CONTROL tokens and
the production chat template, so prompt formatting, special-token handling, token counting and
streaming can be exercised against llama.cpp without a real model. Its output is random bytes:
assert structure, never content.

How likely the end-of-turn token is does not depend on the prompt (``eot``): every token
embedding carries the constant 8.0 in hidden dimension 0, and no layer reads or writes that
dimension (column 0 of the input projections and row 0 of ``attn_output`` / ``ffn_down`` are zero),
so after the final RMS norm dimension 0 is always clearly positive. Column 0 of ``output.weight``
then acts as a per-token logit bias: ``"never"`` gives every control token (end of turn included)
a large negative bias, so greedy and sampled output is byte-level text only; ``"always"`` gives the
end-of-turn token a large positive bias, so the first generated token always ends the turn;
``"random"`` leaves a small random bias (whether a prompt's first greedy token is end-of-turn then
depends on the seed and the prompt). Measured over random prompts of 1-600 tokens (seeds 0-2) the
logit margin is >= 120 either way; greedy "never" text has 33-60 distinct tokens in 64 (seeds 0-9,
chat prompts up to ~3k tokens), the longest run of one token being <= 8. In every mode
the ASCII control bytes other than tab and newline (NUL included) get the same large negative bias,
so generated text never contains them; bytes >= 0x80 do occur, so UTF-8 sequences may be split or
invalid, as with real models' byte tokens.

``gguf`` and ``numpy`` are imported only when a model is written.
"""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Literal

__all__ = [
    "CHATML_SPECIAL_TOKENS",
    "CHATML_TEMPLATE",
    "LLAMA3_SPECIAL_TOKENS",
    "LLAMA31_CHAT_TEMPLATE",
    "write_tiny_gguf",
]

# The official Llama 3.1 Instruct chat template: the "chat_template" of
# meta-llama/Llama-3.1-8B-Instruct's tokenizer_config.json (the same text llama.cpp ships as
# models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja). Copied verbatim; the text was taken from
# two independent public copies of that tokenizer config which agree byte for byte
# (4614 characters, sha256 e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65).
# Note the 3.1 template has no ``strftime_now`` branch (that is 3.2's): the date defaults to "26 Jul 2024".
LLAMA31_CHAT_TEMPLATE = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)

# Special tokens in the order of the real vocabularies (Llama 3: ids 128000.., Qwen2: 151643..).
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|reserved_special_token_2|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
)
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# Architecture.
N_LAYERS = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX_TRAIN = 4096
VOCAB_MULTIPLE = 64  # the vocabulary is padded with reserved control tokens to a multiple of this

# Byte-level BPE merges, in rank order ("left right"). Every merged token is added to the vocabulary;
# a merge may only use tokens that exist before it. "Ġ" is the byte-level form of a space, "Ċ" of "\n".
_MERGES: tuple[str, ...] = (
    *(f"Ġ {c}" for c in "tawsobcmfphidlnre"),
    *(f"{pair[0]} {pair[1]}" for pair in "th he in er an re on en at ou ed is it or es ng nd ll ow ar".split()),
    *("Ġt he", "Ġa nd", "in g", "Ġt o", "Ġi s", "Ġ I", "Ġo f", "Ġi n", "Ġ Ġ", "Ċ Ċ"),
)

_DIM0 = 8.0  # the constant in hidden dimension 0 of every token embedding
_EOT_BIAS = 100.0  # |output.weight[token, 0]| for "never" / "always"
# ASCII control characters other than tab and newline are never generated (in any mode): real models
# do not write them, and a NUL in generated text breaks consumers such as PostgreSQL text columns.
_SUPPRESSED_BYTES = (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F)
# Weight scales (standard deviations). Peaked attention makes the text depend on the context (it
# does not settle into a short loop); small output projections keep the residual stream near the
# embedding scale, so dimension 0 stays large after the final norm and the bias above dominates.
_SCALE_EMBD = 1.0
_SCALE_QKV = 1.0
_SCALE_FFN_IN = 0.5
_SCALE_ATTN_OUT = 0.03
_SCALE_FFN_OUT = 0.02
_SCALE_HEAD = 1.0


@cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character mapping (used by every byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _vocab(template: str) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    """(tokens, token types, merges, special token ids) for a template family."""
    import gguf

    normal = [_bytes_to_unicode()[b] for b in range(256)]
    merges: list[str] = []
    for merge in _MERGES:
        left, right = merge.split(" ")
        if left not in normal or right not in normal:
            raise AssertionError(f"merge {merge!r} uses an unknown token")
        if left + right in normal:
            raise AssertionError(f"duplicate merged token {left + right!r}")
        normal.append(left + right)
        merges.append(merge)

    specials = list(LLAMA3_SPECIAL_TOKENS if template == "llama3" else CHATML_SPECIAL_TOKENS)
    total = -(-(len(normal) + len(specials)) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    reserved = 3 if template == "llama3" else 0  # llama3 already names reserved_special_token_0..2
    while len(normal) + len(specials) < total:
        name = f"<|reserved_special_token_{reserved}|>" if template == "llama3" else f"<|extra_{reserved}|>"
        specials.append(name)
        reserved += 1

    tokens = normal + specials
    types = [int(gguf.TokenType.NORMAL)] * len(normal) + [int(gguf.TokenType.CONTROL)] * len(specials)
    ids = {tok: len(normal) + i for i, tok in enumerate(specials)}
    return tokens, types, merges, ids


def write_tiny_gguf(
    path: str | os.PathLike[str],
    *,
    template: Literal["llama3", "chatml"] = "llama3",
    eot: Literal["random", "never", "always"] = "random",
    seed: int = 0,
    name: str = "tiny-llama3-test",
) -> Path:
    """Write a tiny random-weight llama GGUF to ``path`` and return the path.

    ``template``: "llama3" (Llama 3 special tokens, BOS ``<|begin_of_text|>``, EOS = EOT =
    ``<|eot_id|>``, the official Llama 3.1 Instruct chat template) or "chatml" (``<|im_start|>`` /
    ``<|im_end|>``, EOS = EOT = ``<|im_end|>``, no BOS added).
    ``eot``: "never" (greedy output never ends the turn and contains no control token),
    "always" (the first greedy token is end-of-turn, whatever the prompt) or "random".
    The same ``seed`` gives the same weights; the file is written atomically.
    """
    if template not in ("llama3", "chatml"):
        raise ValueError(f"template must be 'llama3' or 'chatml', not {template!r}")
    if eot not in ("random", "never", "always"):
        raise ValueError(f"eot must be 'random', 'never' or 'always', not {eot!r}")

    import gguf
    import numpy as np

    tokens, types, merges, special_ids = _vocab(template)
    n_vocab = len(tokens)
    if template == "llama3":
        bos, eos = special_ids["<|begin_of_text|>"], special_ids["<|eot_id|>"]
        eom: int | None = special_ids["<|eom_id|>"]
        chat_template, add_bos = LLAMA31_CHAT_TEMPLATE, True
    else:
        bos, eos = special_ids["<|endoftext|>"], special_ids["<|im_end|>"]
        eom = None
        chat_template, add_bos = CHATML_TEMPLATE, False

    rng = np.random.default_rng(seed)

    def normal(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def blind(weight: np.ndarray) -> np.ndarray:
        weight[:, 0] = 0.0  # the layers do not read the constant dimension 0
        return weight

    head_dim = N_EMBD // N_HEAD
    tensors: dict[str, np.ndarray] = {}
    embd = normal(n_vocab, N_EMBD, scale=_SCALE_EMBD)
    embd[:, 0] = _DIM0
    tensors["token_embd.weight"] = embd
    for i in range(N_LAYERS):
        p = f"blk.{i}."
        tensors[p + "attn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        tensors[p + "attn_q.weight"] = blind(normal(N_EMBD, N_EMBD, scale=_SCALE_QKV))
        tensors[p + "attn_k.weight"] = blind(normal(N_HEAD_KV * head_dim, N_EMBD, scale=_SCALE_QKV))
        tensors[p + "attn_v.weight"] = blind(normal(N_HEAD_KV * head_dim, N_EMBD, scale=_SCALE_QKV))
        attn_out = normal(N_EMBD, N_EMBD, scale=_SCALE_ATTN_OUT)
        attn_out[0, :] = 0.0  # writes nothing into hidden dim 0
        tensors[p + "attn_output.weight"] = attn_out
        tensors[p + "ffn_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
        tensors[p + "ffn_gate.weight"] = blind(normal(N_FF, N_EMBD, scale=_SCALE_FFN_IN))
        tensors[p + "ffn_up.weight"] = blind(normal(N_FF, N_EMBD, scale=_SCALE_FFN_IN))
        down = normal(N_EMBD, N_FF, scale=_SCALE_FFN_OUT)
        down[0, :] = 0.0  # writes nothing into hidden dim 0
        tensors[p + "ffn_down.weight"] = down
    tensors["output_norm.weight"] = np.ones(N_EMBD, dtype=np.float32)
    out = normal(n_vocab, N_EMBD, scale=_SCALE_HEAD)
    out[:, 0] = normal(n_vocab, scale=0.05)  # "random": a small bias per token
    out[list(_SUPPRESSED_BYTES), 0] = -_EOT_BIAS  # token id == byte value for the 256 byte tokens
    if eot == "never":
        out[list(special_ids.values()), 0] = -_EOT_BIAS
    elif eot == "always":
        out[eos, 0] = _EOT_BIAS
    tensors["output.weight"] = out

    dest = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp_name, "llama")
        writer.add_name(name)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_context_length(N_CTX_TRAIN)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYERS)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_rope_dimension_count(head_dim)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_vocab_size(n_vocab)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("llama-bpe")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(bos)
        writer.add_eos_token_id(eos)
        writer.add_eot_token_id(eos)
        if eom is not None:
            writer.add_eom_token_id(eom)
        writer.add_add_bos_token(add_bos)
        writer.add_add_eos_token(False)
        writer.add_chat_template(chat_template)
        for tensor_name, array in tensors.items():
            writer.add_tensor(tensor_name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return dest
