"""The request parsers of the MQTT contract (naila_graph/protocol.py, ../shared/PROTOCOL.md): what is accepted,
and what is refused with which code, message and device to answer."""

from __future__ import annotations

import json

import pytest

from naila_graph import protocol as p

MAX_BYTES = 65_536
STT = "naila/ai/processing/stt/robot_1"


def task(fields: str) -> bytes:
    return ('{"device_id": "robot_1", "query": "hi"' + fields + "}").encode()


def stt(fields: str) -> bytes:
    return ('{"transcription": "hi", "confidence": 0.9' + fields + "}").encode()


def refused(parse: str, payload: bytes) -> p.PayloadError:
    with pytest.raises(p.PayloadError) as caught:
        if parse == "stt":
            p.parse_stt(STT, payload, max_bytes=MAX_BYTES)
        elif parse == "task":
            p.parse_task(payload, max_bytes=MAX_BYTES)
        else:
            p.parse_cancel(payload, max_bytes=MAX_BYTES)
    return caught.value


# ----------------------------------------------------------------------------------------------------
# What is accepted (PROTOCOL.md's examples)
# ----------------------------------------------------------------------------------------------------


def test_the_documented_stt_result_is_accepted() -> None:
    payload = {
        "timestamp": "2025-01-15T10:30:48Z",
        "device_id": "naila_robot_001",
        "transcription": "what time is it",
        "confidence": 0.94,
        "language": "en",
        "processing_time_ms": 450,
        "audio_duration_ms": 1200,
    }
    request = p.parse_stt("naila/ai/processing/stt/robot_9", json.dumps(payload).encode(), max_bytes=MAX_BYTES)
    assert (request.device_id, request.text, request.confidence, request.input_type) == (
        "robot_9",
        "what time is it",
        0.94,
        "stt",
    )
    assert request.task_id.startswith("stt-robot_9-") and request.timestamp == 1736937048.0


def test_the_documented_task_is_accepted() -> None:
    payload = {
        "task_id": "task_567",
        "timestamp": "2025-01-15T10:30:49Z",
        "device_id": "naila_robot_001",
        "input_type": "text",
        "transcription": "tell me a joke",
        "confidence": 0.95,
        "priority": "normal",
        "conversation_id": "kitchen",
    }
    request = p.parse_task(json.dumps(payload).encode(), max_bytes=MAX_BYTES)
    assert (request.device_id, request.task_id, request.text, request.thread_id) == (
        "naila_robot_001",
        "task_567",
        "tell me a joke",
        "kitchen",
    )


def test_a_cancel_with_and_without_task_id_is_accepted() -> None:
    assert p.parse_cancel(b'{"device_id": "r1", "task_id": 7}', max_bytes=MAX_BYTES) == p.CancelRequest("r1", "7")
    assert p.parse_cancel(b'{"device_id": "r1"}', max_bytes=MAX_BYTES) == p.CancelRequest("r1", None)


@pytest.mark.parametrize(("stamp", "seconds"), [("1736937048", 1736937048.0), ("1736937048000", 1736937048.0)])
def test_epoch_seconds_and_milliseconds_are_accepted(stamp: str, seconds: float) -> None:
    assert p.parse_task(task(f', "timestamp": {stamp}'), max_bytes=MAX_BYTES).timestamp == seconds


def test_text_with_nul_and_surrogates_is_accepted_and_made_storable_later() -> None:
    # the graph's process_input makes it storable (nodes.speech.storable_text); the parser keeps what was sent
    payload = b'{"device_id": "robot_1", "query": "hi\\u0000there\\ud800"}'
    assert p.parse_task(payload, max_bytes=MAX_BYTES).text == "hi\x00there\ud800"


# ----------------------------------------------------------------------------------------------------
# Defect 2: numbers that broke the parser
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["confidence", "timestamp"])
@pytest.mark.parametrize("digits", [400, 4_301, 10_000])
@pytest.mark.parametrize("parse", ["stt", "task"])
def test_a_huge_integer_is_refused_naming_the_field(parse: str, field: str, digits: int) -> None:
    fields = f', "{field}": {"9" * digits}'
    error = refused(parse, stt(fields) if parse == "stt" else task(fields))
    assert error.code == "invalid_payload" and f"'{field}'" in error.message and error.device_id == "robot_1"


