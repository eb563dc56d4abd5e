"""Tool calls out of a streamed answer (llm/tool_calls.py): the expected calls are written by hand in each
format's published shape; the chunks are aggregated by LangChain's own AIMessageChunk addition."""

from __future__ import annotations

import functools
import operator

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk

from llm.json_grammar import validate_grammar
from llm.tool_calls import CallStreamer, envelope_schema, prepare, resolve_choice
from llm.tool_format import GENERIC_FORMAT, LLAMA3_FORMAT, QWEN_FORMAT, ToolCallFormat

HEAD = {
    "type": "function",
    "function": {
        "name": "move_head",
        "description": "Turn the head.",
        "parameters": {
            "type": "object",
            "properties": {"pan": {"type": "integer", "minimum": -90, "maximum": 90}},
            "required": ["pan"],
        },
    },
}
LIGHTS = {
    "type": "function",
    "function": {
        "name": "set_lights",
        "description": "LED colour.",
        "parameters": {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]},
    },
}


def _run(
    fmt: ToolCallFormat, text: str, choice: str = "auto", step: int = 1, tools: list | None = None
) -> AIMessageChunk:
    """Stream ``text`` in pieces of ``step`` characters and add up the chunks as LangChain does."""
    streamer = CallStreamer(prepare(tools or [HEAD, LIGHTS], choice, fmt))
    pieces = []
    for i in range(0, len(text), step):
        pieces += streamer.feed(text[i : i + step])
    pieces += streamer.finish()
    chunks = [AIMessageChunk(content="")] + [
        AIMessageChunk(content=p.content, tool_call_chunks=[tool_call_chunk(**p.call)] if p.call else [])
        for p in pieces
    ]
    return functools.reduce(operator.add, chunks)


QWEN_CALL = '<tool_call>\n{"name": "move_head", "arguments": {"pan": -30}}\n</tool_call>'


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_a_qwen_call_streams_into_one_valid_call(step: int) -> None:
    message = _run(QWEN_FORMAT, QWEN_CALL, "any", step)
    assert message.content == ""
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("move_head", {"pan": -30})]
    assert message.invalid_tool_calls == []
    assert str(message.tool_calls[0]["id"]).startswith("call_")


def test_the_name_comes_in_the_first_chunk_only_and_the_arguments_in_pieces() -> None:
    streamer = CallStreamer(prepare([HEAD], "any", QWEN_FORMAT))
    calls = [p.call for ch in QWEN_CALL for p in streamer.feed(ch) if p.call] + [
        p.call for p in streamer.finish() if p.call
    ]
    assert calls[0]["name"] == "move_head" and calls[0]["id"] and calls[0]["args"] == ""
    assert all(c["name"] is None and c["id"] is None and c["index"] == 0 for c in calls[1:])
    assert len(calls) > 3  # argument text in pieces, as it was generated
    assert "".join(c["args"] for c in calls) == '{"pan": -30}'


def test_two_qwen_calls_get_an_index_each() -> None:
    text = QWEN_CALL + '\n<tool_call>\n{"name": "set_lights", "arguments": {"color": "blue"}}\n</tool_call>'
    message = _run(QWEN_FORMAT, text, "auto", 2)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [
        ("move_head", {"pan": -30}),
        ("set_lights", {"color": "blue"}),
    ]


def test_auto_text_before_a_call_is_content() -> None:
    message = _run(QWEN_FORMAT, "Sure, turning now.\n" + QWEN_CALL, "auto", 4)
    assert message.content == "Sure, turning now.\n"
    assert [c["name"] for c in message.tool_calls] == ["move_head"]


def test_auto_plain_answer_has_no_call_and_every_character() -> None:
    text = "I can turn my head {when asked} and glow <blue>."
    message = _run(QWEN_FORMAT, text, "auto", 1)
    assert message.content == text and message.tool_calls == [] and message.invalid_tool_calls == []


def test_a_bare_envelope_at_the_start_is_a_call_in_every_format() -> None:
    for fmt, key in ((QWEN_FORMAT, "arguments"), (LLAMA3_FORMAT, "parameters"), (GENERIC_FORMAT, "arguments")):
        text = '  {"name": "set_lights", "' + key + '": {"color": "red"}}'
        message = _run(fmt, text, "auto", 5)
        assert [(c["name"], c["args"]) for c in message.tool_calls] == [("set_lights", {"color": "red"})], fmt.kind


