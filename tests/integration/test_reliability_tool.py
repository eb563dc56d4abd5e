"""The reliability table (``evals/bench/reliability.py``, bench part 9): its counting on hand-written message
logs, and one real run (mosquitto, ``naila serve`` as a process, the tiny GGUF) whose table must add up.

No figure of the run is asserted beyond what the counting guarantees: the table itself is measured by
``naila bench`` (docs/PERFORMANCE.md, "Reliability").
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import Any

import pytest

from evals.bench import reliability as rel
from evals.bench.reliability import Received, Sent, tally
from naila_graph import protocol as p
from tests.support.broker import find_mosquitto


def answer(device: str, task_id: str, text: str = "Hello there.") -> Received:
    payload = {"task_id": task_id, "target_device": device, "response": {"text": text, "source": "llm"}}
    return Received(p.RESPONSE_TOPIC, payload, 0.0)


def error(device: str, task_id: str | None, code: str = "overloaded") -> Received:
    return Received(p.error_topic(device), {"task_id": task_id, "error": code, "message": "m"}, 0.0)


def stream(device: str, task_id: str, seq: int, text: str, **extra: Any) -> Received:
    payload = {"task_id": task_id, "seq": seq, "text": text, "final": False, **extra}
    return Received(p.stream_topic(device), payload, 0.0)


def test_each_request_is_answered_refused_or_lost_exactly_once() -> None:
    sent = [Sent("a", "a1"), Sent("a", "a2"), Sent("b", "b1"), Sent("b", "b2")]
    log = [answer("a", "a1"), error("b", "b1"), answer("a", "a2"), Received(p.STATUS_TOPIC, {"status": "x"}, 0.0)]
    t = tally(sent, log)
    assert (t.sent, t.answered, t.refused, t.lost, t.duplicated, t.order_violations) == (4, 2, 1, 1, 0, 0)
    assert t.lost_items == [Sent("b", "b2")]
    assert t.error_codes == {"overloaded": 1}
    assert t.unanswered_devices == 1  # b asked twice and got no answer
    assert t.answers_per_device == (0, 2)


def test_a_second_final_message_is_a_duplicate_and_the_first_one_decides() -> None:
    sent = [Sent("a", "a1"), Sent("a", "a2")]
    log = [error("a", "a1"), answer("a", "a1"), answer("a", "a2"), answer("a", "a2")]
    t = tally(sent, log)
    assert (t.answered, t.refused, t.lost, t.duplicated) == (1, 1, 0, 2)
    assert t.identical_copies == 1  # a2's two answers are one message sent twice; a1's differ
    assert t.sent == t.answered + t.refused + t.lost


def test_a_broker_resend_to_the_collector_is_counted_once_but_a_second_publish_is_a_duplicate() -> None:
    first = answer("a", "a1")
    resent = dataclasses.replace(first, dup=True)
    t = tally([Sent("a", "a1")], [first, resent])
    assert (t.answered, t.duplicated, t.resent_to_us) == (1, 0, 1)
    other = dataclasses.replace(answer("a", "a1", "Another text."), dup=True)  # flagged, but another message
    t = tally([Sent("a", "a1")], [first, other])
    assert (t.duplicated, t.resent_to_us) == (1, 0)
    t = tally([Sent("a", "a1")], [first, first])  # the server published the same message twice
    assert (t.duplicated, t.identical_copies, t.resent_to_us) == (1, 1, 0)


def test_answers_out_of_the_order_sent_are_order_violations_per_device() -> None:
    sent = [Sent("a", "a1"), Sent("a", "a2"), Sent("a", "a3"), Sent("b", "b1"), Sent("b", "b2")]
    # a: a3 and a2 arrive before a1 (two answers come after a later request's); b in order, interleaved with a
    log = [answer("a", "a3"), answer("b", "b1"), answer("a", "a2"), answer("a", "a1"), answer("b", "b2")]
    t = tally(sent, log)
    assert t.order_violations == 2
    assert t.answered == 5 and t.lost == 0


def test_refusals_do_not_count_as_order_violations() -> None:
    sent = [Sent("a", "a1"), Sent("a", "a2")]
    t = tally(sent, [error("a", "a2"), answer("a", "a1")])
    assert (t.order_violations, t.answered, t.refused) == (0, 1, 1)


def test_bad_payloads_are_recognised_by_their_own_device_and_unaddressable_ones_are_not_counted() -> None:
    sent = [
        Sent("mal_1", None, bad=True),  # not JSON: the reply has the server's own task id
        Sent("mal_2", "bad-2", bad=True),  # a repeated task_id key: the reply says task_id null
        Sent("mal_3", "bad-3", bad=True),  # NaN accepted (the old parser): answered as if valid
        Sent("?", "unaddr-1", bad=True, expect_reply=False),
    ]
    log = [error("mal_1", "stt-mal_1-123", "invalid_payload"), error("mal_2", None), answer("mal_3", "bad-3")]
    t = tally(sent, log)
    assert (t.sent, t.refused, t.answered, t.lost, t.bad_answered, t.unmatched) == (3, 2, 1, 0, 1, 0)


def test_replies_for_nothing_sent_are_unmatched_not_answers() -> None:
    t = tally([Sent("a", "a1")], [answer("a", "zz"), answer("c", "a1"), answer("a", "a1")])
    assert (t.answered, t.unmatched) == (1, 2)


def test_a_stream_that_differs_from_the_final_text_is_counted_unless_replaced() -> None:
    sent = [Sent("a", "a1"), Sent("a", "a2"), Sent("a", "a3")]
    log = [
        stream("a", "a1", 0, "Hello"),
        stream("a", "a1", 1, " there."),
        answer("a", "a1", "Hello there."),
        stream("a", "a2", 0, "Half a sentence"),
        answer("a", "a2", "Something else."),
        stream("a", "a3", 0, "Half"),
        stream("a", "a3", 1, "Sorry, try again.", replaced=True),
        answer("a", "a3", "Sorry, try again."),
    ]
    assert tally(sent, log).stream_mismatches == 1


@pytest.mark.parametrize("text", ["", "burst,nope", ",", "kill-9"])
def test_unknown_scenarios_are_refused_naming_the_known_ones(text: str) -> None:
    with pytest.raises(ValueError, match="burst,broker,kill9,malformed,postgres,cpu"):
        rel.parse_scenarios(text)
    assert rel.parse_scenarios("cpu, burst") == ["burst", "cpu"]


def test_the_command_line_rejects_a_bad_scenario_without_running_anything() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "evals.bench.reliability", "--scenarios", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--scenarios takes" in result.stderr and result.stdout == ""


def test_the_malformed_corpus_has_about_200_addressed_bad_payloads_each_from_its_own_device() -> None:
    corpus = rel.bad_corpus()
    addressed = [c.item for c in corpus if c.item.expect_reply]
    assert len(addressed) >= 195 and len(corpus) >= 210
    assert all(item.bad for item in addressed)
    assert len({item.device for item in addressed}) == len(addressed)


@pytest.mark.broker
@pytest.mark.slow
def test_a_real_run_gives_one_row_per_scenario_whose_counts_add_up(tiny_model: str) -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed (`scripts/setup.sh --test` installs it)")
    rows = rel.run_benchmark(
        tiny_model, robots=2, requests=3, outage_s=1.0, max_tokens=8, quiet_s=10.0, scenarios="kill9,malformed,burst"
    )
    assert rows[0] == rel.HEADER
    assert [r[0] for r in rows[1:]] == ["burst", "kill9", "malformed"]  # table order, not the order asked
    addressed_bad = sum(1 for c in rel.bad_corpus() if c.item.expect_reply)
    expected_sent = {"burst": 6, "kill9": 6, "malformed": 6 + addressed_bad}
    for name, sent, answered, refused, lost, duplicated, order, recovery, _note in rows[1:]:
        assert int(sent) == expected_sent[name]
        assert int(sent) == int(answered) + int(refused) + int(lost), name
        assert int(duplicated) >= 0 and int(order) >= 0
        if name == "kill9":
            assert re.fullmatch(r"\d+\.\d\d s", recovery), recovery  # the restarted server came online
        else:
            assert recovery == "-"
    suite_rows = rel.for_suite(rows)
    assert len(suite_rows) == len(rows) and all(len(r) == 3 for r in suite_rows)