def test_a_huge_integer_in_an_ignored_field_is_refused_too() -> None:
    error = refused("task", task(f', "processing_time_ms": {"1" * 5000}'))
    assert "'processing_time_ms'" in error.message and "5000-digit" in error.message


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
@pytest.mark.parametrize("field", ["confidence", "timestamp"])
@pytest.mark.parametrize("parse", ["stt", "task"])
def test_non_finite_numbers_are_refused_naming_the_field(parse: str, field: str, value: str) -> None:
    fields = f', "{field}": {value}'
    error = refused(parse, stt(fields) if parse == "stt" else task(fields))
    assert error.code == "invalid_payload" and f"'{field}'" in error.message and error.device_id == "robot_1"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json_anywhere(value: str) -> None:
    error = refused("task", task(f', "extra": [1, {{"deep": {value}}}]'))
    assert error.code == "invalid_payload" and "'extra'" in error.message and "not a JSON number" in error.message


@pytest.mark.parametrize("value", ["-1e300", "1e300", "-62135596801", "253402300800000"])
def test_a_timestamp_outside_the_years_1_to_9999_is_refused(value: str) -> None:
    error = refused("task", task(f', "timestamp": {value}'))
    assert error.code == "invalid_payload" and "'timestamp'" in error.message


def test_an_error_names_the_task_id_when_it_is_valid() -> None:
    error = refused("task", task(', "task_id": "t-9", "timestamp": NaN'))
    assert (error.device_id, error.task_id) == ("robot_1", "t-9")


@pytest.mark.parametrize("task_id", ['"a\\u0000b"', '"\\ud800"', '"tab\\there"'])
def test_a_task_id_that_could_not_be_stored_or_sent_back_is_refused(task_id: str) -> None:
    error = refused("task", task(f', "task_id": {task_id}'))
    assert error.code == "invalid_payload" and "'task_id'" in error.message
    assert error.device_id == "robot_1" and error.task_id is None
    p.encode(p.error_payload(error.task_id, error.code, error.message))  # the reply can be sent


@pytest.mark.parametrize("input_type", ['"a\\u0000"', '"' + "x" * 33 + '"', "3"])
def test_an_unusable_input_type_is_refused(input_type: str) -> None:
    error = refused("task", task(f', "input_type": {input_type}'))
    assert error.code == "invalid_payload" and "'input_type'" in error.message and error.device_id == "robot_1"


# ----------------------------------------------------------------------------------------------------
# Defect 9: device ids "." and "..", repeated keys
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", [".", ".."])
def test_dot_device_ids_are_refused(device: str) -> None:
    for parse in ("task", "cancel"):
        error = refused(parse, f'{{"device_id": "{device}", "query": "hi"}}'.encode())
        assert error.code == "invalid_payload" and "'.' or '..'" in error.message and error.device_id is None
    with pytest.raises(p.PayloadError, match=r"'\.' or '\.\.'"):
        p.parse_stt(p.STT_PREFIX + device, stt(""), max_bytes=MAX_BYTES)
    assert "'.' or '..'" in refused("task", task(f', "conversation_id": "{device}"')).message


@pytest.mark.parametrize("device", ["...", "a.b", ".hidden", "robot.1"])
def test_other_ids_with_dots_are_still_accepted(device: str) -> None:
    assert p.parse_task(f'{{"device_id": "{device}", "query": "hi"}}'.encode(), max_bytes=MAX_BYTES).device_id == device


def test_a_device_id_with_a_trailing_line_break_is_refused() -> None:
    assert refused("task", b'{"device_id": "robot_1\\n", "query": "hi"}').code == "invalid_payload"
    with pytest.raises(p.PayloadError):
        p.parse_stt(STT + "\n", stt(""), max_bytes=MAX_BYTES)


@pytest.mark.parametrize(
    ("parse", "payload", "key"),
    [
        ("task", task(', "query": "bye"'), "query"),
        ("task", task(', "confidence": 0.5, "confidence": 0.9'), "confidence"),
        ("stt", stt(', "transcription": "other"'), "transcription"),
        ("cancel", b'{"device_id": "robot_1", "task_id": "a", "task_id": "b"}', "task_id"),
    ],
)
def test_a_repeated_key_is_refused_naming_it(parse: str, payload: bytes, key: str) -> None:
    error = refused(parse, payload)
    assert error.code == "invalid_payload" and f"'{key}' appears more than once" in error.message
    assert error.device_id == "robot_1"


def test_a_repeated_device_id_leaves_the_device_unknown() -> None:
    error = refused("task", b'{"device_id": "robot_1", "device_id": "robot_2", "query": "hi"}')
    assert "'device_id' appears more than once" in error.message and error.device_id is None


def test_a_repeated_key_inside_a_nested_object_is_refused() -> None:
    error = refused("task", task(', "meta": {"a": 1, "a": 2}'))
    assert "'a' appears more than once in 'meta'" in error.message and error.device_id == "robot_1"
