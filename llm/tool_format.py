"""Tools, tool calls and tool results for chat templates, and how a template's model writes a call.

Two families of published templates are rendered through the model's own Jinja template, so the model
sees tools exactly as it was trained:

- ``llama3`` (Llama 3.1 Instruct): tools as JSON in the first user message, "Environment: ipython" in
  the system turn, one call per assistant turn written as ``{"name": ..., "parameters": ...}``
  (optionally after ``<|python_tag|>``), results under the ``ipython`` role. An ``AIMessage`` with
  several calls becomes several assistant turns, each followed by its own result (matched by id).
- ``qwen`` (Qwen2.5, Hermes style): ``<tools>`` in the system turn, ``<tool_call>\\n{json}\\n</tool_call>``
  blocks (several per turn), results in ``<tool_response>`` blocks inside a user turn.

Every other template (ChatML without a tools section, the tiny test models' templates, tool-aware
templates of other families whose output we could not parse) gets the **generic** rendering: the tools
are described in the system prompt (ours, or a new one) with the instruction to answer with a JSON
envelope ``{"name": ..., "arguments": ...}`` (one per line for several calls); earlier calls are rendered
as that envelope in the assistant's text and results as a user turn starting with "Tool result". All of
it is message content, so it is tokenized as plain text.

:func:`tool_call_format` tells the grammar and the output parser which of the three applies.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from llm.chat_template import ChatTemplate

ToolKind = Literal["llama3", "qwen", "generic"]

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ToolCallFormat:
    """How a model writes a tool call in its output, for the grammar and the parser.

    A call starts where one of ``triggers`` appears in the answer, or, for ``start_triggers``, only when
    the answer starts with it (leading whitespace aside). One call is ``call_prefix`` + a JSON object
    ``{"name": <tool name>, <arguments_key>: {...}}`` + ``call_suffix``; ``parallel`` says whether
    several calls may follow each other in one answer.
    """

    kind: ToolKind
    triggers: tuple[str, ...]
    start_triggers: tuple[str, ...]
    arguments_key: str
    call_prefix: str
    call_suffix: str
    parallel: bool


LLAMA3_FORMAT = ToolCallFormat(
    kind="llama3",
    triggers=("<|python_tag|>",),  # a control token; the JSON object follows it
    start_triggers=("{",),
    arguments_key="parameters",
    call_prefix="",
    call_suffix="",
    parallel=False,  # the template raises on more than one call per assistant turn
)
QWEN_FORMAT = ToolCallFormat(
    kind="qwen",
    triggers=("<tool_call>",),  # a single (user-defined) token in Qwen2.5's vocabulary
    start_triggers=(),
    arguments_key="arguments",
    call_prefix="<tool_call>\n",
    call_suffix="\n</tool_call>",
    parallel=True,
)
GENERIC_FORMAT = ToolCallFormat(
    kind="generic",
    triggers=(),
    start_triggers=("{",),
    arguments_key="arguments",
    call_prefix="",
    call_suffix="",
    parallel=True,  # one envelope per line
)
FORMATS: dict[str, ToolCallFormat] = {f.kind: f for f in (LLAMA3_FORMAT, QWEN_FORMAT, GENERIC_FORMAT)}

GENERIC_TOOLS_PROMPT = (
    "# Tools\n\n"
    "You can call the following tools. Each is described by a JSON object with its name, what it does and"
    " the JSON Schema of its arguments:\n"
)
GENERIC_CALL_INSTRUCTIONS = (
    "\n\nTo call a tool, answer with only a JSON object of this form, and nothing else:\n"
    '{"name": <tool name>, "arguments": <JSON object of the arguments>}\n'
    "To call several tools, write one such object per line. The results come back in a message that"
    ' starts with "Tool result". If no tool is needed, answer normally.'
)


def tool_call_format(template: ChatTemplate) -> ToolCallFormat:
    """How calls appear in the output of ``template``'s model: "llama3", "qwen" or "generic"."""
    return FORMATS[template.tool_kind]


def source_tool_kind(source: str) -> ToolKind:
    """The family a template's source looks like; :class:`ChatTemplate` confirms it by rendering a probe."""
    if "<tool_call>" in source and "tools" in source:
        return "qwen"
    if "ipython" in source and '"parameters"' in source and "tools" in source:
        return "llama3"
    return "generic"


def check_tool_name(name: object, where: str) -> str:
    """A tool name, checked: it is pasted into template markup, so only ``[A-Za-z0-9_-]{1,64}`` is allowed."""
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise ValueError(
            f"invalid tool name {name!r} in {where}: tool names must be 1-64 characters of letters, digits,"
            " '_' or '-' (they are written into the chat template's markup)"
        )
    return name


def normalize_tools(tools: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    """OpenAI-style tool dicts (what ``convert_to_openai_tool`` returns), checked and copied; None if none."""
    if not tools:
        return None
    checked: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(function, Mapping):
            raise ValueError(
                f"tools[{i}] must be an OpenAI-style tool dict"
                ' {"type": "function", "function": {"name", "description", "parameters"}};'
                " convert tools with langchain_core.utils.function_calling.convert_to_openai_tool"
            )
        check_tool_name(function.get("name"), f"tools[{i}]")
        checked.append(copy.deepcopy(dict(tool)))
    return checked


def one_call_per_turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Split assistant turns with several calls into one turn per call, each followed by its result.

    Llama 3.1's template accepts one call per assistant turn (and raises otherwise); it was trained on
    call, result, call, result. Results are matched to calls by ``tool_call_id``, else in order; results
    that match no call keep their place after the calls.
    """
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(messages):
        message = messages[i]
        calls = message.get("tool_calls") or []
        if len(calls) <= 1:
            out.append(message)
            i += 1
            continue
        j = i + 1
        while j < len(messages) and messages[j].get("role") == "tool":
            j += 1
        results = messages[i + 1 : j]
        call_ids = {c.get("id") for c in calls if c.get("id")}
        by_id = {r["tool_call_id"]: r for r in results if r.get("tool_call_id") in call_ids}
        unmatched = [r for r in results if r.get("tool_call_id") not in call_ids]
        for n, call in enumerate(calls):
            out.append({**message, "content": message.get("content", "") if n == 0 else "", "tool_calls": [call]})
            result = by_id.pop(call.get("id"), None)
            if result is None and unmatched:
                result = unmatched.pop(0)
            if result is not None:
                out.append(result)
        out.extend(unmatched)
        i = j
    return out


def _envelope(call: Mapping[str, Any]) -> str:
    function = call["function"]
    return json.dumps({"name": function["name"], "arguments": function["arguments"]}, ensure_ascii=False)


def generic_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The generic rendering (module docstring): tools, calls and results as plain message text."""
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        content = message.get("content", "")
        if message.get("tool_calls"):
            calls = "\n".join(_envelope(c) for c in message["tool_calls"])
            out.append({"role": role, "content": f"{content}\n{calls}" if content else calls})
        elif role == "tool":
            name = message.get("name")
            text = f"Tool result ({name}):\n{content}" if name else f"Tool result:\n{content}"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n\n" + text
            else:
                out.append({"role": "user", "content": text, "_tool_results": True})
        else:
            out.append({"role": role, "content": content})
    for message in out:
        message.pop("_tool_results", None)
    if tools:
        described = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        text = GENERIC_TOOLS_PROMPT + described + GENERIC_CALL_INSTRUCTIONS
        if out and out[0]["role"] == "system":
            system = out[0]["content"]
            out[0] = {"role": "system", "content": f"{system}\n\n{text}" if system else text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out
