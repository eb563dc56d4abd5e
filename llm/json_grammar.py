"""JSON Schema → llama.cpp GBNF grammar, and a GBNF syntax check that runs before llama.cpp sees a grammar.

Why not the converter bundled with llama-cpp-python 0.3.36 (``llama_cpp.llama_grammar``): its string rule
admits raw control characters (strict ``json.loads`` rejects the result), ``pattern`` with ``\\d``/``\\w``
yields a grammar llama.cpp rejects, and numeric bounds are ignored. Why a syntax check of our own:
``llama_sampler_init_grammar`` returns NULL for a grammar it cannot parse, and llama-cpp-python then
crashes the process; :func:`validate_grammar` turns every such grammar into a ``ValueError`` first.

Origin: the design follows llama.cpp's ``examples/json_schema_to_grammar.py`` (Copyright (c) 2023-2024
The ggml authors, MIT License: "Permission is hereby granted, free of charge, to any person obtaining a
copy of this software [...] The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software."): one rule per schema node, the ``space`` rule that
bounds whitespace, objects whose optional properties may each be left out, integer ranges as digit-prefix
alternations, ``$ref`` as shared rules. It was rewritten here, trimmed and typed, with these changes:

- strings are JSON-escaped everywhere: ``pattern`` character classes and ``.`` never emit a raw ``"``, ``\\``
  or control character (upstream's ``.`` admits all three, so a pattern could close the string early or
  produce text ``json.loads`` rejects); such characters are emitted in their JSON escape form instead;
- ``\\d \\w \\s`` (and ``\\D \\W \\S``) in patterns become character classes; GBNF escapes are only ever
  ``\\xHH``/``\\uHHHH``/``\\UHHHHHHHH``, so no pattern can produce an escape llama.cpp rejects;
- ``number`` honours ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum`` when the bounds are
  whole numbers (upstream does so for ``integer`` only); exponents are then not offered;
- exponents may have leading zeros (``1e-05``, as Python writes them);
- properties keep the schema's order (pydantic's field order) instead of required-first;
- default bounds (below) on strings, arrays and free-form objects;
- unsupported keywords raise ``ValueError`` naming the keyword and the JSON pointer instead of being ignored.

Bounds: a string with no ``maxLength`` gets ``default_max_length`` characters (:data:`DEFAULT_MAX_STRING`,
512), an array with no ``maxItems`` gets ``default_max_items`` items (:data:`DEFAULT_MAX_ITEMS`, 32), and so
do free-form objects (members) and the unbounded quantifiers ``*``/``+`` of a ``pattern``; this keeps a weak
model from wandering for thousands of tokens. ``None`` disables a default.

What is supported: ``type`` (one or a list: nullable types), ``object`` (``properties``, ``required``,
``additionalProperties`` false/true/schema; absent means no extra keys, as upstream), ``array`` (``items``,
``prefixItems``, ``minItems``/``maxItems``), ``string`` (``minLength``/``maxLength``, ``pattern``, ``format``
date/time/date-time/uuid; other formats are plain strings), ``integer``/``number`` bounds, ``boolean``,
``null``, ``enum``, ``const``, ``anyOf``/``oneOf`` (``oneOf`` exclusivity is not enforced), ``allOf``
(merged), local ``$ref`` into ``$defs``/``definitions`` (recursion included). Annotations (``title``,
``description``, ``default``, ``examples``...) are ignored, as are ``uniqueItems`` and unknown keywords;
the caller validates the parsed value (pydantic) for what a grammar cannot express. ``time`` and
``date-time`` accept a missing UTC offset, since pydantic writes and reads naive times.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_STRING",
    "MAX_REPETITION",
    "Chars",
    "Group",
    "Node",
    "Ref",
    "Repeat",
    "parse_grammar",
    "schema_to_grammar",
    "validate_grammar",
]

DEFAULT_MAX_STRING = 512  # characters of a string with no maxLength
DEFAULT_MAX_ITEMS = 32  # items of an array with no maxItems (members of a free-form object)
# llama.cpp expands ``x{m,n}`` into n rules; bounds above this are refused (min) or left open (max)
MAX_REPETITION = 2000

_UNSUPPORTED = (
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "propertyNames",
    "dependentSchemas",
    "dependentRequired",
    "dependencies",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedProperties",
    "unevaluatedItems",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "$dynamicRef",
    "$recursiveRef",
)

# JSON text that must be escaped inside a string: the quote, the backslash, U+0000..U+001F
_FORBIDDEN: tuple[tuple[int, int], ...] = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))
_MAX_CODE_POINT = 0x10FFFF

_SPACE = r'| " " | "\n"{1,2} [ \t]{0,20}'
_CHAR = r'[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_INTEGRAL = '"0" | [1-9] [0-9]{0,15}'
_DATE = '[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [1-2] [0-9] | "3" [0-1])'
_TIME = (
    '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? '
    '("Z" | "z" | ("+" | "-") ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])?'
)
_UUID = '[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}'


def _pointer(parent: str, *keys: str | int) -> str:
    out = parent
    for key in keys:
        out += "/" + str(key).replace("~", "~0").replace("/", "~1")
    return out


def _where(pointer: str) -> str:
    return f"at {pointer or '#'}"


def _fail(feature: str, pointer: str, detail: str = "") -> ValueError:
    extra = f": {detail}" if detail else ""
    return ValueError(
        f"JSON schema feature {feature!r} {_where(pointer)} is not supported by the grammar converter{extra}; "
        "remove it from the schema or validate that part after generation"
    )


def _char_escape(cp: int, *, in_class: bool = False) -> str:
    """A code point as it may appear inside a GBNF literal (or class): only escapes llama.cpp knows."""
    c = chr(cp)
    if c in ('"', "\\") or (in_class and c in "[]"):
        return "\\" + c
    if 0x20 <= cp < 0x7F and not (in_class and c in "-^"):
        return c
    if cp <= 0xFF:
        return f"\\x{cp:02X}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04X}"
    return f"\\U{cp:08X}"


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF literal (matches exactly these characters)."""
    return '"' + "".join(_char_escape(ord(c)) for c in text) + '"'


