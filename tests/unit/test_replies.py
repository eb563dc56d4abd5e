"""How a turn's events become MQTT messages (naila_graph/replies.py), with a recording stand-in for the
server's link: what matters here is which payloads go to which topic."""

from __future__ import annotations

from typing import Any

from naila_graph import protocol as p
from naila_graph.replies import TurnPublisher
from naila_graph.turn import Final, Sentence

ANSWER = "The sky is blue. The grass is green."


class _Link:
    """Records publishes; the stream messages listed in ``lose`` are given up, as after a long outage."""

    def __init__(self, lose: frozenset[int] = frozenset()) -> None:
        self.lose = lose
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.answered: list[str] = []

    async def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> bool:
        if topic.endswith("/stream") and payload["seq"] in self.lose:
            return False
        self.sent.append((topic, payload))
        return True

    def mark_answered(self, device_id: str, text: str | None = None) -> None:
        self.answered.append(device_id)


def _request() -> p.Request:
    return p.Request("robot_r", "t-1", "hi", "text", None, "robot_r")


def _final() -> Final:
    return Final(ANSWER, "The grass is green.", False, {"response_text": ANSWER, "response_source": "llm"})


async def _play(link: _Link) -> list[dict[str, Any]]:
    publisher = TurnPublisher(link, _request())  # type: ignore[arg-type]
    await publisher.handle(Sentence("The sky is blue."))
    await publisher.handle(_final())
    assert link.answered == ["robot_r"]
    return [payload for topic, payload in link.sent if topic == p.stream_topic("robot_r")]


async def test_the_stream_is_the_answer_sentence_by_sentence() -> None:
    stream = await _play(_Link())
    assert [(m["text"], m["final"], m.get("replaced", False)) for m in stream] == [
        ("The sky is blue.", False, False),
        ("The grass is green.", True, False),
    ]


async def test_a_stream_message_given_up_makes_the_final_one_replace_the_stream_with_the_answer() -> None:
    link = _Link(lose=frozenset({0}))
    stream = await _play(link)
    assert stream == [{"task_id": "t-1", "seq": 1, "text": ANSWER, "final": True, "replaced": True}]
    response = next(payload for topic, payload in link.sent if topic == p.RESPONSE_TOPIC)
    assert response["response"]["text"] == ANSWER
