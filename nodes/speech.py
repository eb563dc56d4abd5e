"""Speech-first text: markdown/markup cleaning and streaming sentence segmentation.

``clean_for_speech`` works line by line and never looks across lines, so applying it to each sentence
of a :class:`SentenceSplitter` and joining with spaces gives the same text as applying it to the whole
answer (the stream and the final answer agree). One consequence: the content of a fenced code block
is kept as plain text (only the fence lines are dropped), because a single streamed line cannot know
it sits inside a fence. The persona asks for no code, so this is a rare case.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "SentenceSplitter",
    "clean_for_speech",
    "ends_with_question",
    "has_control_markup",
    "split_sentences",
    "storable_text",
]

# ---------------------------------------------------------------------------------------------------
# Character classes shared by the splitter and the cleaner
# ---------------------------------------------------------------------------------------------------

_TERMINATORS = frozenset(".!?…。！？؟")
_CJK_TERMINATORS = frozenset("。！？")  # these end a sentence even without a following space
_QUESTION_MARKS = frozenset("?？؟")
# Closing quotes/brackets and markdown emphasis closers that belong to the sentence before them.
_CLOSERS = frozenset("\"'”’»›)]}」』】〉》*_~`")
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_EMOJI_JOINERS = frozenset("\u200d\ufe0f\ufe0e\u20e3")


def _is_emoji(ch: str) -> bool:
    """True for pictographic symbols and the joiners/modifiers that glue emoji sequences together."""
    code = ord(ch)
    if code < 0x2000:
        return False
    if ch in _EMOJI_JOINERS or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True
    return unicodedata.category(ch) == "So"


def _is_horizontal_space(ch: str) -> bool:
    return ch.isspace() and ch not in _LINE_BREAKS


# ---------------------------------------------------------------------------------------------------
# Storable text
# ---------------------------------------------------------------------------------------------------

# PostgreSQL text refuses U+0000 (psycopg: UntranslatableCharacter); the other C0 controls and DEL are
# invisible and never spoken. Whitespace controls (tab, line breaks, separators) stay: callers collapse them.
_UNSTORABLE_CONTROL = re.compile("[\x00-\x08\x0e-\x1b\x7f]")
# A lone surrogate (what json.loads gives for "\ud800", or surrogateescape for undecodable bytes) cannot be
# encoded as UTF-8: no memory backend can store it and no MQTT payload can carry it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` as every memory backend (SQLite, PostgreSQL) and the UTF-8 wire can hold it.

    NUL and the other non-whitespace C0 control characters (U+0000-U+0008, U+000E-U+001B) and DEL are
    removed; a surrogate pair becomes the character it encodes and a lone surrogate becomes U+FFFD.
    Everything else, whitespace included, is kept as it is.
    """
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return _UNSTORABLE_CONTROL.sub("", text)


# ---------------------------------------------------------------------------------------------------
# Control markup
# ---------------------------------------------------------------------------------------------------

_CONTROL_TOKEN = re.compile(
    r"<\|[^<>|\s]{1,64}\|>"  # <|eot_id|>, <|im_start|>, <|endoftext|> …
    r"|<｜[^<>｜]{1,64}｜>"  # DeepSeek's full-width variant
    r"|</?s>|\[/?INST\]|<</?SYS>>"  # Llama 2 / Mistral
    r"|</?(?:start_of_turn|end_of_turn)>|<(?:eos|bos|unk|pad)>"  # Gemma and friends
)
_HEADER_BLOCK = re.compile(r"<\|start_header_id\|>.*?<\|end_header_id\|>", re.S)
_TURN_WITH_ROLE = re.compile(r"(?:<\|im_start\|>|<start_of_turn>)(?:[ \t]*(?:assistant|user|system|model)\b)?", re.I)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S)


def has_control_markup(text: str) -> bool:
    """True when ``text`` contains chat-template control markup (``<|eot_id|>``, ``</s>``, ``[INST]`` …)."""
    return _CONTROL_TOKEN.search(text) is not None


