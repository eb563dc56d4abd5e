"""JSON Schema → GBNF on a corpus of schemas, checked by a GBNF recogniser written here in Python.

The recogniser reads the grammar with :func:`llm.json_grammar.parse_grammar` (the same parse that
:func:`validate_grammar` does) and decides whether a whole text matches ``root``: each corpus case lists
valid values (each written with ``json.dumps`` in several styles: default, compact, indented, non-ASCII
kept) that must be accepted and invalid texts that must be rejected. ``tests/integration/test_grammar_safety.py``
runs the same corpus through llama.cpp's own grammar sampler.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NotRequired, Optional, Union

import pytest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from typing_extensions import TypedDict  # pydantic needs typing_extensions' TypedDict on Python < 3.12

from llm.json_grammar import (
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_STRING,
    Chars,
    Group,
    Node,
    Ref,
    Repeat,
    parse_grammar,
    schema_to_grammar,
    validate_grammar,
)

# ------------------------------------------------------------------------------------------ recogniser


class Recogniser:
    """Whether a text is in the language of a GBNF grammar (no left recursion: validate_grammar refuses it)."""

    def __init__(self, grammar: str) -> None:
        self.rules = parse_grammar(grammar)
        self.text = ""
        self.memo: dict[tuple[int, int], frozenset[int]] = {}

    def accepts(self, text: str) -> bool:
        self.text, self.memo = text, {}
        return len(text) in self.ends(self.rules["root"], 0)

    def ends(self, node: Node, pos: int) -> frozenset[int]:
        key = (id(node), pos)
        if key not in self.memo:
            self.memo[key] = frozenset()  # a cycle reached without consuming input adds nothing
            self.memo[key] = self._ends(node, pos)
        return self.memo[key]

    def _ends(self, node: Node, pos: int) -> frozenset[int]:
        if isinstance(node, Chars):
            if pos >= len(self.text):
                return frozenset()
            cp = ord(self.text[pos])
            inside = any(lo <= cp <= hi for lo, hi in node.ranges)
            return frozenset({pos + 1}) if inside != node.negated else frozenset()
        if isinstance(node, Ref):
            return self.ends(self.rules[node.name], pos)
        if isinstance(node, Group):
            out: set[int] = set()
            for alternative in node.alternatives:
                reach = {pos}
                for item in alternative:
                    reach = {e for p in reach for e in self.ends(item, p)}
                    if not reach:
                        break
                out |= reach
            return frozenset(out)
        assert isinstance(node, Repeat)
        reach, out, count = {pos}, set(), 0
        if node.min == 0:
            out.add(pos)
        while reach and (node.max is None or count < node.max):
            reach = {e for p in reach for e in self.ends(node.node, p)}
            count += 1
            if count >= node.min:
                if node.max is None:
                    reach -= out
                out |= reach
        return frozenset(out)


def instance_texts(value: Any) -> list[str]:
    """``value`` as JSON in the styles a model or a program writes it."""
    styles = [
        json.dumps(value),
        json.dumps(value, separators=(",", ":")),
        json.dumps(value, indent=2),
        json.dumps(value, ensure_ascii=False),
    ]
    return list(dict.fromkeys(styles))


# ------------------------------------------------------------------------------------------ corpus


class Color(StrEnum):
    RED = "red"
    GREEN = "green"
    BLUE = "blue"


class Person(BaseModel):
    """A person (pydantic adds this docstring as a description: ignored)."""

    name: str = Field(description="full name", title="Name")
    age: int


class WithOptional(BaseModel):
    name: str
    nickname: Optional[str] = None  # noqa: UP045 - the Optional spelling, as users write it
    score: float | None = None


class Paint(BaseModel):
    color: Color
    finish: Literal["matte", "gloss"] = "matte"


class Collections(BaseModel):
    tags: list[str]
    counts: dict[str, int]
    pair: tuple[int, str]


class Address(BaseModel):
    city: str
    zip_code: str = Field(pattern=r"^\d{5}$")


class Company(BaseModel):
    name: str
    address: Address
    staff: list[Person] = Field(max_length=3)


class Bounded(BaseModel):
    percent: int = Field(ge=0, le=100)
    level: int = Field(gt=-5, lt=5)
    ratio: float = Field(ge=0, le=1)
    code: str = Field(min_length=2, max_length=4)


class Stamped(BaseModel):
    day: dt.date
    at: dt.datetime
    clock: dt.time
    ident: uuid.UUID


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flag: bool
    nothing: None = None


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Union[Cat, Dog] = Field(discriminator="kind")  # noqa: UP007 - the discriminated-union spelling


class Movie(TypedDict):
    title: str
    year: int
    rating: NotRequired[float]


class HeadMove(BaseModel):
    """A robot tool's arguments: the mechanical range as hard bounds."""

    pan: float = Field(ge=-90, le=90)
    tilt: int = Field(ge=-30, le=30)
    speed: Literal["slow", "normal", "fast"] = "normal"


