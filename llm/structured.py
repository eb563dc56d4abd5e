"""``ChatLlamaCpp.with_structured_output``: answers as a schema, held to it by a grammar.

``json_schema`` (the default) turns the schema into a GBNF grammar (llm.json_grammar), so the answer is
valid JSON of that schema by construction, even from a small model; ``function_calling`` is one forced
call of a tool made from the schema (llm.tool_calls); ``json_mode`` is any JSON object. The parsed result
is the pydantic class's instance, or a dict for TypedDicts and JSON schemas; ``include_raw`` returns
``{"raw", "parsed", "parsing_error"}`` as LangChain's other chat models do.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.output_parsers import JsonOutputKeyToolsParser, JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from llm.json_grammar import schema_to_grammar

if TYPE_CHECKING:
    from llm.chat_model import ChatLlamaCpp

Method = Literal["json_schema", "function_calling", "json_mode"]
METHODS = ("json_schema", "function_calling", "json_mode")


def structured_output(
    model: ChatLlamaCpp, schema: Any, *, method: str, include_raw: bool, strict: bool | None
) -> Runnable[Any, Any]:
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if schema is None and method != "json_mode":
        raise ValueError(f"method={method!r} needs a schema (a pydantic class, a TypedDict or a JSON schema)")
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    traced = {"kwargs": {"method": method, "strict": strict}}
    parser: Runnable[Any, Any]
    if method == "function_calling":
        tool = convert_to_openai_tool(schema)
        name = tool["function"]["name"]
        llm = model.bind_tools([schema], tool_choice=name, ls_structured_output_format={**traced, "schema": tool})
        parser = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if is_pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        json_schema = _json_schema(schema)
        grammar = schema_to_grammar(
            json_schema if method == "json_schema" else {"type": "object"},
            default_max_length=model.json_max_string_length,
            default_max_items=model.json_max_items,
        )
        llm = model.bind(grammar=grammar, ls_structured_output_format={**traced, "schema": json_schema})
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([failed], exception_key="parsing_error")


def _json_schema(schema: Any) -> dict[str, Any]:
    """``schema`` as a JSON schema; a plain JSON schema dict without a ``title`` (which LangChain's converter
    requires) is taken as it is, so the grammar converter can name what it does not support."""
    if schema is None:
        return {"type": "object"}
    try:
        return convert_to_json_schema(schema)
    except ValueError:
        if isinstance(schema, dict) and "function" not in schema:
            return schema
        raise