def _drop_thinking(text: str) -> str:
    text = _THINK_BLOCK.sub(" ", text)
    if "</think>" in text:  # the opening tag came from the template: everything before was thinking
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:  # unfinished thinking
        text = text.split("<think>", 1)[0]
    return text


def _drop_control_markup(text: str) -> str:
    text = _HEADER_BLOCK.sub(" ", text)
    text = _TURN_WITH_ROLE.sub(" ", text)
    return _CONTROL_TOKEN.sub(" ", text)


# ---------------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(?:```|~~~)")
_RULE = re.compile(r"([-*_])[ \t]*(?:\1[ \t]*){2,}")
_TABLE_SEPARATOR = re.compile(r"\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)*\|?")
_QUOTE = re.compile(r"^(?:>[ \t]?)+")
_ROLE_LABEL = re.compile(r"^(?:\*\*|__)?(?:assistant|naila|ai)(?:\*\*|__)?[ \t]*:(?:\*\*|__)?[ \t]*", re.I)
_HEADING = re.compile(r"^#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?$")
_LIST_MARKER = re.compile(r"^(?:[-*+•▪◦‣]|\d{1,3}[.)])[ \t]+")

_IMAGE_OR_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^()\s]|\([^()\s]*\))*(?:[ \t]+\"[^\"]*\")?\)")
_REFERENCE_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^<>\s]+)>")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1")
_LINE_BREAK_TAG = re.compile(r"<br\s*/?>", re.I)
_HTML_TAG = re.compile(r"</?(?:b|i|em|strong|u|p|code|span|div|sup|sub|small|mark|del|ins)\b[^<>]*>", re.I)
_EMPHASIS = (
    re.compile(r"\*\*\*(?=\S)(.+?)(?<=\S)\*\*\*"),
    re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"),
    re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])"),
    re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)"),
    re.compile(r"(?<!\w)_(?=[^\s_])(.+?)(?<=[^\s_])_(?!\w)"),  # never inside words: snake_case stays
    re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"),
)
# Emphasis markers left unpaired (e.g. bold spanning two streamed sentences): never spoken.
_LEFTOVER_MARKERS = re.compile(r"\*{2,}|~~|(?<!\S)\*(?=\S)|(?<=\S)\*(?!\S)|(?<!\w)_+(?=\w)|(?<=\w)_+(?!\w)")
_SENTENCE_END = frozenset(".!?…:;,。！？؟")


def _end_with_period(text: str) -> str:
    """Give a list item/heading a final period (before any trailing emoji) unless it has punctuation."""
    end = len(text)
    while end > 0 and (_is_emoji(text[end - 1]) or text[end - 1].isspace()):
        end -= 1
    core, tail = text[:end], text[end:]
    if not core or core.rstrip("".join(_CLOSERS))[-1:] in _SENTENCE_END:
        return text
    return core + "." + tail


def _clean_inline(text: str) -> str:
    text = _IMAGE_OR_LINK.sub(r"\1", text)
    text = _REFERENCE_LINK.sub(r"\1", text)
    text = _AUTOLINK.sub(r"\1", text)
    text = _INLINE_CODE.sub(r"\2", text).replace("`", "")
    text = _LINE_BREAK_TAG.sub(" ", text)
    text = _HTML_TAG.sub("", text)
    for pattern in _EMPHASIS:
        text = pattern.sub(r"\1", text)
    return _LEFTOVER_MARKERS.sub("", text)


def _clean_line(line: str) -> str:
    text = line.strip()
    if not text or _FENCE.match(text) or _RULE.fullmatch(text) or _TABLE_SEPARATOR.fullmatch(text):
        return ""
    text = _QUOTE.sub("", text)
    text = _ROLE_LABEL.sub("", text)
    block = True  # headings, list items and table rows become sentences of their own
    if heading := _HEADING.match(text):
        text = heading.group(1)
    elif marker := _LIST_MARKER.match(text):
        text = text[marker.end() :]
    elif text.startswith("|") or (text.endswith("|") and text.count("|") >= 2):
        text = ", ".join(cell.strip() for cell in text.split("|") if cell.strip())
    else:
        block = False
    text = " ".join(_clean_inline(text).split())
    return _end_with_period(text) if block and text else text