_UUID = "123e4567-e89b-12d3-a456-426614174000"


@dataclass
class Case:
    name: str
    schema: dict[str, Any]
    valid: list[Any]
    invalid: list[str]
    adapter: Any = None  # a pydantic type whose validation the valid values must pass
    extra: dict[str, Any] = field(default_factory=dict)


def _model(model: Any, valid: list[Any], invalid: list[str]) -> Case:
    adapter = TypeAdapter(model)
    return Case(getattr(model, "__name__", str(model)), adapter.json_schema(), valid, invalid, adapter)


CORPUS: list[Case] = [
    _model(Person, [{"name": "Ada", "age": 36}, {"name": "", "age": -1}], ['{"name": "Ada"}']),
    _model(
        WithOptional,
        [{"name": "a"}, {"name": "a", "nickname": None}, {"name": "a", "nickname": "b", "score": 1.5e-05}],
        ['{"name": "a", "nickname": 3}', '{"nickname": "b"}', '{"name": "a", "score": "x"}'],
    ),
    _model(
        Paint,
        [{"color": "red"}, {"color": "blue", "finish": "gloss"}],
        ['{"color": "pink"}', '{"color": "red", "finish": "shiny"}'],
    ),
    _model(
        Collections,
        [
            {"tags": [], "counts": {}, "pair": [1, "x"]},
            {"tags": ["a", "b"], "counts": {"x": 1, "é": -2}, "pair": [0, ""]},
        ],
        [
            '{"tags": [1], "counts": {}, "pair": [1, "x"]}',
            '{"tags": [], "counts": {"x": "1"}, "pair": [1, "x"]}',
            '{"tags": [], "counts": {}, "pair": [1, "x", 2]}',
        ],
    ),
    _model(
        Company,
        [{"name": "c", "address": {"city": "Oslo", "zip_code": "01234"}, "staff": [{"name": "a", "age": 1}]}],
        [
            '{"name": "c", "address": {"city": "Oslo", "zip_code": "0123"}, "staff": []}',
            '{"name": "c", "address": {"city": "Oslo", "zip_code": "0123a"}, "staff": []}',
            '{"name": "c", "address": {"city": "O", "zip_code": "01234"}, "staff": ['
            + ", ".join(['{"name": "a", "age": 1}'] * 4)
            + "]}",
        ],
    ),
    _model(
        Bounded,
        [
            {"percent": 0, "level": -4, "ratio": 0, "code": "ab"},
            {"percent": 100, "level": 4, "ratio": 1.0, "code": "abcd"},
            {"percent": 57, "level": 0, "ratio": 0.25, "code": "xyz"},
        ],
        [
            '{"percent": 101, "level": 0, "ratio": 0.5, "code": "ab"}',
            '{"percent": -1, "level": 0, "ratio": 0.5, "code": "ab"}',
            '{"percent": 5, "level": 5, "ratio": 0.5, "code": "ab"}',
            '{"percent": 5, "level": -5, "ratio": 0.5, "code": "ab"}',
            '{"percent": 5, "level": 0, "ratio": 1.01, "code": "ab"}',
            '{"percent": 5, "level": 0, "ratio": -0.1, "code": "ab"}',
            '{"percent": 5, "level": 0, "ratio": 0.5, "code": "abcde"}',
            '{"percent": 5, "level": 0, "ratio": 0.5, "code": "a"}',
            '{"percent": 05, "level": 0, "ratio": 0.5, "code": "ab"}',
        ],
    ),
    _model(
        Stamped,
        [
            {
                "day": "2024-02-29",
                "at": "2024-01-01T12:30:00Z",
                "clock": "23:59:59.123456",
                "ident": "123e4567-e89b-12d3-a456-426614174000",
            },
            {
                "day": "1999-12-31",
                "at": "2024-01-01T12:30:00.5+02:00",
                "clock": "00:00:00",
                "ident": "123E4567-E89B-12D3-A456-426614174000",
            },
        ],
        [
            '{"day": "2024-13-01", "at": "2024-01-01T12:30:00Z", "clock": "00:00:00", "ident": "' + _UUID + '"}',
            '{"day": "2024-01-01", "at": "2024-01-01T25:30:00Z", "clock": "00:00:00", "ident": "' + _UUID + '"}',
            '{"day": "2024-01-01", "at": "2024-01-01T12:30:00Z", "clock": "24:00:00", "ident": "' + _UUID + '"}',
            '{"day": "2024-01-01", "at": "2024-01-01T12:30:00Z", "clock": "00:00:00", "ident": "not-a-uuid"}',
        ],
    ),
    _model(
        Strict, [{"flag": True}, {"flag": False, "nothing": None}], ['{"flag": true, "extra": 1}', '{"flag": 1}', "{}"]
    ),
    _model(
        Tree,
        [{"label": "a"}, {"label": "a", "children": [{"label": "b", "children": [{"label": "c"}]}]}],
        ['{"label": "a", "children": [{"children": []}]}', '{"label": "a", "children": {}}'],
    ),
    _model(
        Pet,
        [{"pet": {"kind": "cat", "lives": 9}}, {"pet": {"kind": "dog", "good": True}}],
        [
            '{"pet": {"kind": "cat", "lives": 10}}',
            '{"pet": {"kind": "cow", "good": true}}',
            '{"pet": {"kind": "dog", "lives": 1}}',
        ],
    ),
    _model(
        Movie,
        [{"title": "Up", "year": 2009}, {"title": "Up", "year": 2009, "rating": 8.3}],
        ['{"title": "Up"}', '{"title": "Up", "year": 2009.5}', '{"title": "Up", "year": 2009, "rating": "8"}'],
    ),
    _model(list[Person], [[], [{"name": "a", "age": 1}, {"name": "b", "age": 2}]], ['[{"name": "a"}]', "{}"]),
    _model(
        HeadMove,
        [
            {"pan": -90, "tilt": 30},
            {"pan": 45.5, "tilt": -30, "speed": "fast"},
            {"pan": 90.0, "tilt": 0},
            {"pan": -89.99, "tilt": 1},
        ],
        [
            '{"pan": 91, "tilt": 0}',
            '{"pan": 90.5, "tilt": 0}',
            '{"pan": -90.01, "tilt": 0}',
            '{"pan": 0, "tilt": 31}',
            '{"pan": 0, "tilt": 1.5}',
            '{"pan": 1e2, "tilt": 0}',
            '{"pan": 0, "tilt": 0, "speed": "warp"}',
        ],
    ),
    # hand-written schemas
    Case(
        "string",
        {"type": "string"},
        ["", 'a\nb\t"q"\\', "é ☃ 😀", "\x7f\x01"],
        ['"a\nb"', '"tab\there"', '"\x01"', '"unterminated', '"bad \\q escape"', '"a"b"'],
    ),
    Case(
        "pattern-d-w-s",
        {"type": "string", "pattern": r"^\d{2}\s\w+-[A-F]?$"},
        ["12 ab_9-", "00 x-F"],
        ['"1 ab-"', '"12 a b-"', '"12\tab-"', '"12 ab-G"', '"12 é-"'],
    ),
    Case(
        "pattern-unanchored",
        {"type": "string", "pattern": "ab+c"},
        ["abc", "xxabbbcyy", 'q"abc'],
        ['"ac"', '"a\nabc"', '"x"abc"'],
    ),
    Case(
        "pattern-classes",
        {"type": "string", "pattern": r"^[^a-c]\.[\"\\]x*(?:y|z){1,2}$"},
        ['d."y', "z.\\xxzz", "\n.\\y"],
        ['"a.\\"y"', '"dx\\"y"', '"d.\\"yyy"', '"d.\\"y\\"', '"d.ay"'],
    ),
    Case(
        "integer-bounds",
        {"type": "integer", "minimum": -1234, "maximum": 56789},
        [-1234, -999, -1, 0, 7, 10, 999, 56789, 50000],
        ["-1235", "56790", "99999", "-0", "01", "1.0", "1e3"],
    ),
    Case(
        "integer-exclusive",
        {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
        [1, 50, 99],
        ["0", "100", "-1"],
    ),
    Case(
        "integer-negative",
        {"type": "integer", "minimum": -50, "maximum": -10},
        [-50, -10, -23],
        ["-9", "-51", "0", "10"],
    ),
    Case("integer-min-only", {"type": "integer", "minimum": 18}, [18, 19, 25, 100, 123456], ["17", "9", "-18", "0"]),
    Case(
        "number-exclusive",
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        [0.001, 0.5, 1, 1.0, 1.00],
        ["0", "0.0", "-0.5", "1.01", "2"],
    ),
    Case(
        "number-negative-range",
        {"type": "number", "minimum": -10, "exclusiveMaximum": -2},
        [-10, -10.0, -2.5, -9.999, -3],
        ["-2", "-2.0", "-10.5", "0", "5"],
    ),
    Case("nullable", {"type": ["string", "null"], "maxLength": 3}, ["abc", None, ""], ['"abcd"', "1", "nul"]),
    Case(
        "anyOf-mixed",
        {"anyOf": [{"type": "integer"}, {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2}]},
        [3, [True], [False, True]],
        ["[]", "[true, false, true]", '"3"'],
    ),
    Case(
        "allOf-objects",
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                {"$ref": "#/definitions/B"},
            ],
            "definitions": {"B": {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}},
        },
        [{"a": 1, "b": "x"}],
        ['{"a": 1}', '{"b": "x"}', '{"a": "1", "b": "x"}'],
    ),
    Case(
        "additional-properties-schema",
        {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "required": ["id"],
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 10},
        },
        [{"id": 1}, {"id": 1, "x": 2.5, "y": 10}, {"id": 1, "i": 3, "idx": 0}],
        ['{"id": 1, "x": 11}', '{"id": 1, "x": "a"}', '{"id": 1, "id": 2}', '{"x": 1}'],
    ),
    Case(
        "additional-true",
        {"type": "object", "additionalProperties": True},
        [{}, {"a": [1, {"b": None}], "c": "d"}],
        ["[]", '{"a": }', '{"a": "\x01"}'],
    ),
    Case(
        "const-and-enum",
        {
            "type": "object",
            "properties": {"v": {"const": {"k": [1, "x"]}}, "e": {"enum": [1, "one", None, True]}},
            "required": ["v", "e"],
        },
        [{"v": {"k": [1, "x"]}, "e": 1}, {"v": {"k": [1, "x"]}, "e": None}, {"v": {"k": [1, "x"]}, "e": "one"}],
        ['{"v": {"k": [1]}, "e": 1}', '{"v": {"k": [1, "x"]}, "e": 2}', '{"v": {"k": [1, "x"]}, "e": false}'],
    ),
    Case(
        "array-bounds",
        {"type": "array", "items": {"type": "string", "maxLength": 2}, "minItems": 2, "maxItems": 3},
        [["a", "b"], ["", "ab", "c"]],
        ['["a"]', '["a", "b", "c", "d"]', '["abc", "b"]', '["a",, "b"]'],
    ),
    Case("any-value", {}, [None, 1, -2.5e10, "s", [1, [2]], {"a": {"b": [True]}}], ["nope", "[1,]", '{"a" 1}', '"\n"']),
    Case(
        "local-ref-defs",
        {
            "$ref": "#/$defs/Point",
            "$defs": {
                "Point": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                    "required": ["x", "y"],
                }
            },
        },
        [{"x": 1, "y": -2}],
        ['{"x": 1}', '{"x": 1, "y": 2, "z": 3}'],
    ),
]