def _json_literal(value: Any) -> str:
    return gbnf_literal(json.dumps(value, ensure_ascii=False))


def _repeat(item: str, lo: int, hi: int | None) -> str:
    """``item`` lo..hi times (``hi`` None: unbounded), in GBNF repetition syntax."""
    if hi == 0:
        return ""
    if (lo, hi) == (0, 1):
        return f"{item}?"
    if (lo, hi) == (0, None):
        return f"{item}*"
    if (lo, hi) == (1, None):
        return f"{item}+"
    if lo == hi:
        return item if lo == 1 else f"{item}{{{lo}}}"
    return f"{item}{{{lo},{'' if hi is None else hi}}}"


def _separated(item: str, lo: int, hi: int | None, separator: str = '"," space') -> str:
    """lo..hi ``item``s separated by ``separator``."""
    if hi == 0:
        return ""
    rest = _repeat(f"({separator} {item})", max(lo - 1, 0), None if hi is None else hi - 1)
    body = f"{item} {rest}".strip()
    return f"({body})?" if lo == 0 else body


# ---------------------------------------------------------------------------------------------- integers


def _digit_class(lo: str, hi: str) -> str:
    return f"[{lo}]" if lo == hi else f"[{lo}-{hi}]"


def _same_length(lo: str, hi: str) -> str:
    """Digit strings of len(lo) == len(hi) between lo and hi (inclusive), as GBNF."""
    if not lo:
        return ""
    if len(lo) == 1:
        return _digit_class(lo, hi)
    if lo[0] == hi[0]:
        return f'"{lo[0]}" ({_same_length(lo[1:], hi[1:])})'
    n = len(lo) - 1
    alternatives: list[str] = []
    first, last = lo[0], hi[0]
    if lo[1:] != "0" * n:
        alternatives.append(f'"{first}" ({_same_length(lo[1:], "9" * n)})')
        first = chr(ord(first) + 1)
    hi_full = hi[1:] == "9" * n
    mid_last = last if hi_full else chr(ord(last) - 1)
    if first <= mid_last:
        alternatives.append(f"{_digit_class(first, mid_last)} [0-9]{{{n}}}")
    if not hi_full:
        alternatives.append(f'"{last}" ({_same_length("0" * n, hi[1:])})')
    return " | ".join(alternatives)


def _natural_range(lo: int, hi: int | None) -> str:
    """Decimal numerals (no leading zeros) of the whole numbers lo..hi (hi None: at most 16 digits)."""
    assert lo >= 0
    top = hi if hi is not None else max(10**16 - 1, lo)
    if lo > top:
        raise ValueError("empty range")
    alternatives = []
    for digits in range(len(str(lo)), len(str(top)) + 1):
        a = max(lo, 10 ** (digits - 1) if digits > 1 else 0)
        b = min(top, 10**digits - 1)
        if a <= b:
            alternatives.append(f"({_same_length(str(a), str(b))})")
    return " | ".join(alternatives)


def _integer_range(lo: int | None, hi: int | None) -> str:
    """JSON integers in lo..hi (either side open)."""
    parts = []
    if hi is None or hi >= 0:
        parts.append(f"({_natural_range(max(lo, 0) if lo is not None else 0, hi)})")
    if lo is None or lo < 0:
        # magnitudes of the negative values: max(-hi, 1) .. -lo ("-0" is left out)
        parts.append(f'"-" ({_natural_range(max(-hi, 1) if hi is not None else 1, -lo if lo is not None else None)})')
    return " | ".join(parts)


def _magnitude(lo: int, lo_incl: bool, hi: int | None, hi_incl: bool) -> str | None:
    """Unsigned decimals (no exponent) in the interval lo..hi with whole-number ends; None if empty."""
    frac_any = '("." [0-9]{1,16})?'
    frac_zero = '("." "0"{1,16})?'
    frac_nonzero = '"." [0-9]{0,15} [1-9]'
    if hi is not None and hi < lo:
        return None
    if hi is not None and hi == lo:
        return f"({_natural_range(lo, lo)}) {frac_zero}" if lo_incl and hi_incl else None
    alternatives = [f"({_natural_range(lo, lo)}) {frac_any if lo_incl else frac_nonzero}"]
    if hi is None or hi - 1 >= lo + 1:
        alternatives.append(f"({_natural_range(lo + 1, None if hi is None else hi - 1)}) {frac_any}")
    if hi is not None and hi_incl:
        alternatives.append(f"({_natural_range(hi, hi)}) {frac_zero}")
    return " | ".join(f"({a})" for a in alternatives)


def _number_range(lo: int | None, lo_incl: bool, hi: int | None, hi_incl: bool) -> str:
    parts = []
    if hi is None or hi > 0 or (hi == 0 and hi_incl):
        if lo is not None and lo >= 0:
            positive = _magnitude(lo, lo_incl, hi, hi_incl)
        else:
            positive = _magnitude(0, True, hi, hi_incl)
        if positive:
            parts.append(f"({positive})")
    if lo is None or lo < 0:
        if hi is not None and hi < 0:
            negative = _magnitude(-hi, hi_incl, None if lo is None else -lo, lo_incl)
        else:
            negative = _magnitude(0, False, None if lo is None else -lo, lo_incl)
        if negative:
            parts.append(f'"-" ({negative})')
    if not parts:
        raise ValueError("empty range")
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------------- patterns

_Ranges = list[tuple[int, int]]


