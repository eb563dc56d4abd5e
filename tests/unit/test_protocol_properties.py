"""Property-based tests of the request parsers (issue #12, defect 2): every payload, however broken, becomes a
request or a PayloadError, never another exception; a refusal names the device when the payload had a valid
one (so the robot is answered), and every request and every refusal can be sent back as UTF-8 JSON.

Payloads are written as JSON text rather than through json.dumps, so they can hold what json.dumps will not
write: integers of thousands of digits, NaN/Infinity, lone surrogates, repeated keys.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from naila_graph import protocol as p

MAX_BYTES = 1_000_000  # large: size is tested by the bytes property and in test_protocol.py
ERROR_CODES = {"invalid_payload", "payload_too_large"}
DEVICE_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
ABSENT = None  # a field left out of the payload

# No example database: it would be a directory in the working tree; a failure prints its example anyway.
PROPERTY = settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------------------------------
# JSON text, including what the protocol must refuse
# ----------------------------------------------------------------------------------------------------

# Any code point, lone surrogates included, with NUL and a lone surrogate often.
any_text = st.text(
    st.one_of(st.characters(codec=None, exclude_categories=()), st.sampled_from(["\x00", "\ud800", "\udfff"])),
    max_size=40,
)


def string(text: str) -> str:
    return json.dumps(text)  # ensure_ascii: a surrogate or NUL becomes a \\u escape, as a device would send it


huge_int = st.integers(min_value=300, max_value=6_000).map(lambda n: "9" * n)
number = st.one_of(
    st.integers().map(str),
    huge_int,
    huge_int.map(lambda s: "-" + s),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "0.0"]),
)
scalar = st.one_of(
    st.sampled_from(["null", "true", "false"]), number, any_text.map(string), st.sampled_from(['"."', '".."'])
)


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(pairs: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{string(k)}:{v}" for k, v in pairs) + "}"


json_value = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(_array),
        st.lists(st.tuples(st.sampled_from(["a", "b", "device_id"]) | any_text, inner), max_size=4).map(_object),
    ),
    max_leaves=12,
)

valid_device = st.from_regex(DEVICE_ID, fullmatch=True).filter(lambda d: d not in (".", ".."))

# Plausible values per field, so that many examples get past the first check and reach the later ones.
GOOD: dict[str, st.SearchStrategy[str]] = {
    "device_id": valid_device.map(string),
    "conversation_id": valid_device.map(string),
    "task_id": st.one_of(
        st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True).map(string),
        any_text.map(string),
        st.integers(0, 10**12).map(str),
    ),
    "transcription": any_text.map(string),
    "query": any_text.map(string),
    "confidence": st.floats(0, 1).map(repr),
    "timestamp": st.one_of(
        st.integers(-(10**12), 10**15).map(str),
        st.datetimes().map(lambda d: string(d.isoformat() + "Z")),
    ),
    "input_type": st.sampled_from(['"text"', '"stt"', '"voice"']),
    "priority": st.sampled_from(['"normal"', '"high"']),
}
TASK_FIELDS = ("device_id", "task_id", "transcription", "query", "confidence", "timestamp", "input_type")
TASK_FIELDS += ("conversation_id", "priority")
STT_FIELDS = ("device_id", "transcription", "confidence", "timestamp")
CANCEL_FIELDS = ("device_id", "task_id")


@st.composite
def payload_of(draw: st.DrawFn, fields: tuple[str, ...]) -> tuple[bytes, dict[str, str | None]]:
    """A JSON object: each field absent, plausible or any JSON value; sometimes an extra or repeated key.
    Returns the bytes and, per field, the JSON text it was given (``None`` when absent)."""
    chosen: dict[str, str | None] = {}
    for name in fields:  # mostly plausible, so that many examples reach the later checks and some succeed
        kind = draw(st.sampled_from(["good", "good", "good", "good", "absent", "any"]))
        chosen[name] = ABSENT if kind == "absent" else draw(GOOD[name] if kind == "good" else json_value)
    pairs = [(f, v) for f, v in chosen.items() if v is not ABSENT]
    pairs += draw(st.lists(st.tuples(any_text, json_value), max_size=1))
    if pairs and draw(st.integers(0, 7)) == 0:  # a key sent twice
        key = draw(st.sampled_from([k for k, _ in pairs]))
        pairs.insert(draw(st.integers(0, len(pairs))), (key, draw(json_value)))
    order = draw(st.permutations(pairs))
    return _object(order).encode("utf-8"), chosen


def _repeated(payload: bytes, key: str) -> bool:
    pairs = json.loads(payload, object_pairs_hook=lambda ps: ps, parse_int=str, parse_constant=str)
    return [k for k, _ in pairs].count(key) > 1


def _valid_device_in(payload: bytes, chosen: dict[str, str | None]) -> str | None:
    """The device id a refusal must carry: the one plausible device id given once."""
    text = chosen.get("device_id")
    if text is None or _repeated(payload, "device_id"):
        return None
    value = json.loads(text, parse_int=float)  # a number is never a device id (and may be too long for int)
    return value if isinstance(value, str) and DEVICE_ID.fullmatch(value) and value not in (".", "..") else None


# ----------------------------------------------------------------------------------------------------
# What every outcome must satisfy
# ----------------------------------------------------------------------------------------------------


def _check_refusal(error: p.PayloadError, device_id: str | None) -> None:
    assert error.code in ERROR_CODES and error.message
    if device_id is not None:
        assert error.device_id == device_id, (error.device_id, error.message)
    if error.device_id is not None:
        assert DEVICE_ID.fullmatch(error.device_id) and error.device_id not in (".", "..")
    p.encode(p.error_payload(error.task_id, error.code, error.message))  # the reply can be sent


def _check_request(request: p.Request) -> None:
    for device in (request.device_id, request.thread_id):
        assert DEVICE_ID.fullmatch(device) and device not in (".", "..")
    assert 0 < len(request.task_id) <= 256 and not UNPRINTABLE.search(request.task_id)
    assert isinstance(request.text, str) and isinstance(request.input_type, str)
    assert not UNPRINTABLE.search(request.input_type)
    assert request.confidence is None or (math.isfinite(request.confidence) and 0 <= request.confidence <= 1)
    assert request.timestamp is None or math.isfinite(request.timestamp)
    p.encode(p.response_payload(request, {"response_text": "ok"}))  # the answer can be sent


def _outcome(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args, max_bytes=MAX_BYTES)
    except p.PayloadError as error:
        return error


# ----------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------


@PROPERTY
@given(payload=st.binary(max_size=512), max_bytes=st.integers(0, 600), device=valid_device)
def test_arbitrary_bytes_give_a_request_or_a_refusal(payload: bytes, max_bytes: int, device: str) -> None:
    for parse in (p.parse_task, p.parse_cancel):
        try:
            result = parse(payload, max_bytes=max_bytes)
        except p.PayloadError as error:
            _check_refusal(error, None)
        else:
            assert isinstance(result, p.Request | p.CancelRequest)
    try:
        request = p.parse_stt(p.STT_PREFIX + device, payload, max_bytes=max_bytes)
    except p.PayloadError as error:
        _check_refusal(error, device)
    else:
        _check_request(request)


@PROPERTY
@given(document=json_value)
def test_any_json_document_gives_a_request_or_a_refusal(document: str) -> None:
    payload = document.encode("utf-8")
    for parse in (p.parse_task, p.parse_cancel):
        result = _outcome(parse, payload)
        if isinstance(result, p.PayloadError):
            _check_refusal(result, None)
        elif isinstance(result, p.Request):
            _check_request(result)
    result = _outcome(p.parse_stt, "naila/ai/processing/stt/robot_1", payload)
    if isinstance(result, p.PayloadError):
        _check_refusal(result, "robot_1")


@PROPERTY
@given(generated=payload_of(TASK_FIELDS))
def test_any_value_in_any_task_field_gives_a_request_or_a_refusal(generated: tuple[bytes, dict[str, Any]]) -> None:
    payload, chosen = generated
    result = _outcome(p.parse_task, payload)
    if isinstance(result, p.PayloadError):
        _check_refusal(result, _valid_device_in(payload, chosen))
    else:
        assert isinstance(result, p.Request)
        _check_request(result)
        assert not _repeated(payload, "device_id")


@PROPERTY
@given(generated=payload_of(STT_FIELDS), device=valid_device)
def test_any_value_in_any_stt_field_gives_a_request_or_a_refusal(
    generated: tuple[bytes, dict[str, Any]], device: str
) -> None:
    payload, _ = generated
    result = _outcome(p.parse_stt, p.STT_PREFIX + device, payload)
    if isinstance(result, p.PayloadError):
        _check_refusal(result, device)  # the topic names the device: every refusal is answered
        assert result.task_id is not None and result.task_id.startswith(f"stt-{device}-")
    else:
        assert isinstance(result, p.Request) and result.device_id == device and result.input_type == "stt"
        _check_request(result)


@PROPERTY
@given(generated=payload_of(CANCEL_FIELDS))
def test_any_value_in_any_cancel_field_gives_a_request_or_a_refusal(generated: tuple[bytes, dict[str, Any]]) -> None:
    payload, chosen = generated
    result = _outcome(p.parse_cancel, payload)
    if isinstance(result, p.PayloadError):
        _check_refusal(result, _valid_device_in(payload, chosen))
    else:
        assert isinstance(result, p.CancelRequest)
        assert DEVICE_ID.fullmatch(result.device_id) and result.device_id not in (".", "..")
        assert result.task_id is None or not UNPRINTABLE.search(result.task_id)


@PROPERTY
@given(device=any_text)
def test_any_device_id_in_the_stt_topic_gives_a_request_or_a_refusal(device: str) -> None:
    result = _outcome(p.parse_stt, p.STT_PREFIX + device, b'{"transcription": "hi", "confidence": 0.9}')
    if isinstance(result, p.PayloadError):
        _check_refusal(result, None)
    else:
        _check_request(result)
        assert result.device_id == device
