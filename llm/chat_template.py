"""Render chat messages with the model's Jinja chat template into token ids, safely.

Control tokens come only from the template's own markup (DESIGN.md decision 3): the template is
rendered with opaque placeholders instead of message contents, the markup between placeholders is
tokenized with special tokens enabled, and each message content is tokenized as plain text.

Tools, tool calls and tool results (``llm/tool_format.py``) follow the same rule: every string value in
them (tool descriptions and schemas, call arguments, call ids, results) is a placeholder, and the
template's ``tojson`` filter is ours: it writes the JSON text (as ``transformers`` does: key order kept,
no ASCII or HTML escaping) as one more placeholder, so a serialized result or schema is plain text too
instead of an escaped string the placeholder scan would no longer find. Tool names are checked
(``[A-Za-z0-9_-]{1,64}``) because templates paste them into markup.

Plain text is also kept from forming *user-defined* tokens: llama.cpp matches those (Qwen2.5's
``<tool_call>`` and ``</tool_call>``) even when special tokens are off, so a ``<...>`` tag in plain text
that the tokenizer would turn into one token is split after its ``<``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from llm.errors import ModelLoadError
from llm.tool_format import (
    ToolKind,
    check_tool_name,
    generic_messages,
    normalize_tools,
    one_call_per_turn,
    source_tool_kind,
)

# Private-use code points: never produced by templates, so they mark where contents go.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")
# A tag in plain text that may be a user-defined token (``<tool_call>``); checked with the tokenizer.
_TAG = re.compile(r"<[^<>\s]{1,64}>")
# Markup next to plain text that is never part of a special token: moved into the plain segment so the
# boundary is tokenized as the whole rendered text would be (``"arguments": `` + ``{"`` -> `` {"``).
_TRAILING_SAFE = re.compile(r"[ \t]+$")
_LEADING_SAFE = re.compile(r"^[}\]]*[\r\n]*")

CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role']"
    " + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
NAMED_TEMPLATES = {"chatml": CHATML_TEMPLATE, "llama-3": LLAMA3_TEMPLATE, "llama3": LLAMA3_TEMPLATE}

Tokenize = Callable[[str, bool], list[int]]  # (text, special) -> ids


def message_role(message: BaseMessage) -> str:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ToolMessage | FunctionMessage):
        return "tool"
    if isinstance(message, ChatMessage):
        return message.role
    raise ValueError(f"unsupported message type {type(message).__name__}")


def message_text(message: BaseMessage) -> str:
    """Plain text of a message; non-text content blocks (images, audio) are rejected."""
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in {"reasoning", "thinking", "tool_use", "tool_call"}:
            continue  # reasoning is not replayed; calls are rendered from the message's tool_calls
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"this model accepts text only; got a {kind!r} content block")
    return "".join(parts)


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> the dicts chat templates read.

    ``{"role", "content"}``; an ``AIMessage`` with tool calls also has ``tool_calls``
    (``[{"id", "type": "function", "function": {"name", "arguments": dict}}]``, only when there are
    calls: Llama 3.1's template tests for the key); a ``ToolMessage`` has ``tool_call_id`` and, when
    known, ``name``.
    """
    chats: list[dict[str, Any]] = []
    for m in messages:
        chat: dict[str, Any] = {"role": message_role(m), "content": message_text(m)}
        if isinstance(m, AIMessage) and m.tool_calls:
            chat["tool_calls"] = [
                {
                    "id": call.get("id") or "",
                    "type": "function",
                    "function": {"name": check_tool_name(call["name"], "a tool call"), "arguments": call["args"]},
                }
                for call in m.tool_calls
            ]
        elif isinstance(m, ToolMessage):
            chat["tool_call_id"] = m.tool_call_id
            if m.name:
                chat["name"] = check_tool_name(m.name, "a ToolMessage")
        chats.append(chat)
    return chats