def _normalize(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _complement(ranges: _Ranges) -> _Ranges:
    out: _Ranges = []
    start = 0
    for lo, hi in _normalize(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= _MAX_CODE_POINT:
        out.append((start, _MAX_CODE_POINT))
    return out


def _intersect(a: _Ranges, b: _Ranges) -> _Ranges:
    out: _Ranges = []
    for alo, ahi in _normalize(a):
        for blo, bhi in _normalize(b):
            lo, hi = max(alo, blo), min(ahi, bhi)
            if lo <= hi:
                out.append((lo, hi))
    return _normalize(out)


_DIGIT: _Ranges = [(0x30, 0x39)]
_WORD: _Ranges = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
_SPACE_CHARS: _Ranges = [(0x09, 0x0D), (0x20, 0x20)]
_CLASS_ESCAPES: dict[str, _Ranges] = {
    "d": _DIGIT,
    "w": _WORD,
    "s": _SPACE_CHARS,
    "D": _complement(_DIGIT),
    "W": _complement(_WORD),
    "S": _complement(_SPACE_CHARS),
}
_CHAR_ESCAPES = {"t": 0x09, "n": 0x0A, "r": 0x0D, "f": 0x0C, "v": 0x0B, "0": 0x00}


def _json_chars(ranges: _Ranges) -> str:
    """GBNF for one character of ``ranges`` written inside a JSON string (escaped where JSON requires)."""
    ranges = _normalize(ranges)
    allowed = _intersect(ranges, _complement(list(_FORBIDDEN)))
    alternatives = []
    if allowed:
        body = "".join(
            _char_escape(lo, in_class=True)
            if lo == hi
            else f"{_char_escape(lo, in_class=True)}-{_char_escape(hi, in_class=True)}"
            for lo, hi in allowed
        )
        alternatives.append(f"[{body}]")
    for lo, hi in _intersect(ranges, list(_FORBIDDEN)):
        for cp in range(lo, hi + 1):
            alternatives.append(gbnf_literal(json.dumps(chr(cp))[1:-1]))
    if not alternatives:
        raise ValueError("empty character class")
    return alternatives[0] if len(alternatives) == 1 else "(" + " | ".join(alternatives) + ")"


class _PatternParser:
    """A JSON Schema ``pattern`` (ECMA-262 subset) → GBNF over the JSON-escaped string content."""

    def __init__(self, pattern: str, pointer: str, max_repeat: int | None) -> None:
        self.text = pattern
        self.pos = 0
        self.pointer = pointer
        self.max_repeat = max_repeat

    def fail(self, what: str) -> ValueError:
        return _fail("pattern", self.pointer, f"{what} at index {self.pos} of /{self.text}/")

    def convert(self) -> str:
        text = self.text
        anchored_start = text.startswith("^")
        anchored_end = text.endswith("$") and not text.endswith("\\$")
        self.pos = 1 if anchored_start else 0
        end = len(text) - 1 if anchored_end else len(text)
        self.text = text[:end]
        body = self.alternation()
        if self.pos != len(self.text):
            raise self.fail("unbalanced ')'")
        self.text = text
        dot = _json_chars(_complement([(0x0A, 0x0A), (0x0D, 0x0D)]))
        anywhere = _repeat(dot, 0, self.max_repeat)
        prefix = "" if anchored_start else anywhere + " "
        suffix = "" if anchored_end else " " + anywhere
        return f"{prefix}({body}){suffix}".strip()

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def alternation(self) -> str:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return " | ".join(o if o else '""' for o in options)

    def sequence(self) -> str:
        items: list[str] = []
        while self.pos < len(self.text) and self.peek() not in "|)":
            atom = self.atom()
            items.append(self.quantified(atom))
        return " ".join(i for i in items if i)

    def quantified(self, atom: str) -> str:
        c = self.peek()
        if c not in ("*", "+", "?", "{"):
            return atom
        if c == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", self.text[self.pos :])
            if not m:
                return atom  # ECMA: a "{" that is no quantifier is a literal; keep it simple and refuse
            self.pos += m.end()
            lo = int(m.group(1))
            hi: int | None = lo if m.group(2) is None else (int(m.group(3)) if m.group(3) else None)
        else:
            self.pos += 1
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        if self.peek() == "?":
            self.pos += 1  # lazy: the same language
        elif self.peek() == "+":
            raise self.fail("possessive quantifier")
        if hi is None and self.max_repeat is not None:
            hi = max(lo, self.max_repeat)
        if hi is not None and hi < lo:
            raise self.fail("quantifier {m,n} with n < m")
        if lo > MAX_REPETITION:
            raise self.fail(f"repetition over {MAX_REPETITION}")
        if hi is not None and hi > MAX_REPETITION:
            hi = None
        return _repeat(f"({atom})", lo, hi)

    def atom(self) -> str:
        c = self.peek()
        if c == "(":
            self.pos += 1
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.text.startswith("?P<", self.pos) or (
                self.text.startswith("?<", self.pos) and self.text[self.pos + 2 : self.pos + 3] not in ("=", "!")
            ):
                close = self.text.find(">", self.pos)
                if close < 0:
                    raise self.fail("unterminated group name")
                self.pos = close + 1
            elif self.peek() == "?":
                raise self.fail("lookaround, flags or other (?...) group")
            inner = self.alternation()
            if self.peek() != ")":
                raise self.fail("unbalanced '('")
            self.pos += 1
            return f"({inner})" if inner else '""'
        if c in "*+?{":
            if c == "{" and not re.match(r"\{\d+(,\d*)?\}", self.text[self.pos :]):
                self.pos += 1
                return _json_chars([(ord("{"), ord("{"))])
            raise self.fail(f"quantifier {c!r} with nothing to repeat")
        if c in "^$":
            raise self.fail(f"anchor {c!r} inside the pattern (only at its start and end)")
        if c == ".":
            self.pos += 1
            return _json_chars(_complement([(0x0A, 0x0A), (0x0D, 0x0D)]))
        if c == "[":
            return _json_chars(self.char_class())
        if c == "\\":
            return _json_chars(self.escape(in_class=False))
        self.pos += 1
        return _json_chars([(ord(c), ord(c))])

    def escape(self, *, in_class: bool) -> _Ranges:
        self.pos += 1
        c = self.peek()
        if not c:
            raise self.fail("trailing backslash")
        self.pos += 1
        if c in _CLASS_ESCAPES:
            return list(_CLASS_ESCAPES[c])
        if c in _CHAR_ESCAPES:
            cp = _CHAR_ESCAPES[c]
            return [(cp, cp)]
        if c == "b" and in_class:
            return [(0x08, 0x08)]
        if c in ("x", "u"):
            size = 2 if c == "x" else 4
            digits = self.text[self.pos : self.pos + size]
            if len(digits) != size or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"\\{c} needs {size} hex digits")
            self.pos += size
            cp = int(digits, 16)
            return [(cp, cp)]
        if c.isalnum():
            raise self.fail(f"escape \\{c} (word boundaries, back-references and \\p classes are not supported)")
        return [(ord(c), ord(c))]

    def class_atom(self) -> tuple[_Ranges, bool]:
        """One item of a [...] class and whether it is a single character (usable as a range end)."""
        if self.peek() == "\\":
            ranges = self.escape(in_class=True)
            return ranges, len(ranges) == 1 and ranges[0][0] == ranges[0][1]
        c = self.peek()
        self.pos += 1
        return [(ord(c), ord(c))], True

    def char_class(self) -> _Ranges:
        self.pos += 1
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: _Ranges = []
        first = True
        while True:
            if self.pos >= len(self.text):
                raise self.fail("unterminated '['")
            if self.peek() == "]" and not first:
                self.pos += 1
                break
            first = False
            lo, single = self.class_atom()
            if single and self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                hi, hi_single = self.class_atom()
                if not hi_single or hi[0][0] < lo[0][0]:
                    raise self.fail("bad range in character class")
                ranges.append((lo[0][0], hi[0][0]))
            else:
                ranges.extend(lo)
        ranges = _normalize(ranges)
        return _complement(ranges) if negated else ranges


# ---------------------------------------------------------------------------------------------- converter


@dataclass
class _Limits:
    max_length: int | None
    max_items: int | None


class _Converter:
    def __init__(self, root: dict[str, Any], limits: _Limits) -> None:
        self.root = root
        self.limits = limits
        self.rules: dict[str, str] = {}
        self.refs: dict[str, str] = {}  # "#/..." → rule name

    # rules

    def add(self, name: str, body: str) -> str:
        if body and name != "root":
            for existing, existing_body in self.rules.items():
                if existing_body == body:  # the same language: share the rule (llama.cpp expands each x{0,512})
                    return existing
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", name).strip("-") or "r"
        key, i = base, 0
        while key in self.rules and self.rules[key] != body:
            i += 1
            key = f"{base}{i}"
        self.rules[key] = body
        return key

    def builtin(self, name: str) -> str:
        bodies = {
            "space": _SPACE,
            "char": _CHAR,
            "boolean": '"true" | "false"',
            "null": '"null"',
            "integer": f'"-"? ({_INTEGRAL})',
            "number": f'"-"? ({_INTEGRAL}) ("." [0-9]{{1,16}})? ([eE] [-+]? [0-9]{{1,3}})?',
            "date": _DATE,
            "time": _TIME,
        }
        if name in self.rules:
            return name
        if name in bodies:
            self.rules[name] = bodies[name]
        elif name == "string":
            self.rules[name] = f'"\\"" {_repeat(self.builtin("char"), 0, self.limits.max_length)} "\\""'
        elif name == "value":
            self.rules[name] = "object | array | string | number | boolean | null"
            for dep in ("object", "array", "string", "number", "boolean", "null"):
                self.builtin(dep)
        elif name == "object":
            member = 'string space ":" space value'
            self.rules[name] = f'"{{" space {_separated(member, 0, self.limits.max_items)} space "}}"'
            self.builtin("space")
            self.builtin("string")
            self.builtin("value")
        elif name == "array":
            self.rules[name] = f'"[" space {_separated("value", 0, self.limits.max_items)} space "]"'
            self.builtin("value")
        else:  # pragma: no cover - internal names only
            raise KeyError(name)
        if "space" in self.rules[name]:
            self.builtin("space")
        return name

    # references

    def resolve(self, ref: str, pointer: str) -> tuple[Any, str]:
        if not ref.startswith("#"):
            raise _fail("$ref", pointer, f"only local references ('#/...') are supported, got {ref!r}")
        target: Any = self.root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            key = unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            elif isinstance(target, dict) and key in target:
                target = target[key]
            else:
                raise _fail("$ref", pointer, f"{ref!r} points to nothing in the schema")
        return target, ref

    def visit_ref(self, ref: str, pointer: str) -> str:
        if ref in self.refs:
            return self.refs[ref]
        target, path = self.resolve(ref, pointer)
        name = self.add("ref-" + (path[2:] or "root"), "")  # reserve the name: the target may refer to itself
        self.refs[ref] = name
        body_rule = self.visit(target, name + "-body", path)
        self.rules[name] = body_rule
        return name

    # schemas

    def visit(self, schema: Any, name: str, pointer: str) -> str:
        """A rule name that matches the JSON text of the values ``schema`` describes."""
        if schema is True or schema == {}:
            return self.builtin("value")
        if schema is False:
            raise _fail("false", pointer, "a schema that no value satisfies")
        if not isinstance(schema, dict):
            raise ValueError(f"schema {_where(pointer)} must be an object or a boolean, got {schema!r}")
        for keyword in _UNSUPPORTED:
            if keyword in schema:
                raise _fail(keyword, _pointer(pointer, keyword))

        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str):
                raise _fail("$ref", pointer, "must be a string")
            return self.visit_ref(ref, _pointer(pointer, "$ref"))
        if "allOf" in schema:
            return self.visit(self.merge_all_of(schema, pointer), name, pointer)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                options = schema[keyword]
                if not isinstance(options, list) or not options:
                    raise _fail(keyword, pointer, "must be a non-empty list")
                rest = {k: v for k, v in schema.items() if k != keyword}
                alternatives = [
                    self.visit(
                        self.merge([rest, o], _pointer(pointer, keyword, i)) if _typed(rest) else o,
                        f"{name}-{i}",
                        _pointer(pointer, keyword, i),
                    )
                    for i, o in enumerate(options)
                ]
                return self.add(name, " | ".join(alternatives))
        if "const" in schema:
            return self.add(name, self.constant(schema["const"]))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise _fail("enum", pointer, "must be a non-empty list")
            return self.add(name, " | ".join(f"({self.constant(v)})" for v in values))

        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind:
                raise _fail("type", pointer, "an empty list of types")
            alternatives = [self.visit({**schema, "type": t}, f"{name}-{t}", pointer) for t in kind]
            return self.add(name, " | ".join(alternatives))
        if kind is None:
            kind = _infer_type(schema)
        if kind == "object":
            return self.add(name, self.object_rule(schema, name, pointer))
        if kind == "array":
            return self.add(name, self.array_rule(schema, name, pointer))
        if kind == "string":
            return self.add(name, self.string_rule(schema, name, pointer))
        if kind in ("integer", "number"):
            return self.add(name, self.number_rule(schema, kind, pointer))
        if kind in ("boolean", "null"):
            return self.builtin(kind)
        if kind == "any":
            return self.builtin("value")
        raise _fail("type", _pointer(pointer, "type"), f"unknown type {kind!r}")

    def constant(self, value: Any) -> str:
        """A value written as JSON, with the same freedom of whitespace as the rest of the grammar."""
        if isinstance(value, dict):
            self.builtin("space")
            members = [f'{_json_literal(str(k))} space ":" space {self.constant(v)}' for k, v in value.items()]
            return '"{" space ' + ' "," space '.join(members) + ' space "}"'
        if isinstance(value, list):
            self.builtin("space")
            return '"[" space ' + ' "," space '.join(self.constant(v) for v in value) + ' space "]"'
        return _json_literal(value)

    def merge(self, parts: list[Any], pointer: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for part in parts:
            while isinstance(part, dict) and "$ref" in part:
                target, _ = self.resolve(part["$ref"], pointer)
                part = {**{k: v for k, v in part.items() if k != "$ref"}, **target}
            if part is True:
                continue
            if not isinstance(part, dict):
                raise _fail("allOf", pointer, "every part must be a schema object")
            if "allOf" in part:
                part = self.merge_all_of(part, pointer)
            for key, value in part.items():
                if key in ("title", "description", "default", "examples", "$defs", "definitions", "$schema", "$id"):
                    continue
                if key == "properties":
                    merged.setdefault("properties", {})
                    merged["properties"] = {**merged["properties"], **value}
                elif key == "required":
                    merged["required"] = list(dict.fromkeys([*merged.get("required", []), *value]))
                elif key in merged and merged[key] != value:
                    raise _fail("allOf", pointer, f"the parts disagree on {key!r}")
                else:
                    merged[key] = value
        return merged

    def merge_all_of(self, schema: dict[str, Any], pointer: str) -> dict[str, Any]:
        parts = schema["allOf"]
        if not isinstance(parts, list) or not parts:
            raise _fail("allOf", pointer, "must be a non-empty list")
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return self.merge([rest, *parts], _pointer(pointer, "allOf"))

    def object_rule(self, schema: dict[str, Any], name: str, pointer: str) -> str:
        self.builtin("space")
        properties: dict[str, Any] = dict(schema.get("properties", {}))
        required = list(schema.get("required", []))
        for key in required:
            properties.setdefault(key, True)
        extra = schema.get("additionalProperties")
        if not properties and extra in (None, True):
            return self.builtin("object")
        kvs = []
        for key, sub in properties.items():
            value = self.visit(sub, f"{name}-{key}", _pointer(pointer, "properties", key))
            kvs.append((key in required, self.add(f"{name}-{key}-kv", f'{_json_literal(key)} space ":" space {value}')))
        tail_first = tail_after = ""
        if extra not in (None, False):
            value = (
                self.visit(extra, f"{name}-additional", _pointer(pointer, "additionalProperties"))
                if isinstance(extra, dict)
                else self.builtin("value")
            )
            key_rule = (
                self.add(f"{name}-additional-key", self.not_strings(list(properties)))
                if properties
                else self.builtin("string")
            )
            kv = self.add(f"{name}-additional-kv", f'{key_rule} space ":" space {value}')
            n = self.limits.max_items
            tail_first = _separated(kv, 0, n)
            tail_after = _repeat(f'("," space {kv})', 0, n)
        # after[i]: properties i.. when something came before; first[i]: when nothing did
        # after(i): properties i.. when one came before (each then starts with a comma); first(i): when none did.
        # Rules are made on demand, so a required property cuts off the alternatives that would skip it.
        made: dict[tuple[str, int], str] = {}

        def after(i: int) -> str:
            if i == len(kvs):
                return tail_after
            if ("after", i) not in made:
                is_required, kv = kvs[i]
                step = f'"," space {kv}' if is_required else f'("," space {kv})?'
                made["after", i] = self.add(f"{name}-after-{i}", f"{step} {after(i + 1)}".strip())
            return made["after", i]

        def first(i: int) -> str:
            if i == len(kvs):
                return tail_first
            if ("first", i) not in made:
                is_required, kv = kvs[i]
                own = f"{kv} {after(i + 1)}".strip()
                rest = "" if is_required else first(i + 1)
                # an empty alternative must not end a rule: llama.cpp would read the next line as part of it
                body = own if is_required else (f"{own} | {rest}" if rest else f"({own})?")
                made["first", i] = self.add(f"{name}-first-{i}", body)
            return made["first", i]

        members = first(0)
        return f'"{{" space {members} space "}}"' if members else '"{" space "}"'

    def not_strings(self, keys: list[str]) -> str:
        """A JSON string key other than the given ones (compared on their JSON text)."""
        char = self.builtin("char")
        limit = self.limits.max_length
        words = [json.dumps(k, ensure_ascii=False)[1:-1] for k in keys]
        trie: dict[str, Any] = {}
        for w in words:
            node = trie
            for c in w:
                node = node.setdefault(c, {})
            node[""] = {}

        def visit(node: dict[str, Any]) -> str:
            children = sorted(c for c in node if c)
            alternatives = []
            for c in children:
                child = node[c]
                rest = visit(child)
                alternatives.append(f"{gbnf_literal(c)} ({rest})" if rest else gbnf_literal(c))
            # a character no key continues with here (a plain char, never the start of an escape)
            excluded = [(ord(c), ord(c)) for c in children if len(c) == 1] + list(_FORBIDDEN)
            others = _intersect(_complement(excluded), _complement(list(_FORBIDDEN)))
            tail = _repeat(char, 0, limit)
            alternatives.append(f"{_json_chars(others)} {tail}")
            # the key ends here but is not one of the given keys (only if no key ends here)
            if "" not in node:
                alternatives.append('""')
            return " | ".join(alternatives)

        return f'"\\"" ({visit(trie)}) "\\""'

    def array_rule(self, schema: dict[str, Any], name: str, pointer: str) -> str:
        self.builtin("space")
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft 4-2019: items as a tuple
            prefix, items = items, schema.get("additionalItems", False)
        lo = int(schema.get("minItems", 0))
        hi: int | None = schema.get("maxItems")
        if prefix is not None:
            rules = [self.visit(s, f"{name}-{i}", _pointer(pointer, "prefixItems", i)) for i, s in enumerate(prefix)]
            body = ' "," space '.join(rules)
            if items not in (None, False):
                rest = self.visit(items, f"{name}-item", _pointer(pointer, "items"))
                more_hi = None if hi is None else max(hi - len(rules), 0)
                if more_hi is None and self.limits.max_items is not None:
                    more_hi = self.limits.max_items
                body += " " + _repeat(f'("," space {rest})', max(lo - len(rules), 0), more_hi)
            return f'"[" space {body} space "]"'
        item = (
            self.builtin("value")
            if items in (None, True)
            else self.visit(items, f"{name}-item", _pointer(pointer, "items"))
        )
        hi = _count_bounds(lo, hi, self.limits.max_items, pointer, "minItems", "maxItems")
        return f'"[" space {_separated(item, lo, hi)} space "]"'

    def string_rule(self, schema: dict[str, Any], name: str, pointer: str) -> str:
        if "pattern" in schema:
            pattern = schema["pattern"]
            if not isinstance(pattern, str):
                raise _fail("pattern", pointer, "must be a string")
            try:
                inner = _PatternParser(pattern, _pointer(pointer, "pattern"), self.limits.max_length).convert()
            except ValueError as exc:
                if "not supported" in str(exc):
                    raise
                raise _fail("pattern", _pointer(pointer, "pattern"), f"{exc} in /{pattern}/") from exc
            return f'"\\"" {inner} "\\""'
        fmt = schema.get("format")
        if fmt == "date":
            return f'"\\"" {self.builtin("date")} "\\""'
        if fmt == "time":
            return f'"\\"" {self.builtin("time")} "\\""'
        if fmt == "date-time":
            return f'"\\"" {self.builtin("date")} [Tt ] {self.builtin("time")} "\\""'
        if isinstance(fmt, str) and re.fullmatch(r"uuid[1-5]?", fmt):
            return f'"\\"" {_UUID} "\\""'
        lo = int(schema.get("minLength", 0))
        hi: int | None = schema.get("maxLength")
        hi = _count_bounds(lo, hi, self.limits.max_length, pointer, "minLength", "maxLength")
        return f'"\\"" {_repeat(self.builtin("char"), lo, hi)} "\\""'

    def number_rule(self, schema: dict[str, Any], kind: str, pointer: str) -> str:
        bounds: dict[str, float] = {}
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            value = schema.get(key)
            if isinstance(value, bool):  # draft 4: a flag on minimum/maximum
                if value:
                    base = "minimum" if key == "exclusiveMinimum" else "maximum"
                    if base in bounds:
                        bounds[key] = bounds.pop(base)
                continue
            if value is not None:
                if not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise _fail(key, _pointer(pointer, key), "must be a finite number")
                bounds[key] = value
        if not bounds:
            return self.builtin(kind)
        # the tighter of inclusive and exclusive bound on each side
        lo, lo_incl = _tighter(bounds.get("minimum"), bounds.get("exclusiveMinimum"), low=True)
        hi, hi_incl = _tighter(bounds.get("maximum"), bounds.get("exclusiveMaximum"), low=False)
        try:
            if kind == "integer":
                ilo = None if lo is None else (math.ceil(lo) if lo_incl or lo != int(lo) else int(lo) + 1)
                ihi = None if hi is None else (math.floor(hi) if hi_incl or hi != int(hi) else int(hi) - 1)
                return _integer_range(ilo, ihi)
            for key, bound in (("minimum", lo), ("maximum", hi)):
                if bound is not None and bound != int(bound):
                    raise _fail(
                        key,
                        _pointer(pointer, key),
                        f"a number bound must be a whole number for the grammar, got {bound}",
                    )
            return _number_range(None if lo is None else int(lo), lo_incl, None if hi is None else int(hi), hi_incl)
        except ValueError as exc:
            if "not supported" in str(exc):
                raise
            raise _fail("minimum/maximum", pointer, "no value lies within the bounds") from exc

    def grammar(self) -> str:
        order = ["root", *sorted(k for k in self.rules if k != "root")]
        return "\n".join(f"{k} ::= {self.rules[k]}" for k in order) + "\n"


def _count_bounds(lo: int, hi: int | None, default: int | None, pointer: str, lo_key: str, hi_key: str) -> int | None:
    """The upper bound of a count (string length, array items): the schema's, else ``default`` (a bound for
    a small model that would wander), None above llama.cpp's repetition limit; ``lo`` checked against both."""
    if hi is None and default is not None:
        hi = max(lo, default)
    if lo > MAX_REPETITION:
        raise _fail(lo_key, _pointer(pointer, lo_key), f"more than {MAX_REPETITION}")
    if hi is not None and hi > MAX_REPETITION:
        hi = None
    if hi is not None and hi < lo:
        raise _fail(hi_key, _pointer(pointer, hi_key), f"smaller than {lo_key}")
    return hi


def _tighter(inclusive: float | None, exclusive: float | None, *, low: bool) -> tuple[float | None, bool]:
    if inclusive is None:
        return exclusive, exclusive is None
    if exclusive is None:
        return inclusive, True
    if low:
        return (exclusive, False) if exclusive >= inclusive else (inclusive, True)
    return (exclusive, False) if exclusive <= inclusive else (inclusive, True)


def _typed(schema: dict[str, Any]) -> bool:
    return any(k in schema for k in ("type", "properties", "items", "required", "additionalProperties"))


def _infer_type(schema: dict[str, Any]) -> str:
    if any(k in schema for k in ("properties", "additionalProperties", "required")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("pattern", "minLength", "maxLength", "format")):
        return "string"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "any"


def schema_to_grammar(
    schema: dict[str, Any],
    *,
    default_max_length: int | None = DEFAULT_MAX_STRING,
    default_max_items: int | None = DEFAULT_MAX_ITEMS,
) -> str:
    """A GBNF grammar (root rule ``root``) for the JSON texts of the values ``schema`` describes.

    Raises ``ValueError`` naming the keyword and its JSON pointer for what the converter does not support.
    The result has passed :func:`validate_grammar`, so llama.cpp accepts it.
    """
    if not isinstance(schema, dict):
        raise ValueError(f"a JSON schema must be a dict, got {type(schema).__name__}")
    converter = _Converter(schema, _Limits(default_max_length, default_max_items))
    top = converter.visit(schema, "root", "#")
    if top != "root":
        converter.rules["root"] = top
    text = converter.grammar()
    try:
        validate_grammar(text)
    except ValueError as exc:  # e.g. a recursive $ref that recurses before any character, or (a?)* patterns
        raise ValueError(f"the grammar for this JSON schema would not work in llama.cpp: {exc}") from exc
    return text


# ---------------------------------------------------------------------------------------------- GBNF check


@dataclass(frozen=True)
class Chars:
    """One character of ``ranges`` (inclusive code point pairs), or of their complement if ``negated``."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Group:
    alternatives: tuple[tuple[Node, ...], ...]


@dataclass(frozen=True)
class Repeat:
    node: Node
    min: int
    max: int | None


Node = Chars | Ref | Group | Repeat


class _GbnfParser:
    """GBNF as llama.cpp's grammar parser (``llama-grammar.cpp``) reads it; errors name line and column."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.rules: dict[str, Group] = {}
        self.refs: dict[str, int] = {}  # referenced name → position of its first use

    def fail(self, what: str, pos: int | None = None) -> ValueError:
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        snippet = self.text[at : at + 20].split("\n")[0]
        return ValueError(f"invalid grammar: {what} at line {line}, column {column} (near {snippet!r})")

    def peek(self, n: int = 0) -> str:
        i = self.pos + n
        return self.text[i] if i < len(self.text) else ""

    def space(self, newline_ok: bool) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "#":
                while self.pos < len(self.text) and self.text[self.pos] not in "\r\n":
                    self.pos += 1
            elif c in " \t" or (newline_ok and c in "\r\n"):
                self.pos += 1
            else:
                break

    def name(self) -> str:
        m = re.compile(r"[a-zA-Z0-9-]+").match(self.text, self.pos)
        if not m:
            raise self.fail("expecting a rule name")
        self.pos = m.end()
        return m.group(0)

    def char(self) -> int:
        c = self.peek()
        if not c:
            raise self.fail("unexpected end of input")
        if c != "\\":
            self.pos += 1
            return ord(c)
        e = self.peek(1)
        sizes = {"x": 2, "u": 4, "U": 8}
        if e in sizes:
            digits = self.text[self.pos + 2 : self.pos + 2 + sizes[e]]
            if len(digits) != sizes[e] or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise self.fail(f"expecting {sizes[e]} hex digits after \\{e}")
            self.pos += 2 + sizes[e]
            return int(digits, 16)
        simple = {"t": 9, "r": 13, "n": 10, "\\": 92, '"': 34, "[": 91, "]": 93}
        if e in simple:
            self.pos += 2
            return simple[e]
        raise self.fail(f"unknown escape \\{e}" if e else "unexpected end of input after backslash")

    def parse(self) -> dict[str, Group]:
        self.space(True)
        while self.pos < len(self.text):
            start = self.pos
            name = self.name()
            self.space(False)
            if not self.text.startswith("::=", self.pos):
                raise self.fail("expecting ::=")
            self.pos += 3
            self.space(True)
            if name in self.rules:
                raise self.fail(f"rule {name!r} defined twice", start)
            self.rules[name] = self.alternates(nested=False)
            if self.peek() == "\r":
                self.pos += 2 if self.peek(1) == "\n" else 1
            elif self.peek() == "\n":
                self.pos += 1
            elif self.pos < len(self.text):
                raise self.fail("expecting newline or end")
            self.space(True)
        for name, pos in self.refs.items():
            if name not in self.rules:
                raise self.fail(f"undefined rule {name!r}", pos)
        if "root" not in self.rules:
            raise ValueError("invalid grammar: no 'root' rule (llama.cpp starts from 'root')")
        self.check_left_recursion()
        return self.rules

    def alternates(self, nested: bool) -> Group:
        options = [self.sequence(nested)]
        while self.peek() == "|":
            self.pos += 1
            self.space(True)
            options.append(self.sequence(nested))
        return Group(tuple(options))

    def sequence(self, nested: bool) -> tuple[Node, ...]:
        items: list[Node] = []
        last_is_item = False  # whether a repetition operator has something to repeat
        while self.pos < len(self.text):
            c = self.peek()
            start = self.pos
            if c == '"':
                self.pos += 1
                chars: list[Node] = []
                while self.peek() != '"':
                    if not self.peek():
                        raise self.fail("unterminated literal", start)
                    if self.peek() in "\r\n":
                        raise self.fail("line break inside a literal (write \\n)", start)
                    cp = self.char()
                    chars.append(Chars(((cp, cp),)))
                self.pos += 1
                last_is_item = bool(chars)
                if len(chars) == 1:
                    items.append(chars[0])
                elif chars:
                    items.append(Group((tuple(chars),)))
                self.space(nested)
            elif c == "[":
                self.pos += 1
                negated = self.peek() == "^"
                if negated:
                    self.pos += 1
                ranges: list[tuple[int, int]] = []
                while self.peek() != "]":
                    if not self.peek():
                        raise self.fail("unterminated character class", start)
                    first = self.char()
                    last = first
                    if self.peek() == "-" and self.peek(1) != "]":
                        if not self.peek(1):
                            raise self.fail("unterminated character class", start)
                        self.pos += 1
                        last = self.char()
                    ranges.append((first, last))
                if not ranges:
                    raise self.fail("empty character class", start)
                self.pos += 1
                items.append(Chars(tuple(ranges), negated))
                last_is_item = True
                self.space(nested)
            elif re.match(r"[a-zA-Z0-9-]", c):
                name = self.name()
                self.refs.setdefault(name, start)
                items.append(Ref(name))
                last_is_item = True
                self.space(nested)
            elif c == "(":
                self.pos += 1
                self.space(True)
                group = self.alternates(nested=True)
                if self.peek() != ")":
                    raise self.fail("expecting ')'", start if not self.peek() else None)
                self.pos += 1
                items.append(group)
                last_is_item = True
                self.space(nested)
            elif c == ".":
                self.pos += 1
                items.append(Chars((), negated=True))
                last_is_item = True
                self.space(nested)
            elif c in "*+?{":
                if not last_is_item:
                    raise self.fail(f"{c!r} with no preceding item to repeat")
                self.pos += 1
                if c == "{":
                    self.space(nested)
                    m = re.compile(r"(\d+)[ \t]*(?:(\})|,[ \t]*(\d*)[ \t]*\})").match(self.text, self.pos)
                    if not m:
                        raise self.fail("expecting {m}, {m,} or {m,n}", start)
                    self.pos = m.end()
                    lo = int(m.group(1))
                    hi: int | None = lo if m.group(2) else (int(m.group(3)) if m.group(3) else None)
                else:
                    lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                if hi is not None and hi < lo:
                    raise self.fail(f"repetition {{{lo},{hi}}} with max < min", start)
                if max(lo, hi or 0) > MAX_REPETITION:
                    raise self.fail(f"repetition count over {MAX_REPETITION}", start)
                items[-1] = Repeat(items[-1], lo, hi)
                self.space(nested)
            else:
                break
        return tuple(items)

    def check_left_recursion(self) -> None:
        """llama.cpp refuses (NULL) a grammar where a rule can reach itself without consuming a character."""
        nullable: dict[str, bool] = {}

        def node_nullable(node: Node, seen: frozenset[str]) -> bool:
            if isinstance(node, Chars):
                return False
            if isinstance(node, Repeat):
                return node.min == 0 or node_nullable(node.node, seen)
            if isinstance(node, Ref):
                if node.name in nullable:
                    return nullable[node.name]
                if node.name in seen:
                    return False
                value = node_nullable(self.rules[node.name], seen | {node.name})
                nullable[node.name] = value
                return value
            return any(all(node_nullable(n, seen) for n in alt) for alt in node.alternatives)

        def leftmost(node: Node) -> set[str]:
            """Rules that can be entered before any character is consumed."""
            if isinstance(node, Chars):
                return set()
            if isinstance(node, Ref):
                return {node.name}
            if isinstance(node, Repeat):
                return leftmost(node.node)
            out: set[str] = set()
            for alt in node.alternatives:
                for n in alt:
                    out |= leftmost(n)
                    if not node_nullable(n, frozenset()):
                        break
            return out

        def check_repeats(node: Node) -> None:
            if isinstance(node, Repeat):
                if node.max is None and node_nullable(node.node, frozenset()):
                    # llama.cpp rewrites x* as  x' ::= x x' |  which is left-recursive when x can be empty
                    raise ValueError("invalid grammar: an unbounded repetition of an item that can be empty")
                check_repeats(node.node)
            elif isinstance(node, Group):
                for alternative in node.alternatives:
                    for item in alternative:
                        check_repeats(item)

        for group in self.rules.values():
            check_repeats(group)
        edges = {name: leftmost(group) for name, group in self.rules.items()}
        state: dict[str, int] = {}  # 1 = in progress, 2 = done

        def walk(name: str, path: list[str]) -> None:
            state[name] = 1
            for nxt in sorted(edges[name]):
                if state.get(nxt) == 1:
                    cycle = " -> ".join([*path[path.index(nxt) :], nxt]) if nxt in path else nxt
                    raise ValueError(f"invalid grammar: left recursion ({cycle}); llama.cpp refuses such grammars")
                if nxt not in state:
                    walk(nxt, [*path, nxt])
            state[name] = 2

        for name in self.rules:
            if name not in state:
                walk(name, [name])


def parse_grammar(text: str) -> dict[str, Group]:
    """The rules of a GBNF grammar (name → alternatives); ``ValueError`` where llama.cpp would refuse it."""
    if not isinstance(text, str):
        raise ValueError(f"a grammar must be a str, got {type(text).__name__}")
    if "\x00" in text:
        raise ValueError("invalid grammar: it contains a NUL character (llama.cpp reads a C string)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"invalid grammar: not encodable as UTF-8 (a lone surrogate at index {exc.start})") from exc
    return _GbnfParser(text).parse()


def validate_grammar(text: str) -> None:
    """Raise ``ValueError`` (saying what and where) unless llama.cpp's grammar parser accepts ``text``.

    Checks what ``llama_sampler_init_grammar`` checks before it returns NULL: rule names, ``::=``, literals
    and character classes (terminated, known escapes only), balanced parentheses, repetition operators
    with something to repeat, references to undefined rules, a ``root`` rule, and left recursion.
    Empty alternatives (``a ::= "x" |``) are allowed, as in llama.cpp.
    """
    parse_grammar(text)
