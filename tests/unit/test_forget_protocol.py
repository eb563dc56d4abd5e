"""``naila/ai/memory/forget``: what a forget request may hold, and the answer's shape."""

from __future__ import annotations

import pytest

from naila_graph import protocol as p


def test_a_forget_names_the_device_and_may_carry_a_task_id() -> None:
    forget = p.parse_forget(b'{"device_id": "desk_1", "task_id": "f-1"}', max_bytes=1024)
    assert (forget.device_id, forget.task_id) == ("desk_1", "f-1")
    assert p.parse_forget(b'{"device_id": "desk_1"}', max_bytes=1024).task_id is None
    assert p.FORGET_TOPIC in p.INPUT_TOPICS


@pytest.mark.parametrize(
    ("payload", "device", "fragment"),
    [
        (b"{}", None, "'device_id'"),
        (b'{"device_id": ".."}', None, "'.' or '..'"),
        (b'{"device_id": "desk 1"}', None, "1-128 characters"),
        (b'{"device_id": "desk_1", "task_id": ["x"]}', "desk_1", "'task_id'"),
        (b'{"device_id": "desk_1", "device_id": "desk_2"}', None, "more than once"),
        (b"[]", None, "JSON object"),
        (b"forget me", None, "not JSON"),
    ],
)
def test_a_bad_forget_is_refused_with_a_reason(payload: bytes, device: str | None, fragment: str) -> None:
    with pytest.raises(p.PayloadError) as caught:
        p.parse_forget(payload, max_bytes=1024)
    assert caught.value.code == "invalid_payload"
    assert caught.value.device_id == device  # where the error goes (none: only logged)
    assert fragment in caught.value.message


def test_an_oversized_forget_is_refused() -> None:
    with pytest.raises(p.PayloadError) as caught:
        p.parse_forget(b'{"device_id": "desk_1", "pad": "' + b"x" * 2000 + b'"}', max_bytes=1024)
    assert caught.value.code == "payload_too_large"


def test_the_answer_says_what_was_forgotten() -> None:
    forget = p.ForgetRequest("desk_1", "f-1")
    payload = p.forgotten_payload(forget, conversation=True, facts=3)
    assert payload["device_id"] == "desk_1" and payload["task_id"] == "f-1"
    assert payload["forgotten"] == {"conversation": True, "facts": 3}
    assert payload["source"] == "ai_server" and payload["timestamp"].endswith("Z")