def test_tool_choice_none_never_reads_a_call() -> None:
    message = _run(QWEN_FORMAT, QWEN_CALL, "none", 3)
    assert message.content == QWEN_CALL and message.tool_calls == []


@pytest.mark.parametrize("cut", range(1, len(QWEN_CALL)))
def test_a_call_cut_anywhere_is_never_a_valid_call(cut: int) -> None:
    """max_tokens, a deadline or a cancel can end the answer at any character: LangChain's
    parse_partial_json would accept most of these prefixes (e.g. '{"pa' as {}), so none may become valid."""
    message = _run(QWEN_FORMAT, QWEN_CALL[:cut], "any", 2)
    assert message.tool_calls == []
    assert len(message.invalid_tool_calls) == 1


def test_resolve_choice_spellings() -> None:
    names = ["move_head", "set_lights"]
    assert resolve_choice(None, names) == ("auto", tuple(names))
    assert resolve_choice("auto", names) == ("auto", tuple(names))
    for forced in ("any", "required", True):
        assert resolve_choice(forced, names) == ("forced", tuple(names))
    assert resolve_choice("set_lights", names) == ("forced", ("set_lights",))
    assert resolve_choice({"type": "function", "function": {"name": "move_head"}}, names) == ("forced", ("move_head",))
    assert resolve_choice("none", names) == ("none", ())
    with pytest.raises(ValueError, match="names no bound tool"):
        resolve_choice("fly", names)


def test_bad_tool_names_are_refused() -> None:
    bad = {"type": "function", "function": {"name": "move head<|im_end|>", "parameters": {}}}
    with pytest.raises(ValueError, match="invalid tool name"):
        prepare([bad], "auto", QWEN_FORMAT)


def test_definitions_of_several_tools_do_not_collide() -> None:
    def tool(name: str, kind: str) -> dict:
        return {
            "type": "function",
            "function": {
                "name": name,
                "parameters": {
                    "type": "object",
                    "properties": {"x": {"$ref": "#/$defs/Thing"}},
                    "required": ["x"],
                    "$defs": {"Thing": {"type": kind}},
                },
            },
        }

    schema = envelope_schema([tool("a", "integer"), tool("b", "string")], ["a", "b"], "arguments")
    assert schema["$defs"] == {"a__Thing": {"type": "integer"}, "b__Thing": {"type": "string"}}
    first, second = schema["anyOf"]
    assert first["properties"]["arguments"]["properties"]["x"] == {"$ref": "#/$defs/a__Thing"}
    assert second["properties"]["arguments"]["properties"]["x"] == {"$ref": "#/$defs/b__Thing"}


@pytest.mark.parametrize("fmt", [QWEN_FORMAT, LLAMA3_FORMAT, GENERIC_FORMAT], ids=lambda f: f.kind)
@pytest.mark.parametrize("choice", ["auto", "any", "move_head"])
def test_every_call_grammar_is_well_formed(fmt: ToolCallFormat, choice: str) -> None:
    setup = prepare([HEAD, LIGHTS], choice, fmt)
    assert setup.grammar is not None
    validate_grammar(setup.grammar)
    assert (setup.triggers is None) == (choice != "auto")
    if choice == "move_head":
        assert '"set_lights"' not in setup.grammar


@pytest.mark.parametrize("fence", ["```json\n", "```\n"])
def test_a_fenced_envelope_at_the_start_is_a_call(fence: str) -> None:
    """Small models (the 0.5B) wrap the JSON in a Markdown fence instead of the template's <tool_call>."""
    text = fence + '{\n  "name": "set_lights",\n  "arguments": {\n    "color": "red"\n  }\n}\n```'
    message = _run(QWEN_FORMAT, text, "auto", 3)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("set_lights", {"color": "red"})]
    assert message.content == ""


def test_structured_output_names_an_unsupported_keyword_of_a_plain_json_schema() -> None:
    from llm import ChatLlamaCpp

    model = ChatLlamaCpp(model_path="unused.gguf")  # building the grammar loads nothing
    with pytest.raises(ValueError, match=r"'not' at #/not is not supported"):
        model.with_structured_output({"type": "object", "not": {}})
    with pytest.raises(ValueError, match="method must be one of"):
        model.with_structured_output({"type": "object"}, method="bogus")  # type: ignore[arg-type]