def clean_for_speech(text: str) -> str:
    """Plain speakable text: no markdown, no role labels, no thinking, no chat-template markup.

    Lists, headings and table rows become sentences (a period is added when they have no final
    punctuation); links keep their text; inline code keeps its text; fence lines are dropped but the
    code inside is kept (see the module docstring). Works on a whole answer or on one sentence.
    The result is storable (:func:`storable_text`) and holds no C0 control character (tabs and line breaks too).
    """
    text = _drop_control_markup(_drop_thinking(storable_text(text)))
    lines = (_clean_line(line) for line in text.splitlines())
    return " ".join(line for line in lines if line)


# ---------------------------------------------------------------------------------------------------
# Sentences
# ---------------------------------------------------------------------------------------------------

# A period after these never ends a sentence ("Dr. Who", "e.g. Paris").
_NEVER_FINAL = frozenset({"dr", "mr", "mrs", "ms", "mx", "prof", "st", "mt", "sr", "jr", "vs", "e.g", "i.e", "cf"})
# A period after these does not end a sentence when a number follows ("No. 5", "p. 12").
_BEFORE_NUMBER = frozenset({"no", "nr", "nos", "vol", "fig", "p", "pp", "art", "ch", "sec", "op"})
# A period after these ends a sentence only when the next word is not lowercase ("etc. and" vs "etc. The").
_SOMETIMES_FINAL = frozenset({"etc", "a.m", "p.m", "approx", "incl"})
_LIST_NUMBER = re.compile(r"\s*\d{1,3}")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"

_WAIT = object()  # not enough text yet to decide