@dataclass
class Defect:
    """A measured defect of llama-cpp-python 0.3.36's bundled converter: ``bad`` is wrong and it lets it through
    (or it yields a grammar llama.cpp refuses)."""

    name: str
    schema: dict[str, Any]
    good: str
    bad: str


DEFECT_CASES = [
    Defect("raw control character in a string", {"type": "string"}, '"a\\nb"', '"a\nb"'),
    Defect("pattern with \\d", {"type": "string", "pattern": r"^\d+$"}, '"123"', '"12a"'),
    Defect("pattern with \\w", {"type": "string", "pattern": r"^\w{2}$"}, '"a_"', '"a-"'),
    Defect("integer bounds ignored", {"type": "integer", "minimum": 0, "maximum": 10}, "7", "11"),
    Defect("number bounds ignored", {"type": "number", "minimum": -1, "maximum": 1}, "0.5", "1.5"),
    Defect("pattern dot admits a raw quote", {"type": "string", "pattern": "^a.c$"}, '"a\\"c"', '"a"c"'),
]

UNSUPPORTED_SCHEMAS: list[tuple[dict[str, Any], str]] = [
    ({"type": "object", "properties": {"x": {"not": {"type": "string"}}}}, "'not' at #/properties/x/not"),
    ({"$ref": "https://example.com/schema.json"}, "'$ref' at #/$ref"),
    ({"type": "object", "properties": {"a": {"$ref": "other.json#/defs/A"}}}, "'$ref' at #/properties/a/$ref"),
    ({"if": {"type": "string"}, "then": {"maxLength": 3}}, "'if' at #/if"),
    (
        {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
        "'patternProperties' at #/patternProperties",
    ),
    ({"type": "string", "pattern": "^(?=a)b$"}, "'pattern' at #/pattern"),
    ({"type": "array", "items": {"type": "string", "pattern": r"(a)\1"}}, "'pattern' at #/items/pattern"),
    ({"type": "string", "pattern": r"\bword\b"}, "'pattern' at #/pattern"),
    ({"type": "string", "pattern": "[a-"}, "'pattern' at #/pattern"),
    ({"type": "number", "minimum": 0.5}, "'minimum' at #/minimum"),
    ({"type": "integer", "multipleOf": 5}, "'multipleOf' at #/multipleOf"),
    ({"$ref": "#/$defs/Missing"}, "'$ref' at #/$ref"),
]


# ------------------------------------------------------------------------------------------ tests


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 25
    assert len({c.name for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_corpus_grammar_accepts_valid_and_rejects_invalid_instances(case: Case) -> None:
    grammar = schema_to_grammar(case.schema)
    validate_grammar(grammar)
    recogniser = Recogniser(grammar)
    for value in case.valid:
        if case.adapter is not None:
            case.adapter.validate_python(value)  # the example itself is valid
        for text in instance_texts(value):
            assert recogniser.accepts(text), f"{case.name}: valid {text!r} rejected\n{grammar}"
    for text in case.invalid:
        if case.adapter is not None:
            with pytest.raises(ValueError):  # the example itself is invalid (pydantic's ValidationError)
                case.adapter.validate_json(text, strict=True)
        assert not recogniser.accepts(text), f"{case.name}: invalid {text!r} accepted\n{grammar}"


@pytest.mark.parametrize("defect", DEFECT_CASES, ids=lambda d: d.name)
def test_defects_of_the_bundled_converter_are_fixed(defect: Defect) -> None:
    recogniser = Recogniser(schema_to_grammar(defect.schema))
    assert recogniser.accepts(defect.good)
    assert not recogniser.accepts(defect.bad)


def test_strings_accepted_by_the_grammar_parse_with_strict_json() -> None:
    """Every one-character string the grammar admits is strict JSON (the control-character defect)."""
    recogniser = Recogniser(schema_to_grammar({"type": "string", "pattern": "^.$"}))
    any_string = Recogniser(schema_to_grammar({"type": "string"}))
    for cp in [*range(0, 0x80), 0xA0, 0x2028, 0xFFFF, 0x1F600]:
        text = '"' + chr(cp) + '"'
        for r in (recogniser, any_string):
            if r.accepts(text):
                assert json.loads(text, strict=True) == chr(cp)
    assert not any_string.accepts('"\x1f"') and any_string.accepts('"\\u001f"')


@pytest.mark.parametrize(("schema", "feature"), UNSUPPORTED_SCHEMAS)
def test_unsupported_features_raise_naming_the_feature_and_pointer(schema: dict[str, Any], feature: str) -> None:
    with pytest.raises(ValueError) as info:
        schema_to_grammar(schema)
    assert feature in str(info.value)


def test_pattern_whose_grammar_llama_cpp_could_not_run_is_refused() -> None:
    with pytest.raises(ValueError, match=r"would not work in llama\.cpp.*can be empty"):
        schema_to_grammar({"type": "string", "pattern": "^(a*)*$"}, default_max_length=None)
    schema_to_grammar({"type": "string", "pattern": "^(a*)*$"})  # bounded by the default: no cycle


def test_left_recursive_schema_is_refused() -> None:
    schema = {"$ref": "#/$defs/A", "$defs": {"A": {"anyOf": [{"$ref": "#/$defs/A"}, {"type": "null"}]}}}
    with pytest.raises(ValueError, match="left recursion"):
        schema_to_grammar(schema)


def test_default_string_and_array_bounds_and_none_disables_them() -> None:
    assert (DEFAULT_MAX_STRING, DEFAULT_MAX_ITEMS) == (512, 32)
    text_at, text_over = json.dumps("x" * DEFAULT_MAX_STRING), json.dumps("x" * (DEFAULT_MAX_STRING + 1))
    bounded = Recogniser(schema_to_grammar({"type": "string"}))
    assert bounded.accepts(text_at) and not bounded.accepts(text_over)
    unbounded = Recogniser(schema_to_grammar({"type": "string"}, default_max_length=None))
    assert unbounded.accepts(json.dumps("x" * 3000))
    short = Recogniser(schema_to_grammar({"type": "string"}, default_max_length=4))
    assert short.accepts('"abcd"') and not short.accepts('"abcde"')
    explicit = Recogniser(schema_to_grammar({"type": "string", "maxLength": 600}))
    assert explicit.accepts(json.dumps("x" * 600))  # an explicit bound wins over the default

    items = Recogniser(schema_to_grammar({"type": "array", "items": {"type": "integer"}}))
    assert items.accepts(json.dumps([1] * DEFAULT_MAX_ITEMS)) and not items.accepts(
        json.dumps([1] * (DEFAULT_MAX_ITEMS + 1))
    )
    assert Recogniser(schema_to_grammar({"type": "array"}, default_max_items=None)).accepts(json.dumps([1] * 100))
    free = Recogniser(schema_to_grammar({"type": "object"}, default_max_items=2))
    assert free.accepts('{"a": 1, "b": 2}') and not free.accepts('{"a": 1, "b": 2, "c": 3}')
    nested = Recogniser(schema_to_grammar({}, default_max_length=3))  # free-form values are bounded too
    assert nested.accepts('{"abc": ["xyz"]}') and not nested.accepts('{"abc": ["wxyz"]}')


def test_properties_keep_schema_order_and_optional_ones_may_be_skipped() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}},
        "required": ["b"],
    }
    r = Recogniser(schema_to_grammar(schema))
    for text in ['{"b": 1}', '{"a": 1, "b": 2}', '{"b": 1, "c": 2}', '{"a":1,"b":2,"c":3}']:
        assert r.accepts(text), text
    for text in ["{}", '{"a": 1}', '{"a": 1, "c": 2}', '{"b": 1, "a": 2}', '{"b": 1,}', '{, "b": 1}']:
        assert not r.accepts(text), text
    only_optional = Recogniser(schema_to_grammar({**schema, "required": []}))
    for text in ["{}", '{"c": 1}', '{"a": 1, "c": 2}']:
        assert only_optional.accepts(text), text


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(0, 0), (0, 9), (1, 10), (7, 1234), (-5, 5), (-100, -1), (-99, 99), (10, 99), (100, 100), (-1, 0), (19, 21)],
)
def test_integer_ranges_accept_exactly_the_numbers_within(lo: int, hi: int) -> None:
    r = Recogniser(schema_to_grammar({"type": "integer", "minimum": lo, "maximum": hi}))
    for n in range(lo - 30, hi + 31):
        assert r.accepts(str(n)) == (lo <= n <= hi), n


