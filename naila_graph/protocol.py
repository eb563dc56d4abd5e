"""The MQTT contract with the robots (../shared/PROTOCOL.md): topics, request parsing, answer payloads.

Parsing never raises anything but :class:`PayloadError`, whose ``code`` and ``message`` go to the
device's error topic, so one bad message cannot stop the server.
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
INPUT_TOPICS = (STT_TOPIC, TASK_TOPIC, CANCEL_TOPIC)

_DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
_TASK_ID_MAX = 256


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


@dataclass
class CancelRequest:
    device_id: str
    task_id: str | None


def _valid_device(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _DEVICE_ID.match(value):
        raise PayloadError(
            "invalid_payload",
            f"{where} must be 1-128 characters of letters, digits and _ . : @ - (got {value!r:.80})",
        )
    return value


def _known_device(obj: dict[str, Any]) -> str | None:
    value = obj.get("device_id")
    return value if isinstance(value, str) and _DEVICE_ID.match(value) else None


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
        obj = json.loads(text)
    except RecursionError:
        raise PayloadError("invalid_payload", "the message's JSON is nested too deeply", device_id=device_id) from None
    except json.JSONDecodeError as exc:
        raise PayloadError(
            "invalid_payload",
            f"the message is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
            device_id=device_id,
        ) from None
    if not isinstance(obj, dict):
        raise PayloadError(
            "invalid_payload", f"the message must be a JSON object, not {type(obj).__name__}", device_id=device_id
        )
    return obj


def _text_field(obj: dict[str, Any], names: tuple[str, ...]) -> str:
    for name in names:
        if name in obj and obj[name] is not None:
            value = obj[name]
            if not isinstance(value, str):
                raise PayloadError("invalid_payload", f"'{name}' must be a string, not {type(value).__name__}")
            return value
    raise PayloadError("invalid_payload", f"missing field: {' or '.join(repr(n) for n in names)}")


def _confidence(obj: dict[str, Any], required: bool) -> float | None:
    if "confidence" not in obj or obj["confidence"] is None:
        if required:
            raise PayloadError("invalid_payload", "missing field: 'confidence' (a number from 0 to 1)")
        return None
    value = obj["confidence"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PayloadError("invalid_payload", f"'confidence' must be a number from 0 to 1 (got {value!r:.40})")
    if not 0.0 <= value <= 1.0:
        raise PayloadError("invalid_payload", f"'confidence' must be between 0 and 1 (got {value})")
    return float(value)


def _timestamp(obj: dict[str, Any]) -> float | None:
    value = obj.get("timestamp")
    if value is None:
        return None
    if isinstance(value, bool):
        raise PayloadError("invalid_payload", "'timestamp' must be an ISO 8601 time such as 2025-01-15T10:30:48Z")
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)  # epoch ms or s
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise PayloadError("invalid_payload", f"'timestamp' is not an ISO 8601 time (got {value!r:.60})") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    raise PayloadError("invalid_payload", f"'timestamp' must be a string, not {type(value).__name__}")


def _task_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("task_id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PayloadError("invalid_payload", f"'task_id' must be a string, not {type(value).__name__}")
    text = str(value)
    if not text.strip() or len(text) > _TASK_ID_MAX:
        raise PayloadError("invalid_payload", f"'task_id' must be 1-{_TASK_ID_MAX} characters")
    return text


def _with_ids(exc: PayloadError, device_id: str | None, task_id: str | None) -> PayloadError:
    exc.device_id = exc.device_id or device_id
    exc.task_id = exc.task_id or task_id
    return exc


def parse_stt(topic: str, payload: bytes, *, max_bytes: int) -> Request:
    """``naila/ai/processing/stt/{device_id}``; the topic's device id wins over the payload's."""
    device_id = _valid_device(topic[len(STT_PREFIX) :], "the device id in the topic")
    obj = _decode(payload, max_bytes, device_id)
    task_id = f"stt-{device_id}-{int(time.time() * 1000)}"
    try:
        text = _text_field(obj, ("transcription",))
        confidence = _confidence(obj, required=True)
        sent = _timestamp(obj)
    except PayloadError as exc:
        raise _with_ids(exc, device_id, task_id) from None
    return Request(device_id, task_id, text, "stt", confidence, device_id, sent)


def parse_task(payload: bytes, *, max_bytes: int) -> Request:
    """``naila/ai/orchestration/main/task``."""
    obj = _decode(payload, max_bytes, None)
    device_id = _known_device(obj)
    task_id: str | None = None
    try:
        device_id = _valid_device(obj.get("device_id"), "'device_id'")
        task_id = _task_id(obj) or f"task-{device_id}-{uuid.uuid4().hex[:12]}"
        text = _text_field(obj, ("transcription", "query"))
        confidence = _confidence(obj, required=False)
        sent = _timestamp(obj)
        input_type = obj.get("input_type", "text")
        if not isinstance(input_type, str):
            raise PayloadError("invalid_payload", "'input_type' must be a string such as \"text\"")
        conversation = obj.get("conversation_id")
        if conversation is not None:
            conversation = _valid_device(conversation, "'conversation_id'")
    except PayloadError as exc:
        raise _with_ids(exc, device_id, task_id) from None
    return Request(device_id, task_id, text, input_type, confidence, conversation or device_id, sent)


def parse_cancel(payload: bytes, *, max_bytes: int) -> CancelRequest:
    obj = _decode(payload, max_bytes, None)
    device_id = _known_device(obj)
    try:
        return CancelRequest(_valid_device(obj.get("device_id"), "'device_id'"), _task_id(obj))
    except PayloadError as exc:
        raise _with_ids(exc, device_id, None) from None


def response_payload(request: Request, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_id": request.task_id,
        "source": "ai_server",
        "target_device": request.device_id,
        "timestamp": utc_timestamp(),
        "response": {
            "text": result.get("response_text", ""),
            "intent": result.get("intent", "general"),
            "confidence": round(float(result.get("intent_confidence") or 0.0), 3),
            "source": result.get("response_source") or "pattern",
            "finish_reason": result.get("finish_reason") or "stop",
            "expects_reply": bool(result.get("expects_reply")),
        },
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