class _Masker:
    """The texts behind one render's placeholders; ``strip`` marks message contents (see ``_trims``)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.strip: list[bool] = []

    def mask(self, text: str, strip: bool = False) -> str:
        if not text:
            return text  # templates test contents for emptiness (Qwen: ``if message.content``)
        self.texts.append(text)
        self.strip.append(strip)
        return f"{_OPEN}{len(self.texts) - 1}{_CLOSE}"

    def mask_values(self, value: Any) -> Any:
        """``value`` with every string value (not dict keys: templates read those) masked."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {k: self.mask_values(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_values(v) for v in value]
        return value

    def unmask(self, value: Any) -> Any:
        if isinstance(value, str):
            return _PLACEHOLDER.sub(lambda m: self.texts[int(m.group(1))], value)
        if isinstance(value, Mapping):
            return {self.unmask(k): self.unmask(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.unmask(v) for v in value]
        return value

    def message(self, chat: Mapping[str, Any]) -> dict[str, Any]:
        content = chat.get("content") or ""
        masked = {
            **chat,
            "content": self.mask(content, strip=True) if isinstance(content, str) else self.mask_values(content),
        }
        if chat.get("tool_calls"):
            masked["tool_calls"] = [
                {**call, "id": self.mask(call.get("id") or ""), "function": self.mask_values(call["function"])}
                for call in chat["tool_calls"]
            ]
            for call, original in zip(masked["tool_calls"], chat["tool_calls"], strict=True):
                call["function"]["name"] = check_tool_name(original["function"]["name"], "a tool call")
        if "tool_call_id" in chat:
            masked["tool_call_id"] = self.mask(chat["tool_call_id"] or "")
        return masked


def resolve_template(override: str | None, gguf_template: str | None) -> str:
    """The template to use: an override (name, file path or Jinja text), else the GGUF's own."""
    if override:
        if override in NAMED_TEMPLATES:
            return NAMED_TEMPLATES[override]
        if "{%" in override or "{{" in override:
            return override
        path = Path(override).expanduser()
        if path.is_file():
            return path.read_text(encoding="utf-8")
        raise ValueError(
            f"LLM_CHAT_FORMAT={override!r} is neither a known format ({', '.join(sorted(NAMED_TEMPLATES))}),"
            " a Jinja template, nor an existing template file"
        )
    if gguf_template:
        return gguf_template
    raise ValueError(
        "the GGUF file has no chat template (tokenizer.chat_template); it is probably a base model."
        " Set LLM_CHAT_FORMAT to 'chatml', 'llama-3', a Jinja template or a template file."
    )


@dataclass
class ChatTemplate:
    """A compiled chat template bound to a tokenizer."""

    source: str
    bos_token: str
    eos_token: str
    add_bos_id: int | None  # BOS id to prepend when the model wants one and the template omitted it

    @classmethod
    def for_model(
        cls, *, override: str | None, gguf_template: str | None, bos_token: str, eos_token: str, add_bos_id: int | None
    ) -> ChatTemplate:
        """The template to use (see :func:`resolve_template`), compiled; ModelLoadError when it cannot be."""
        try:
            source = resolve_template(override, gguf_template)
            return cls(source=source, bos_token=bos_token, eos_token=eos_token, add_bos_id=add_bos_id)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        except Exception as exc:
            raise ModelLoadError(f"the chat template could not be compiled: {exc}") from exc

    def __post_init__(self) -> None:
        from jinja2 import pass_context
        from jinja2.runtime import Context
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(f"chat template error: {message}")

        def strftime_now(fmt: str) -> str:
            return datetime.now().strftime(fmt)

        @pass_context
        def tojson(
            context: Context,
            value: Any,
            ensure_ascii: bool = False,
            indent: int | None = None,
            separators: tuple[str, str] | None = None,
            sort_keys: bool = False,
        ) -> str:
            """transformers' ``tojson``, whose output is one more plain-text placeholder."""
            masker: _Masker | None = context.get("_naila_masker")
            if masker is None:
                return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators)
            text = json.dumps(
                masker.unmask(value),
                ensure_ascii=ensure_ascii,
                indent=indent,
                separators=separators,
                sort_keys=sort_keys,
            )
            return masker.mask(text)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
        env.filters["tojson"] = tojson
        self._template = env.from_string(self.source)
        self._trims = self._probe_trim()
        self.tool_kind: ToolKind = self._probe_tool_kind()

    def _render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool,
        tools: list[dict[str, Any]] | None = None,
        masker: _Masker | None = None,
    ) -> str:
        extra: dict[str, Any] = {} if tools is None else {"tools": tools}
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
            _naila_masker=masker,
            **extra,
        )

    def _probe_tool_kind(self) -> ToolKind:
        """The template's tool family, if it really renders tools, a call and a result; else "generic"."""
        kind = source_tool_kind(self.source)
        if kind == "generic":
            return kind
        tool = {"type": "function", "function": {"name": "probe_tool", "description": "probe description"}}
        call = {"id": "c1", "type": "function", "function": {"name": "probe_tool", "arguments": {"k": "probe arg"}}}
        chats: list[dict[str, Any]] = [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "probe result", "tool_call_id": "c1"},
        ]
        try:
            text = "".join(t for t, _ in self._segments(chats, False, [tool], kind))
        except Exception:
            return "generic"
        found = all(w in text for w in ("probe description", "probe_tool", "probe arg", "probe result"))
        return kind if found else "generic"

    def _probe_trim(self) -> bool:
        """Whether the template strips message contents (Llama 3.1's does: ``content | trim``)."""
        probe = [{"role": "user", "content": f"\t{_OPEN}0{_CLOSE}\t"}]
        try:
            text = self._render(probe, True)
        except Exception:
            return False
        return f"\t{_OPEN}0{_CLOSE}\t" not in text

    def render_segments(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[tuple[str, bool]]:
        """The prompt as ``(text, is_template_markup)`` segments, in order.

        ``messages`` as :func:`to_chat_dicts` makes them; ``tools`` OpenAI-style tool dicts. Templates of
        a known tool family (:func:`llm.tool_format.tool_call_format`) render tools, calls and results
        themselves; any other gets the generic rendering of ``llm/tool_format.py``.
        """
        return self._segments(messages, add_generation_prompt, normalize_tools(tools), self.tool_kind)

    def _segments(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool,
        tools: list[dict[str, Any]] | None,
        kind: ToolKind,
    ) -> list[tuple[str, bool]]:
        if kind == "generic":
            messages, tools = generic_messages(messages, tools), None
        elif kind == "llama3":
            messages = [_structured_result(m) for m in one_call_per_turn(messages)]
        masker = _Masker()
        masked = [masker.message(m) for m in messages]
        masked_tools = None if tools is None else [masker.mask_values(t) for t in tools]
        rendered = self._render(masked, add_generation_prompt, masked_tools, masker)
        segments: list[tuple[str, bool]] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(rendered):
            if match.start() > pos:
                segments.append((rendered[pos : match.start()], True))
            index = int(match.group(1))
            text = masker.texts[index]
            if self._trims and masker.strip[index]:
                text = text.strip()
            if text:
                segments.append((text, False))
            pos = match.end()
        if pos < len(rendered):
            segments.append((rendered[pos:], True))
        return _join_boundaries(segments)

    def render_text(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt as text (for logging and tracing; tokenization uses :meth:`tokenize`)."""
        return "".join(text for text, _ in self.render_segments(messages, add_generation_prompt, tools=tools))

    def tokenize(
        self,
        messages: list[dict[str, Any]],
        tokenize: Tokenize,
        add_generation_prompt: bool = True,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[int]:
        ids: list[int] = []
        for text, is_markup in self.render_segments(messages, add_generation_prompt, tools=tools):
            ids.extend(tokenize(text, True) if is_markup else _plain_ids(text, tokenize))
        if self.add_bos_id is not None and (not ids or ids[0] != self.add_bos_id):
            ids.insert(0, self.add_bos_id)
        return ids


def _structured_result(chat: dict[str, Any]) -> dict[str, Any]:
    """A Llama 3.1 tool result that is a JSON object or array, parsed: the template writes it with
    ``tojson`` as JSON (as Meta's prompt format shows results); any other text it writes as a JSON string."""
    content = chat.get("content")
    if chat.get("role") != "tool" or not isinstance(content, str) or not content.lstrip().startswith(("{", "[")):
        return chat
    try:
        parsed = json.loads(content)
    except ValueError:
        return chat
    return {**chat, "content": parsed} if isinstance(parsed, dict | list) else chat


def _join_boundaries(segments: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Move markup that is never part of a special token (spaces before, closing brackets after) into
    the plain text next to it, so the boundary tokenizes as in the whole rendered text; then merge
    adjacent segments of one kind."""
    texts = [text for text, _ in segments]
    markup = [is_markup for _, is_markup in segments]
    for i in range(len(texts)):
        if markup[i]:
            continue
        if i > 0 and markup[i - 1] and (before := _TRAILING_SAFE.search(texts[i - 1])):
            texts[i - 1] = texts[i - 1][: before.start()]
            texts[i] = before.group() + texts[i]
        if i + 1 < len(texts) and markup[i + 1] and (after := _LEADING_SAFE.match(texts[i + 1])) and after.group():
            texts[i + 1] = texts[i + 1][after.end() :]
            texts[i] += after.group()
    joined: list[tuple[str, bool]] = []
    for text, is_markup in zip(texts, markup, strict=True):
        if not text:
            continue
        if joined and joined[-1][1] == is_markup:
            joined[-1] = (joined[-1][0] + text, is_markup)
        else:
            joined.append((text, is_markup))
    return joined


def _plain_ids(text: str, tokenize: Tokenize) -> list[int]:
    """Plain text as tokens, never forming a user-defined token (split after the ``<`` of such a tag)."""
    pieces: list[str] = []
    start = 0
    for match in _TAG.finditer(text):
        if len(tokenize(match.group(), False)) == 1:
            pieces.append(text[start : match.start() + 1])
            start = match.start() + 1
    pieces.append(text[start:])
    return [i for piece in pieces if piece for i in tokenize(piece, False)]
