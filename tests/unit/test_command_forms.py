"""Clear robot commands the intent stage recognises (nodes/intent.py ``_COMMAND_FORMS``) and the tools
their words name (nodes/act.py ``named_tools``); what looks alike but is no command stays with the model."""

from __future__ import annotations

import pytest

from nodes.act import named_tools
from nodes.intent import detect_intent


@pytest.mark.parametrize(
    ("text", "tools"),
    [
        ("Spin a quarter turn to your left.", ["turn_body"]),
        ("Turn your body 90 degrees to the right.", ["turn_body"]),
        ("Rotate your body 90 degrees to the right.", ["turn_body"]),
        ("Turn 90 degrees", ["turn_body"]),
        ("Turn left and make your lights red.", ["turn_body", "set_lights"]),
        ("Turn your head left and make your lights red", ["move_head", "set_lights"]),
        ("Stop everything and switch your lights off.", ["stop_all_motion", "set_lights"]),
        ("Come a little closer to me.", ["drive"]),
        ("Freeze, stop everything right now.", ["stop_all_motion"]),
        ("Stop right there!", ["stop_all_motion"]),
        ("Look over there to your right.", ["move_head"]),
        ("Can you glance over to the left for me?", ["move_head"]),
    ],
)
def test_clear_commands_are_commands_and_name_their_tools(text: str, tools: list[str]) -> None:
    assert detect_intent(text).intent == "robot_command"
    assert named_tools(text) == tools


@pytest.mark.parametrize(
    "text",
    [
        "Stop and think about it",  # "stop and …" is a command only when a body part or light follows
        "Come closer to the truth, my friend, is what I say",
        "Look up the opening hours of the museum",
        "Turning points in history fascinate me",
    ],
)
def test_look_alikes_are_no_commands(text: str) -> None:
    assert detect_intent(text).intent != "robot_command"
