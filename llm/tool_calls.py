"""Tool calling for :class:`llm.chat_model.ChatLlamaCpp`: ``tool_choice``, the grammar of a call, and the
model's text split into content and tool calls as it streams.

The grammar (``llm.json_grammar``) makes a call's JSON valid by construction: one envelope
``{"name": <an allowed tool>, <arguments key>: <that tool's arguments>}`` per call, wrapped the way the
chat template's model writes calls (``llm.tool_format``: Qwen's ``<tool_call>`` blocks, Llama 3.1's bare
object, the generic envelope). ``tool_choice``:

* forced (``"any"``, ``"required"``, ``True``, a tool name or ``{"type": "function", "function": {"name"}}``):
  the grammar applies from the first token and admits exactly one call of the allowed tools;
* ``"auto"`` (the default): a lazy grammar, applied once the output starts a call (the format's trigger),
  so plain answers are sampled exactly as without tools;
* ``"none"``: no grammar, and the output is never read as a call.

:class:`CallStreamer` turns the decoded text into content pieces and ``tool_call_chunks`` (one ``index``
per call, the name in the call's first chunk only, the argument text in pieces). A call that the answer
did not finish (``max_tokens``, a deadline, a cancel, a stop sequence) must never become a valid call, but
LangChain parses a chunk's arguments with ``parse_partial_json``, which turns ``{"inp`` into ``{}``: so the
last chunk of an unfinished call closes its argument text with a mismatched bracket, which that parser
refuses, and LangChain files the call under ``invalid_tool_calls``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llm.json_grammar import DEFAULT_MAX_ITEMS, DEFAULT_MAX_STRING, gbnf_literal, schema_to_grammar
from llm.tool_format import ToolCallFormat, check_tool_name

Choice = Literal["auto", "none", "forced"]
Limits = tuple[int | None, int | None]  # default maxLength of strings, maxItems of arrays (None: unbounded)
_ENVELOPE_RULE = "tool-call-envelope"
# the envelope up to its arguments' first character (the lookahead: until that arrives, whitespace may grow)
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(arguments|parameters)"\s*:\s*(?=\S)')
_REF = re.compile(r"^#/(\$defs|definitions)/")
_BARE_STARTS = ("{", "```")  # an envelope, or one in a Markdown fence, at the start of the answer
_FENCE = re.compile(r"```(?:json)?[ \t]*\n")


@dataclass(frozen=True)
class ToolSetup:
    """What one generation does with its bound tools."""

    tools: list[dict[str, Any]]  # OpenAI-style tool dicts, rendered by the chat template
    choice: Choice
    allowed: tuple[str, ...]  # the tools a call may name
    fmt: ToolCallFormat
    grammar: str | None
    triggers: list[str] | None  # lazy grammar: applied once the text holds one of these


def tool_names(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(t["function"]["name"]) for t in tools]


def resolve_choice(tool_choice: Any, names: Sequence[str]) -> tuple[Choice, tuple[str, ...]]:
    """``tool_choice`` as LangChain and OpenAI spell it → (choice, the tools a call may name)."""
    if tool_choice is None or tool_choice == "auto":
        return "auto", tuple(names)
    if tool_choice == "none" or tool_choice is False:
        return "none", ()
    if tool_choice in ("any", "required") or tool_choice is True:
        return "forced", tuple(names)
    name = tool_choice
    if isinstance(tool_choice, Mapping):
        name = (tool_choice.get("function") or {}).get("name") if tool_choice.get("type") == "function" else None
    if isinstance(name, str) and name in names:
        return "forced", (name,)
    raise ValueError(
        f"tool_choice {tool_choice!r} names no bound tool; use 'auto', 'none', 'any', 'required', True or one of"
        f" {list(names)}"
    )


def _namespaced(schema: Any, prefix: str) -> Any:
    """``schema`` with its local ``$ref``s pointing into ``#/$defs/<prefix>__...`` (hoisted definitions)."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key in ("$defs", "definitions"):
                continue
            if key == "$ref" and isinstance(value, str) and _REF.match(value):
                out[key] = "#/$defs/" + prefix + "__" + _REF.sub("", value)
            else:
                out[key] = _namespaced(value, prefix)
        return out
    if isinstance(schema, list):
        return [_namespaced(item, prefix) for item in schema]
    return schema


