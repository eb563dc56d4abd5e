"""The MQTT contract with the robots (../shared/PROTOCOL.md): topics, request parsing, answer payloads.

Parsing never raises anything but :class:`PayloadError`, whose ``code`` and ``message`` go to the
device's error topic (its ``device_id`` is set whenever the payload named a valid device), so one bad
message cannot stop the server or leave a robot waiting. Besides missing fields and wrong types, a message
is refused when it repeats a key, holds NaN/Infinity (not JSON) or an integer of more than 256 digits, or
has ids that could not be stored or sent back (control characters, lone surrogates, "." and "..").
The request's text is passed on as sent: the graph makes it storable (nodes.speech.storable_text).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

STT_TOPIC = "naila/ai/processing/stt/+"
STT_PREFIX = "naila/ai/processing/stt/"
TASK_TOPIC = "naila/ai/orchestration/main/task"
CANCEL_TOPIC = "naila/ai/orchestration/main/cancel"
RESPONSE_TOPIC = "naila/ai/responses/text"
METRICS_TOPIC = "naila/ai/metrics"
STATUS_TOPIC = "naila/ai/status"
HEALTH_TOPIC = "naila/system/health/services"
STARTUP_TOPIC = "naila/system/health/startup"
SHUTDOWN_TOPIC = "naila/system/health/shutdown"
COMMAND_TOPIC = "naila/command/request"  # robot actions, upstream NAILA's command topic
FORGET_TOPIC = "naila/ai/memory/forget"  # {"device_id"}: forget the device's conversation and facts
FORGOTTEN_TOPIC = "naila/ai/memory/forgotten"  # the answer: what was forgotten
INPUT_TOPICS = (STT_TOPIC, TASK_TOPIC, CANCEL_TOPIC, FORGET_TOPIC)

_DEVICE_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
# "." and ".." pass the pattern but make MQTT topic levels and file names (memory, logs) ambiguous.
_DOT_IDS = frozenset({".", ".."})
_TASK_ID_MAX = 256
_INPUT_TYPE_MAX = 32
# No protocol field needs a longer integer; json.loads itself refuses more than 4,300 digits with a ValueError.
_MAX_INT_DIGITS = 256
# Control characters and lone surrogates: an id holding one cannot be stored (PostgreSQL refuses U+0000)
# or sent back (UTF-8 cannot encode a surrogate), so the device could never be answered about it.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")
# Epoch seconds a timestamp can name: what an ISO 8601 time can express (years 1 to 9999).
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
_EPOCH_MS_ABOVE = 1e11  # a larger epoch number is in milliseconds (1e11 s is the year 5138)
_TIMESTAMP_HELP = "an ISO 8601 time such as 2025-01-15T10:30:48Z, or epoch seconds or milliseconds"


def stream_topic(device_id: str) -> str:
    return f"naila/ai/responses/text/{device_id}/stream"


def error_topic(device_id: str) -> str:
    return f"naila/ai/responses/error/{device_id}"


def utc_timestamp(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(at if at is not None else time.time(), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PayloadError(ValueError):
    """A request that cannot be served; ``code`` is the protocol's error name."""

    def __init__(self, code: str, message: str, *, device_id: str | None = None, task_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.device_id = device_id
        self.task_id = task_id


@dataclass
class Request:
    """One turn to answer."""

    device_id: str
    task_id: str
    text: str
    input_type: str  # "stt" | "text"
    confidence: float | None
    thread_id: str
    timestamp: float | None = None  # when the device sent it (epoch seconds), if it said
    received: float = field(default_factory=time.monotonic)
    inbox_id: int | None = None  # its row in the server's durable inbox (naila_graph.inbox), once written


@dataclass
class CancelRequest:
    device_id: str
    task_id: str | None


@dataclass
class ForgetRequest:
    """Forget a device: its conversation (the device's memory thread) and the facts about its person."""

    device_id: str
    task_id: str | None


# ---------------------------------------------------------------------------------------------------
# Decoding: every byte string becomes a JSON object or a PayloadError
# ---------------------------------------------------------------------------------------------------


class _Unusable:
    """A value json.loads would take but no field can use: NaN/Infinity (not JSON) or an over-long integer.

    Decoding keeps it in place, so the message is refused once the device id is known (and gets a reply).
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what


class _RepeatedKey(dict[str, Any]):
    """A JSON object in which ``key`` appears more than once (JSON parsers disagree on which value wins)."""

    key: str = ""


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    repeated = _RepeatedKey(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            repeated.key = key
            break
        seen.add(key)
    return repeated


def _json_int(digits: str) -> int | _Unusable:
    count = len(digits.lstrip("-"))
    return int(digits) if count <= _MAX_INT_DIGITS else _Unusable(f"a {count}-digit integer")


def _json_constant(name: str) -> _Unusable:
    return _Unusable(f"{name}, which is not a JSON number")


def _json_type(value: Any) -> str:
    """The JSON name of ``value``'s type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | _Unusable):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _shown(value: Any, limit: int = 60) -> str:
    """``value`` for an error message: short, printable (repr escapes control characters and surrogates)."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("…" if len(value) > limit else "")
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, _Unusable):
        return value.what
    return f"a JSON {_json_type(value)}"


def _decode(payload: bytes, max_bytes: int, device_id: str | None) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise PayloadError(
            "payload_too_large",
            f"the message has {len(payload)} bytes; the limit is {max_bytes} (MQTT_MAX_PAYLOAD_BYTES)",
            device_id=device_id,
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            "invalid_payload", f"the message is not UTF-8 text ({exc.reason} at byte {exc.start})", device_id=device_id
        ) from None
    try:
        obj = json.loads(text, object_pairs_hook=_json_object, parse_int=_json_int, parse_constant=_json_constant)
    except RecursionError:
        raise PayloadError("invalid_payload", "the message's JSON is nested too deeply", device_id=device_id) from None
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "invalid_payload",
            f"the message is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            device_id=device_id,
        ) from None
    except ValueError as exc:  # a number Python refuses to convert; the hooks above should leave none
        raise PayloadError(
            "invalid_payload", f"the message's JSON cannot be read ({exc})", device_id=device_id
        ) from None
    if not isinstance(obj, dict):
        raise PayloadError(
            "invalid_payload", f"the message must be a JSON object, not {_json_type(obj)}", device_id=device_id
        )
    return obj


def _check_values(obj: dict[str, Any]) -> None:
    """Refuse a message holding a repeated key, NaN/Infinity or an over-long integer, at any depth."""
    if isinstance(obj, _RepeatedKey):
        raise PayloadError("invalid_payload", f"the key {_shown(obj.key)} appears more than once; send each key once")
    for name, top in obj.items():
        pending = [top]  # iterative: the JSON may nest as deep as json.loads allows
        while pending:
            value = pending.pop()
            if isinstance(value, _Unusable):
                raise PayloadError("invalid_payload", f"{_shown(name)} holds {value.what}; send a finite number")
            if isinstance(value, _RepeatedKey):
                raise PayloadError(
                    "invalid_payload",
                    f"the key {_shown(value.key)} appears more than once in {_shown(name)}; send each key once",
                )
            if isinstance(value, dict):
                pending.extend(value.values())
            elif isinstance(value, list):
                pending.extend(value)


# ---------------------------------------------------------------------------------------------------
# Fields
# ---------------------------------------------------------------------------------------------------


def _valid_device(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _DEVICE_ID.fullmatch(value):
        raise PayloadError(
            "invalid_payload",
            f"{where} must be 1-128 characters of letters, digits and _ . : @ - (got {_shown(value, 80)})",
        )
    if value in _DOT_IDS:
        raise PayloadError(
            "invalid_payload", f"{where} cannot be '.' or '..' (they make MQTT topic levels and file names ambiguous)"
        )
    return value


def _known_device(obj: dict[str, Any]) -> str | None:
    """The payload's device id when it is valid and unambiguous: the device an error goes to."""
    if isinstance(obj, _RepeatedKey) and obj.key == "device_id":
        return None
    value = obj.get("device_id")
    return value if isinstance(value, str) and _DEVICE_ID.fullmatch(value) and value not in _DOT_IDS else None


def _text_field(obj: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        if name in obj and obj[name] is not None:
            value = obj[name]
            if not isinstance(value, str):
                raise PayloadError("invalid_payload", f"'{name}' must be a string, not {_json_type(value)}")
            return value
    raise PayloadError("invalid_payload", f"missing field: {' or '.join(repr(n) for n in names)}")


def _finite(value: int | float) -> float:
    """``value`` as a float; infinite when it is too large for one (a long integer)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _confidence(obj: dict[str, Any], required: bool) -> float | None:
    if "confidence" not in obj or obj["confidence"] is None:
        if required:
            raise PayloadError("invalid_payload", "missing field: 'confidence' (a number from 0 to 1)")
        return None
    value = obj["confidence"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(_finite(value)):
        raise PayloadError("invalid_payload", f"'confidence' must be a number from 0 to 1 (got {_shown(value, 40)})")
    number = _finite(value)
    if not 0.0 <= number <= 1.0:
        raise PayloadError("invalid_payload", f"'confidence' must be between 0 and 1 (got {_shown(value, 40)})")
    return number


def _timestamp(obj: dict[str, Any]) -> float | None:
    value = obj.get("timestamp")
    if value is None:
        return None
    if isinstance(value, bool):
        raise PayloadError("invalid_payload", f"'timestamp' must be {_TIMESTAMP_HELP}, not a boolean")
    if isinstance(value, int | float):
        seconds = _finite(value)
        if seconds > _EPOCH_MS_ABOVE:
            seconds /= 1000.0
        if not (math.isfinite(seconds) and _EARLIEST <= seconds <= _LATEST):
            raise PayloadError(
                "invalid_payload",
                f"'timestamp' must be a finite time between the years 1 and 9999: {_TIMESTAMP_HELP} "
                f"(got {_shown(value, 40)})",
            )
        return seconds
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        except (ValueError, OverflowError):
            raise PayloadError(
                "invalid_payload", f"'timestamp' is not an ISO 8601 time (got {_shown(value)})"
            ) from None
    raise PayloadError("invalid_payload", f"'timestamp' must be {_TIMESTAMP_HELP}, not {_json_type(value)}")


def _task_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("task_id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError("invalid_payload", f"'task_id' must be a string, not {_json_type(value)}")
    text = str(value)
    if not text.strip() or len(text) > _TASK_ID_MAX or _UNPRINTABLE.search(text):
        raise PayloadError(
            "invalid_payload",
            f"'task_id' must be 1-{_TASK_ID_MAX} characters without control characters (got {_shown(text)})",
        )
    return text


def _known_task_id(obj: dict[str, Any]) -> str | None:
    """The payload's task id when it is valid: an error about another field names it."""
    try:
        return _task_id(obj)
    except PayloadError:
        return None


def _input_type(obj: dict[str, Any]) -> str:
    value = obj.get("input_type", "text")
    if not isinstance(value, str) or len(value) > _INPUT_TYPE_MAX or _UNPRINTABLE.search(value):
        raise PayloadError(
            "invalid_payload",
            f"'input_type' must be a string such as \"text\" (at most {_INPUT_TYPE_MAX} characters, "
            f"no control characters; got {_shown(value, 40)})",
        )
    return value


def _with_ids(exc: PayloadError, device_id: str | None, task_id: str | None) -> PayloadError:
    exc.device_id = exc.device_id or device_id
    exc.task_id = exc.task_id or task_id
    return exc


# ---------------------------------------------------------------------------------------------------
# Parsers: each maps every payload to a request or a PayloadError (with the device id when known)
# ---------------------------------------------------------------------------------------------------


def parse_stt(topic: str, payload: bytes, *, max_bytes: int) -> Request:
    """``naila/ai/processing/stt/{device_id}``; the topic's device id wins over the payload's."""
    device_id = _valid_device(topic[len(STT_PREFIX) :], "the device id in the topic")
    obj = _decode(payload, max_bytes, device_id)
    task_id = f"stt-{device_id}-{int(time.time() * 1000)}"
    try:
        _check_values(obj)
        text = _text_field(obj, ("transcription",))
        confidence = _confidence(obj, required=True)
        sent = _timestamp(obj)
    except PayloadError as exc:
        raise _with_ids(exc, device_id, task_id) from None
    return Request(device_id, task_id, text, "stt", confidence, device_id, sent)


def parse_task(payload: bytes, *, max_bytes: int) -> Request:
    """``naila/ai/orchestration/main/task``."""
    obj = _decode(payload, max_bytes, None)
    device_id, task_id = _known_device(obj), _known_task_id(obj)
    try:
        _check_values(obj)
        device_id = _valid_device(obj.get("device_id"), "'device_id'")
        task_id = _task_id(obj) or f"task-{device_id}-{uuid.uuid4().hex[:12]}"
        text = _text_field(obj, ("transcription", "query"))
        confidence = _confidence(obj, required=False)
        sent = _timestamp(obj)
        input_type = _input_type(obj)
        conversation = obj.get("conversation_id")
        if conversation is not None:
            conversation = _valid_device(conversation, "'conversation_id'")
    except PayloadError as exc:
        raise _with_ids(exc, device_id, task_id) from None
    return Request(device_id, task_id, text, input_type, confidence, conversation or device_id, sent)


def parse_cancel(payload: bytes, *, max_bytes: int) -> CancelRequest:
    """``naila/ai/orchestration/main/cancel``."""
    obj = _decode(payload, max_bytes, None)
    device_id = _known_device(obj)
    try:
        _check_values(obj)
        return CancelRequest(_valid_device(obj.get("device_id"), "'device_id'"), _task_id(obj))
    except PayloadError as exc:
        raise _with_ids(exc, device_id, _known_task_id(obj)) from None


def parse_forget(payload: bytes, *, max_bytes: int) -> ForgetRequest:
    """``naila/ai/memory/forget``: ``{"device_id": ..., "task_id": optional}``."""
    obj = _decode(payload, max_bytes, None)
    device_id = _known_device(obj)
    try:
        _check_values(obj)
        return ForgetRequest(_valid_device(obj.get("device_id"), "'device_id'"), _task_id(obj))
    except PayloadError as exc:
        raise _with_ids(exc, device_id, _known_task_id(obj)) from None


def forgotten_payload(forget: ForgetRequest, *, conversation: bool, facts: int) -> dict[str, Any]:
    """What a forget removed: ``conversation`` whether the device had one, ``facts`` how many facts."""
    return {
        "task_id": forget.task_id,
        "source": "ai_server",
        "device_id": forget.device_id,
        "forgotten": {"conversation": conversation, "facts": facts},
        "timestamp": utc_timestamp(),
    }


def _addressed(request: Request) -> dict[str, Any]:
    """What every message about a request starts with: its task, our name, its device, the time."""
    return {
        "task_id": request.task_id,
        "source": "ai_server",
        "target_device": request.device_id,
        "timestamp": utc_timestamp(),
    }


def _said(result: dict[str, Any]) -> dict[str, Any]:
    """The answer's words and the intent they answer."""
    return {
        "text": result.get("response_text", ""),
        "intent": result.get("intent", "general"),
        "confidence": round(float(result.get("intent_confidence") or 0.0), 3),
    }


def response_payload(request: Request, result: dict[str, Any]) -> dict[str, Any]:
    return {
        **_addressed(request),
        "response": {
            **_said(result),
            "source": result.get("response_source") or "pattern",
            "finish_reason": result.get("finish_reason") or "stop",
            "expects_reply": bool(result.get("expects_reply")),
            **({"actions": list(result["actions"])} if result.get("actions") else {}),
        },
    }


def command_payload(request: Request, result: dict[str, Any]) -> dict[str, Any]:
    """The ``naila/command/request`` message of the actions a turn took (upstream NAILA's format)."""
    return {
        **_addressed(request),
        "priority": "normal",
        "response": _said(result),
        "commands": list(result.get("commands") or []),
    }


def stream_payload(task_id: str, seq: int, text: str, *, final: bool, replaced: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"task_id": task_id, "seq": seq, "text": text, "final": final}
    if replaced:
        out["replaced"] = True
    return out


def error_payload(task_id: str | None, code: str, message: str) -> dict[str, Any]:
    return {"task_id": task_id, "error": code, "message": message, "timestamp": utc_timestamp()}


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def new_task_id(prefix: str = "ask") -> str:
    """A task id for a request this side makes up (``naila ask``): ``<prefix>-<12 hex digits>``."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