def test_number_bounds_at_the_edges() -> None:
    r = Recogniser(schema_to_grammar({"type": "number", "minimum": -1, "exclusiveMaximum": 2}))
    accepted = ["-1", "-1.0", "-0.999", "0", "-0.5", "1.999", "1", "0.0"]
    rejected = ["-1.001", "2", "2.0", "-2", "3", "1e1", "-0", "00.5", ".5", "1."]
    assert [t for t in accepted if not r.accepts(t)] == []
    assert [t for t in rejected if r.accepts(t)] == []


def test_no_bound_number_accepts_python_float_text() -> None:
    r = Recogniser(schema_to_grammar({"type": "number"}))
    for value in [0, -0.0, 1.5, 1e-05, -2.5e20, 123456789.125, 1e100]:
        assert r.accepts(json.dumps(value)), value


GOOD_GRAMMARS = [
    'root ::= | "x"',
    'root ::= "a" (\n  "b" |\n  "c"\n) # comment\n',
    'root ::= [\\x00-\\x1F\\]\\[] "\\u00e9\\U0001F600\\t\\"" .',
    "root ::= x{0,3} x{2} x{1,}\nx ::= [a-c]",
    'root ::= ("" | "a")\n\n# trailing comment',
]


@pytest.mark.parametrize("grammar", GOOD_GRAMMARS)
def test_validate_grammar_takes_what_llama_cpp_takes(grammar: str) -> None:
    validate_grammar(grammar)


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ('root ::= "a', "unterminated literal at line 1, column 10"),
        ("root ::= [a-z", "unterminated character class"),
        ('root ::= ("a" | "b"', "expecting ')'"),
        ('root ::= "a" )', "expecting newline or end"),
        ('root ::= "\\d"', "unknown escape \\d"),
        ('root ::= "\\x4"', "expecting 2 hex digits"),
        ('root ::= item\nitem ::= "x" missing', "undefined rule 'missing' at line 2"),
        ('start ::= "x"', "no 'root' rule"),
        ('root ::= * "x"', "no preceding item"),
        ('root ::= root "x" | "y"', "left recursion"),
        ('root ::= a\na ::= b? "x"? a\nb ::= "b"', "left recursion"),
        ('root ::= ("x"?)*', "can be empty"),
        ('root ::= "x"{3,1}', "max < min"),
        ('root = "x"', "expecting ::="),
        ("root ::= []", "empty character class"),
        ('root ::= "x"\nroot ::= "y"', "defined twice"),
        ('root ::= x\nx ::= "a" |\ny ::= "b"', "expecting newline or end"),  # a trailing | joins the next line
        ('root ::= "x"{5000}', "repetition count over"),
        ('root_1 ::= "x"', "expecting ::="),
        ('root ::= "\ud800"', "lone surrogate"),
        ('root ::= "a\x00"', "NUL character"),
    ],
)
def test_validate_grammar_refuses_with_a_clear_message(grammar: str, message: str) -> None:
    with pytest.raises(ValueError, match="invalid grammar") as info:
        validate_grammar(grammar)
    assert message in str(info.value)


def test_every_corpus_grammar_has_only_known_escapes_and_a_root() -> None:
    for case in CORPUS:
        grammar = schema_to_grammar(case.schema)
        assert grammar.startswith("root ::= ")
        assert "\\d" not in grammar.replace("\\\\", "")