def envelope_schema(tools: Sequence[Mapping[str, Any]], allowed: Sequence[str], arguments_key: str) -> dict[str, Any]:
    """One JSON schema for a call of any of ``allowed``: ``{"name": <const>, <arguments_key>: <parameters>}``."""
    defs: dict[str, Any] = {}
    variants = []
    for tool in tools:
        function = tool["function"]
        name = str(function["name"])
        if name not in allowed:
            continue
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        for section in ("$defs", "definitions"):
            for key, value in (parameters.get(section) or {}).items():
                defs[f"{name}__{key}"] = _namespaced(value, name)
        arguments = _namespaced(parameters, name)
        if arguments.get("type") == "object" and "additionalProperties" not in arguments:
            arguments = {**arguments, "additionalProperties": False}  # only the arguments the tool declares
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, arguments_key: arguments},
                "required": ["name", arguments_key],
                "additionalProperties": False,
            }
        )
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def narrowed(tools: list[dict[str, Any]], call_schemas: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``tools`` with the arguments' schemas of ``call_schemas`` put in (a ``ValueError`` names an unknown tool)."""
    names = tool_names(tools)
    unknown = sorted(set(call_schemas) - set(names))
    if unknown:
        raise ValueError(
            f"call_schemas names tools that are not bound: {', '.join(unknown)} (bound: {', '.join(names)})"
        )
    for name, schema in call_schemas.items():
        if not isinstance(schema, Mapping) or schema.get("type", "object") != "object":
            raise ValueError(f"call_schemas[{name!r}] must be a JSON schema of type object, got {schema!r}")
    return [
        {**t, "function": {**t["function"], "parameters": dict(call_schemas[t["function"]["name"]])}}
        if t["function"]["name"] in call_schemas
        else t
        for t in tools
    ]


def call_grammar(
    fmt: ToolCallFormat,
    tools: Sequence[Mapping[str, Any]],
    allowed: Sequence[str],
    *,
    forced: bool,
    limits: Limits | None = None,
) -> str:
    """GBNF for calls of ``allowed`` in ``fmt``: exactly one call when ``forced``; else (a lazy grammar,
    applied from the trigger on) one or, where the format allows it, several."""
    max_length, max_items = limits or (DEFAULT_MAX_STRING, DEFAULT_MAX_ITEMS)
    inner = schema_to_grammar(
        envelope_schema(tools, allowed, fmt.arguments_key), default_max_length=max_length, default_max_items=max_items
    )
    if re.search(rf"^{_ENVELOPE_RULE} ::=", inner, re.M):  # pragma: no cover - the converter's names differ
        raise ValueError(f"rule name {_ENVELOPE_RULE} is taken")
    inner = re.sub(r"^root ::=", f"{_ENVELOPE_RULE} ::=", inner, count=1, flags=re.M)
    one = " ".join(part for part in (_lit(fmt.call_prefix), _ENVELOPE_RULE, _lit(fmt.call_suffix)) if part)
    if forced:
        root = one
    else:  # from the format's trigger, or a bare or fenced envelope at the start (small models write these)
        blocks = f'{one} ("\\n" {one})*' if fmt.parallel else one
        bare = f'{_ENVELOPE_RULE} ("\\n" {_ENVELOPE_RULE})*' if fmt.parallel else _ENVELOPE_RULE
        fenced = f'"```" "json"? "\\n" {_ENVELOPE_RULE} "\\n" "```"'
        root = " | ".join(dict.fromkeys((blocks, bare, fenced)))
    return f"root ::= {root}\n{inner}"


def _lit(text: str) -> str:
    return gbnf_literal(text) if text else ""


def prepare(
    tools: Sequence[Mapping[str, Any]],
    tool_choice: Any,
    fmt: ToolCallFormat,
    limits: Limits | None = None,
    call_schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> ToolSetup:
    """Check the tools, read ``tool_choice`` and build the grammar for one generation. ``call_schemas``: per
    tool name, a narrower JSON schema of its arguments for the grammar (the prompt shows the tools as given,
    so the saved prompt states still match), e.g. a head turn "to the left" admits only negative angles."""
    given = [dict(t) for t in tools]
    names = tool_names(given)
    for name in names:
        check_tool_name(name, "bind_tools")
    choice, allowed = resolve_choice(tool_choice, names)
    if choice == "none" or not allowed:
        return ToolSetup(given, "none", (), fmt, None, None)
    forced = choice == "forced"
    grammar = call_grammar(fmt, narrowed(given, call_schemas or {}), allowed, forced=forced, limits=limits)
    if forced:
        return ToolSetup(given, choice, allowed, fmt, grammar, None)
    triggers = list(fmt.triggers) + ["^" + t for t in dict.fromkeys((*fmt.start_triggers, *_BARE_STARTS))]
    return ToolSetup(given, choice, allowed, fmt, grammar, triggers)


# ---------------------------------------------------------------------------------- reading the output


@dataclass
class Piece:
    """Content text, or one tool call chunk (``index``; ``name`` and ``id`` in a call's first chunk only)."""

    content: str = ""
    call: dict[str, Any] | None = None


@dataclass
class _Call:
    index: int
    start: int  # where the call's text starts in the answer (its prefix included)
    opening: str = ""  # what wraps the envelope: the format's (e.g. <tool_call>), a Markdown fence, or nothing
    closing: str = ""
    name: str | None = None
    id: str | None = None
    args_start: int | None = None
    args_sent: int = 0  # characters of argument text already sent
    end: int | None = None  # where the call's text ends (suffix included)


def _value_end(text: str, start: int) -> int | None:
    """End of the complete JSON value at ``text[start:]``; None while it is incomplete or not JSON."""
    try:
        _, end = json.JSONDecoder().raw_decode(text, start)
    except ValueError:
        return None
    return end


def _breaker(args: str) -> str:
    """Text that makes the unfinished ``args`` unparseable for ``parse_partial_json``: close an open
    string, then a bracket that does not match the innermost open one."""
    stack: list[str] = []
    in_string = escaped = False
    for char in args:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    closer = "]" if not stack or stack[-1] == "{" else "}"
    return ('\\"' if escaped else "") + ('"' if in_string else "") + closer


@dataclass
class CallStreamer:
    """Splits a streamed answer into content and tool call chunks (see the module docstring)."""

    setup: ToolSetup
    text: str = ""
    _content_sent: int = 0
    _calls: list[_Call] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.setup.choice != "none"

    def feed(self, piece: str) -> list[Piece]:
        if not self.active:
            return [Piece(content=piece)] if piece else []
        self.text += piece
        return self._advance(final=False)

    def finish(self) -> list[Piece]:
        """The rest, at the end of the answer; an unfinished call (cut off by ``max_tokens``, a deadline, a
        cancel or a stop sequence: the response's ``finish_reason`` says which) is closed so that it
        cannot parse."""
        if not self.active:
            return []
        out = self._advance(final=True)
        call = self._calls[-1] if self._calls else None
        if call is not None and call.end is None:
            out.extend(self._close_unfinished(call))
        return out

    # -- internals

    def _call_start(self, offset: int) -> int | None:
        """Where a call starts in ``self.text[offset:]`` (absolute), if it does."""
        fmt = self.setup.fmt
        if self.setup.choice == "forced":  # the grammar holds from the first token: one call, nothing else
            return 0 if not self._calls else None
        hits = [self.text.find(t, offset) for t in fmt.triggers]
        found = [h for h in hits if h >= 0]
        if offset == 0 or self._calls:
            stripped = len(self.text) - len(self.text[offset:].lstrip())
            if any(self.text.startswith(t, stripped) for t in (*fmt.start_triggers, *_BARE_STARTS)):
                found.append(stripped)
        return min(found) if found else None

    def _advance(self, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while True:
            call = self._calls[-1] if self._calls else None
            if call is None or call.end is not None:
                offset = call.end if call is not None and call.end is not None else 0
                start = self._call_start(max(offset, self._content_sent))
                if start is None:
                    out.extend(self._content_upto(len(self.text) if final else self._safe_content_end()))
                    return out
                out.extend(self._content_upto(start))
                call = _Call(index=len(self._calls), start=start)
                self._calls.append(call)
            progressed = self._advance_call(call, out)
            if call.end is None or not progressed:
                return out

    def _safe_content_end(self) -> int:
        """Content may go out up to where a trigger could still be starting."""
        fmt = self.setup.fmt
        keep = max((len(t) for t in (*fmt.triggers, *fmt.start_triggers, *_BARE_STARTS)), default=1) - 1
        end = len(self.text) - keep
        if not self._calls and not self.text.strip():
            return self._content_sent  # only whitespace so far: a call may still start
        return max(self._content_sent, end)

    def _content_upto(self, end: int) -> list[Piece]:
        if end <= self._content_sent:
            return []
        text = self.text[self._content_sent : end]
        self._content_sent = end
        return [Piece(content=text)] if text else []

    def _advance_call(self, call: _Call, out: list[Piece]) -> bool:
        fmt = self.setup.fmt
        prefix = fmt.call_prefix.strip()
        if call.args_start is None:
            rest = self.text[call.start :].lstrip()
            if any(len(rest) < len(w) and w.startswith(rest) for w in (prefix, "```json\n") if w):
                return False  # the wrapping may still be arriving
            fence = _FENCE.match(rest)
            if prefix and rest.startswith(prefix):
                call.opening, call.closing = prefix, fmt.call_suffix.strip()
            elif rest.startswith("```"):
                if fence is None:
                    return False
                call.opening, call.closing = fence.group(0), "```"
        lead = len(self.text) - call.start - len(self.text[call.start :].lstrip())
        body = call.start + lead + len(call.opening)
        if call.args_start is None:
            match = _HEADER.match(self.text, body)
            if match is None:
                return False
            call.name = json.loads(f'"{match.group(1)}"')
            call.id = f"call_{uuid.uuid4().hex[:24]}"
            call.args_start = match.end()
            out.append(Piece(call={"name": call.name, "args": "", "id": call.id, "index": call.index}))
        end = _value_end(self.text, call.args_start)
        upto = end if end is not None else len(self.text)
        args = self.text[call.args_start + call.args_sent : upto]
        if args:
            call.args_sent += len(args)
            out.append(Piece(call={"name": None, "args": args, "id": None, "index": call.index}))
        if end is None:
            return False
        suffix = call.closing
        closed = re.compile(r"\s*\}" + (r"\s*" + re.escape(suffix) if suffix else "")).match(self.text, end)
        if closed is None:
            return False
        call.end = closed.end()
        self._content_sent = call.end
        return True

    def _close_unfinished(self, call: _Call) -> list[Piece]:
        out: list[Piece] = []
        if call.args_start is None:  # not even the name: the whole text of the call, as an invalid call
            raw = self.text[call.start :]
            call.id = f"call_{uuid.uuid4().hex[:24]}"
            return [Piece(call={"name": None, "args": raw + _breaker(raw), "id": call.id, "index": call.index})]
        args = self.text[call.args_start : call.args_start + call.args_sent]
        out.append(Piece(call={"name": None, "args": _breaker(args), "id": None, "index": call.index}))
        return out