class SentenceSplitter:
    """Streaming sentence segmentation: feed text as it arrives, get complete sentences back.

    A sentence ends at ``.``, ``!``, ``?``, ``…`` (or a run such as ``?!`` / ``...``), optionally
    followed by closing quotes/brackets and emoji, then whitespace; a line break always ends one.
    Decimals, common abbreviations, initials and ``No. 5`` do not end a sentence, an ellipsis followed
    by a lowercase word does not either, and ``<think>…</think>`` is never split. A decision is taken
    only once the text after the punctuation has been seen, so any chunking of the same text yields
    the same sentences.
    """

    def __init__(self) -> None:
        self._buf = ""
        self._pos = 0  # no boundary before this index of the buffer
        self._in_think = False

    def feed(self, text: str) -> list[str]:
        """Add ``text``; return the sentences completed by it (stripped, non-empty)."""
        self._buf += text
        return self._drain(final=False)

    def flush(self) -> str | None:
        """End of text: return what remains (stripped), or None when nothing does; the splitter resets."""
        parts = [*self._drain(final=True), self._buf.strip()]
        self._buf, self._pos, self._in_think = "", 0, False
        rest = " ".join(part for part in parts if part)
        return rest or None

    def _drain(self, *, final: bool) -> list[str]:
        sentences: list[str] = []
        while (cut := self._next_boundary(final)) is not None:
            end, resume = cut
            sentence = self._buf[:end].strip()
            if sentence:
                sentences.append(sentence)
            self._buf, self._pos = self._buf[resume:], 0
        return sentences

    def _next_boundary(self, final: bool) -> tuple[int, int] | None:
        buf, n, i = self._buf, len(self._buf), self._pos
        while i < n:
            if self._in_think:
                close = buf.find(_THINK_CLOSE, i)
                if close < 0:
                    self._pos = max(i, n - len(_THINK_CLOSE) + 1)  # a partial "</think" may be at the end
                    return None
                i, self._in_think = close + len(_THINK_CLOSE), False
                continue
            ch = buf[i]
            if ch in _LINE_BREAKS:
                return i, i + 1
            if ch == "<":
                if buf.startswith(_THINK_OPEN, i):
                    i, self._in_think = i + len(_THINK_OPEN), True
                    continue
                if not final and _THINK_OPEN.startswith(buf[i:]):
                    self._pos = i
                    return None
            elif ch in _TERMINATORS:
                decision = self._decide(i, final)
                if decision is _WAIT:
                    self._pos = i
                    return None
                if isinstance(decision, tuple):
                    return decision
                assert isinstance(decision, int)
                i = decision
                continue
            i += 1
        self._pos = n
        return None

    def _decide(self, i: int, final: bool) -> tuple[int, int] | int | object:
        """For the terminator at ``i``: a (cut, resume) boundary, the index to scan on from, or _WAIT."""
        buf, n = self._buf, len(self._buf)
        j = i
        while j < n and buf[j] in _TERMINATORS:
            j += 1
        k = j
        while k < n and buf[k] in _CLOSERS:
            k += 1
        if k == n:
            return (n, n) if final else _WAIT
        run = buf[i:j]
        first = buf[k]
        if first in _LINE_BREAKS:
            return k, k + 1
        cjk = any(ch in _CJK_TERMINATORS for ch in run)
        if not (cjk or _is_horizontal_space(first) or _is_emoji(first)):
            return j  # "3.5", "example.com", "e.g.,"
        cut = pos = k
        while True:  # emoji after the punctuation belong to this sentence: "Great job! 🎉"
            q = pos
            while q < n and _is_horizontal_space(buf[q]):
                q += 1
            if q == n:
                if not final:
                    return _WAIT
                return cut, cut
            if not _is_emoji(buf[q]):
                break
            r = q
            while r < n and _is_emoji(buf[r]):
                r += 1
            if r == n and not final:
                return _WAIT
            cut = pos = r
        following = buf[q]
        if following in _LINE_BREAKS:
            return cut, cut
        if run == "." and not self._period_ends_sentence(i, following):
            return j
        if (run == "…" or (len(run) > 1 and set(run) == {"."})) and following.islower():
            return j  # "Well… maybe" is one sentence
        return cut, cut

    def _period_ends_sentence(self, i: int, following: str) -> bool:
        buf = self._buf
        start = i
        while start > 0 and (buf[start - 1].isalpha() or buf[start - 1] == "."):
            start -= 1
        word = buf[start:i].lstrip(".")
        if not word:
            return not _LIST_NUMBER.fullmatch(buf[:i])  # "1. Open the box" is a list marker
        if start > 0 and buf[start - 1].isalnum():
            return True  # "1st.", "x2."
        lower = word.lower()
        if lower in _NEVER_FINAL:
            return False
        if lower in _BEFORE_NUMBER and following.isdigit():
            return False
        if len(word) == 1 and word.isupper():
            return False  # an initial: "J. R. R. Tolkien"
        if lower in _SOMETIMES_FINAL or "." in word:  # "etc.", "a.m.", "U.S."
            return not (following.islower() or following.isdigit())
        return True


def split_sentences(text: str) -> list[str]:
    """All sentences of a complete text (the same as feeding it to a SentenceSplitter and flushing)."""
    splitter = SentenceSplitter()
    sentences = splitter.feed(text)
    rest = splitter.flush()
    if rest:
        sentences.append(rest)
    return sentences


def ends_with_question(text: str) -> bool:
    """True when the text ends with a question mark, ignoring trailing emoji, quotes and whitespace."""
    end = len(text)
    while end > 0 and (text[end - 1].isspace() or _is_emoji(text[end - 1]) or text[end - 1] in _CLOSERS):
        end -= 1
    start = end
    while start > 0 and text[start - 1] in _TERMINATORS:
        start -= 1
    return any(ch in _QUESTION_MARKS for ch in text[start:end])
