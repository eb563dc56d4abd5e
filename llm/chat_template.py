"""Render chat messages with the model's Jinja chat template into token ids, safely.

Control tokens come only from the template's own markup (DESIGN.md decision 3): the template is
rendered with opaque placeholders instead of message contents, the markup between placeholders is
tokenized with special tokens enabled, and each message content is tokenized as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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

# Private-use code points: never produced by templates, so they mark where contents go.
_OPEN, _CLOSE = "\ue000", "\ue001"
_PLACEHOLDER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")

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
        elif isinstance(block, dict) and block.get("type") in {"reasoning", "thinking"}:
            continue
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"this model accepts text only; got a {kind!r} content block")
    return "".join(parts)


def to_chat_dicts(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages -> ``[{"role", "content"}]`` as chat templates expect."""
    return [{"role": message_role(m), "content": message_text(m)} for m in messages]


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
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(f"chat template error: {message}")

        def strftime_now(fmt: str) -> str:
            return datetime.now().strftime(fmt)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
        self._template = env.from_string(self.source)
        self._trims = self._probe_trim()

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def _probe_trim(self) -> bool:
        """Whether the template strips message contents (Llama 3.1's does: ``content | trim``)."""
        probe = [{"role": "user", "content": f"\t{_OPEN}0{_CLOSE}\t"}]
        try:
            text = self._render(probe, True)
        except Exception:
            return False
        return f"\t{_OPEN}0{_CLOSE}\t" not in text

    def render_segments(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[tuple[str, bool]]:
        """The prompt as ``(text, is_template_markup)`` segments, in order."""
        masked = [{**m, "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(messages)]
        rendered = self._render(masked, add_generation_prompt)
        segments: list[tuple[str, bool]] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(rendered):
            if match.start() > pos:
                segments.append((rendered[pos : match.start()], True))
            content = messages[int(match.group(1))]["content"]
            if self._trims:
                content = content.strip()
            if content:
                segments.append((content, False))
            pos = match.end()
        if pos < len(rendered):
            segments.append((rendered[pos:], True))
        return segments

    def render_text(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt as text (for logging and tracing; tokenization uses :meth:`tokenize`)."""
        return "".join(text for text, _ in self.render_segments(messages, add_generation_prompt))

    def tokenize(
        self, messages: list[dict[str, str]], tokenize: Tokenize, add_generation_prompt: bool = True
    ) -> list[int]:
        ids: list[int] = []
        for text, is_markup in self.render_segments(messages, add_generation_prompt):
            ids.extend(tokenize(text, is_markup))
        if self.add_bos_id is not None and (not ids or ids[0] != self.add_bos_id):
            ids.insert(0, self.add_bos_id)
        return ids
