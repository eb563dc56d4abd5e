"""Robot actions as tools (nodes.robot_tools): limits, error messages the model can act on, the upstream
``naila/command/request`` payload (written by hand from ../shared/PROTOCOL.md) and the spoken confirmation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, ToolCall, ToolMessage

from nodes.robot_tools import (
    COLORS,
    MAX_REPAIR_ROUNDS,
    ROBOT_TOOLS,
    ValidatedAction,
    call_schemas,
    command_message,
    commands_for,
    confirmation,
    describe_action,
    repair_messages,
    robot_tool_schemas,
    validate_call,
)

NAMES = ["move_head", "drive", "turn_body", "set_lights", "show_expression", "stop_all_motion"]


def call(name: str, call_id: str = "call_1", **args: Any) -> ToolCall:
    return ToolCall(name=name, args=args, id=call_id)


def valid(name: str, **args: Any) -> ValidatedAction:
    result = validate_call(call(name, **args))
    assert isinstance(result, ValidatedAction), getattr(result, "content", result)
    return result


def refused(name: str, **args: Any) -> str:
    result = validate_call(call(name, **args))
    assert isinstance(result, ToolMessage), result
    assert result.status == "error" and result.tool_call_id == "call_1"
    return str(result.content)


# ------------------------------------------------------------------------------------ the tool set


def test_the_tool_set_is_fixed_in_name_and_order() -> None:
    assert [tool["function"]["name"] for tool in robot_tool_schemas()] == NAMES
    assert robot_tool_schemas() == robot_tool_schemas()  # same dicts each time: saved prompt states stay valid
    assert len(ROBOT_TOOLS) == len(NAMES)


def test_the_schemas_carry_the_limits_and_the_descriptions_the_model_reads() -> None:
    head = robot_tool_schemas()[0]["function"]
    assert "left" in head["description"]
    pan = head["parameters"]["properties"]["pan_degrees"]
    assert (pan["type"], pan["minimum"], pan["maximum"], pan["default"]) == ("integer", -90, 90, 0)
    assert "negative = left" in pan["description"]
    drive = robot_tool_schemas()[1]["function"]["parameters"]
    assert drive["properties"]["direction"]["enum"] == ["forward", "backward"]
    assert sorted(drive["required"]) == ["direction", "distance_cm"]
    assert drive["additionalProperties"] is False
    stop = robot_tool_schemas()[5]["function"]["parameters"]
    assert stop["properties"] == {} and not stop.get("required")


def test_every_schema_converts_to_a_grammar() -> None:
    from llm.json_grammar import schema_to_grammar

    for tool in robot_tool_schemas():
        assert "root ::=" in schema_to_grammar(tool["function"]["parameters"], default_max_length=8)


def test_speeds_show_the_grammar_a_whole_number_hull_and_the_model_the_exact_range() -> None:
    # llm.json_grammar bounds numbers by whole numbers only; validation enforces the exact range
    speed = robot_tool_schemas()[1]["function"]["parameters"]["properties"]["speed"]
    assert (speed["minimum"], speed["maximum"]) == (0, 1) and "0.1" in speed["description"]
    assert "0.5" in speed["description"]
    assert "speed=0.7 is out of range" in refused("drive", direction="forward", distance_cm=3, speed=0.7)


def test_at_least_sixteen_colour_names_with_css_values() -> None:
    assert len(COLORS) >= 16
    assert COLORS["blue"] == "#0000FF" and COLORS["orange"] == "#FFA500"


# ------------------------------------------------------------------------------------ limits

# (tool, argument, lowest, highest, the other required arguments)
RANGES: list[tuple[str, str, float, float, dict[str, Any]]] = [
    ("move_head", "pan_degrees", -90, 90, {}),
    ("move_head", "tilt_degrees", -30, 30, {}),
    ("move_head", "speed", 0.1, 1.0, {}),
    ("drive", "distance_cm", 1, 30, {"direction": "forward"}),
    ("drive", "speed", 0.1, 0.5, {"direction": "forward", "distance_cm": 10}),
    ("turn_body", "degrees", -180, 180, {}),
    ("turn_body", "speed", 0.1, 0.5, {"degrees": 90}),
    ("set_lights", "duration_ms", 100, 60000, {"color": "blue"}),
    ("show_expression", "duration_ms", 500, 30000, {"expression": "happy"}),
]
REQUIRED: dict[str, dict[str, Any]] = {
    "drive": {"direction": "forward", "distance_cm": 10},
    "turn_body": {"degrees": 90},
}


def _step(value: float) -> float:
    return 1 if isinstance(value, int) else 0.01


@pytest.mark.parametrize(("name", "arg", "low", "high", "others"), RANGES)
def test_each_limit_is_allowed_just_inside(name: str, arg: str, low: float, high: float, others: dict) -> None:
    args = {**REQUIRED.get(name, {}), **others}
    for value in (low, high, low + _step(low), high - _step(high)):
        action = valid(name, **{**args, arg: value})
        assert getattr(action.args, arg) == value


@pytest.mark.parametrize(("name", "arg", "low", "high", "others"), RANGES)
def test_each_limit_is_refused_just_outside(name: str, arg: str, low: float, high: float, others: dict) -> None:
    args = {**REQUIRED.get(name, {}), **others}
    for value in (low - _step(low), high + _step(high)):
        text = refused(name, **{**args, arg: value})
        assert f"{arg}={value}" in text and "out of range" in text
        assert f"from {low} to {high}" in text  # the allowed range, so the model can correct itself
        assert "Nothing was done" in text


def test_defaults_fill_what_the_model_left_out() -> None:
    head = valid("move_head").args
    assert (head.pan_degrees, head.tilt_degrees, head.speed) == (0, 0, 0.5)  # type: ignore[attr-defined]
    lights = valid("set_lights", color="red").args
    assert (lights.pattern, lights.duration_ms) == ("solid", 5000)  # type: ignore[attr-defined]
    assert valid("show_expression", expression="sad").args.duration_ms == 3000  # type: ignore[attr-defined]
    assert valid("drive", direction="forward", distance_cm=5).args.speed == 0.3  # type: ignore[attr-defined]
    assert valid("turn_body", degrees=5).args.speed == 0.3  # type: ignore[attr-defined]


@pytest.mark.parametrize("color", ["blue", "Blue", " PINK ", "#00ff7F", "#ABCDEF"])
def test_colour_names_and_hex_are_accepted(color: str) -> None:
    valid("set_lights", color=color)


@pytest.mark.parametrize("color", ["sky", "#12345", "#1234567", "#GG0000", "", "blue-ish", "0000FF"])
def test_other_colours_are_refused_naming_the_choices(color: str) -> None:
    text = refused("set_lights", color=color)
    assert "color=" in text and "turquoise" in text and "#RRGGBB" in text


def test_every_enum_value_is_accepted_and_others_are_refused() -> None:
    for expression in ["happy", "sad", "surprised", "thinking", "sleepy", "neutral", "love", "angry"]:
        valid("show_expression", expression=expression)
    for pattern in ["solid", "blink", "pulse", "rainbow", "off"]:
        valid("set_lights", color="red", pattern=pattern)
    text = refused("show_expression", expression="bored")
    assert 'expression="bored"' in text and '"sleepy"' in text
    text = refused("drive", direction="left", distance_cm=3)
    assert 'direction="left"' in text and '"forward", "backward"' in text


# ------------------------------------------------------------------------------------ refused calls


def test_an_unknown_tool_is_refused_naming_the_tools_there_are() -> None:
    text = refused("fly", height=3)
    assert '"fly"' in text and all(name in text for name in NAMES)


def test_a_missing_argument_is_named_with_what_is_allowed() -> None:
    text = refused("drive", direction="forward")
    assert "distance_cm is missing" in text and "from 1 to 30" in text
    assert text.count(" is missing") == 1  # only the missing one


def test_an_extra_argument_is_named_with_the_arguments_the_tool_takes() -> None:
    text = refused("move_head", pan_degrees=10, roll_degrees=5)
    assert "unknown argument roll_degrees=5" in text and "pan_degrees, tilt_degrees, speed" in text
    assert "takes no arguments" in refused("stop_all_motion", now=True)


@pytest.mark.parametrize(
    ("name", "args", "named"),
    [
        ("move_head", {"pan_degrees": "-30"}, 'pan_degrees="-30"'),  # strict: a string is not a number
        ("move_head", {"pan_degrees": 10.5}, "pan_degrees=10.5"),
        ("move_head", {"pan_degrees": True}, "pan_degrees=true"),  # a bool is not an integer
        ("turn_body", {"degrees": None}, "degrees=null"),
        ("set_lights", {"color": 255}, "color=255"),
        ("drive", {"direction": "forward", "distance_cm": [5]}, "distance_cm=[5]"),
    ],
)
def test_a_wrong_type_is_refused_naming_the_argument_and_value(name: str, args: dict, named: str) -> None:
    text = refused(name, **args)
    assert named in text and "wrong type" in text


def test_arguments_that_are_not_an_object_are_refused() -> None:
    result = validate_call({"name": "move_head", "args": [1, 2], "id": "x"})  # type: ignore[typeddict-item]
    assert isinstance(result, ToolMessage) and result.status == "error" and "JSON object" in str(result.content)


def test_a_long_value_is_shortened_in_the_message() -> None:
    text = refused("set_lights", color="x" * 5000)
    assert len(text) < 600


def test_a_call_without_an_id_still_gets_a_message() -> None:
    result = validate_call({"name": "fly", "args": {}, "id": None})
    assert isinstance(result, ToolMessage) and result.tool_call_id == ""


def test_not_a_number_is_out_of_range() -> None:
    assert "out of range" in refused("move_head", speed=math.nan)
    assert "out of range" in refused("move_head", speed=math.inf)


# ------------------------------------------------------------------------------------ repair


def test_repair_messages_answer_every_call_and_execute_none() -> None:
    calls = [call("move_head", "a", pan_degrees=-30), call("move_head", "b", pan_degrees=200)]
    message = AIMessage(content="", tool_calls=calls)
    results = [validate_call(c) for c in calls]
    replies = repair_messages(message, results)
    assert replies[0] is message
    assert [r.tool_call_id for r in replies[1:]] == ["a", "b"]  # type: ignore[attr-defined]
    assert all(r.status == "error" for r in replies[1:])  # type: ignore[attr-defined]
    assert "not done" in str(replies[1].content) and "pan_degrees=200" in str(replies[2].content)
    assert MAX_REPAIR_ROUNDS == 2


# ------------------------------------------------------------------------------------ commands (golden)


def test_golden_command_message_from_the_protocol_example() -> None:
    actions = [
        valid("move_head", pan_degrees=-30),
        valid("set_lights", color="blue", duration_ms=3000),
    ]
    now = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    message = command_message(
        "task_567", "naila_robot_001", actions, "Turning my head to the left.", "command", 0.93, now=now
    )
    assert message == {
        "task_id": "task_567",
        "source": "ai_server",
        "target_device": "naila_robot_001",
        "timestamp": "2026-01-02T03:04:05.678Z",
        "priority": "normal",
        "response": {"text": "Turning my head to the left.", "intent": "command", "confidence": 0.93},
        "commands": [
            {
                "type": "motor",
                "sequence": 0,
                # written from ../shared/PROTOCOL.md's example of naila/command/request
                "payload": {"motor_group": "head", "action": "pan", "degrees": -30, "speed": 0.5},
            },
            {"type": "led", "sequence": 1, "payload": {"pattern": "solid", "color": "#0000FF", "duration_ms": 3000}},
        ],
    }


def test_golden_payloads_of_every_tool() -> None:
    actions = [
        valid("drive", direction="backward", distance_cm=12, speed=0.2),
        valid("turn_body", degrees=-90),
        valid("set_lights", color="#ff8800", pattern="pulse", duration_ms=100),
        valid("show_expression", expression="love"),
        valid("stop_all_motion"),
    ]
    assert commands_for(actions) == [
        {"type": "motor", "sequence": 0,
         "payload": {"motor_group": "body", "action": "backward", "distance_cm": 12, "speed": 0.2}},
        {"type": "motor", "sequence": 1,
         "payload": {"motor_group": "body", "action": "turn", "degrees": -90, "speed": 0.3}},
        {"type": "led", "sequence": 2, "payload": {"pattern": "pulse", "color": "#FF8800", "duration_ms": 100}},
        {"type": "motor", "sequence": 3,
         "payload": {"motor_group": "eyes", "action": "expression", "expression": "love", "duration_ms": 3000}},
        {"type": "motor", "sequence": 4, "payload": {"motor_group": "all", "action": "stop"}},
    ]  # fmt: skip


def test_the_timestamp_is_utc_with_milliseconds_whatever_the_zone() -> None:
    paris = timezone(timedelta(hours=1))
    message = command_message("t", "d", [], "", "command", 1.0, now=datetime(2026, 6, 1, 12, 0, 0, tzinfo=paris))
    assert message["timestamp"] == "2026-06-01T11:00:00.000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        command_message("t", "d", [], "", "command", 1.0, now=datetime(2026, 6, 1))


def test_without_now_the_timestamp_is_the_current_time() -> None:
    before = datetime.now(UTC)
    stamp = command_message("t", "d", [], "", "command", 1.0)["timestamp"]
    after = datetime.now(UTC)
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert stamp.endswith("Z") and before - timedelta(milliseconds=1) <= moment <= after


# ------------------------------------------------------------------------------------ any arguments

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
NEAR_LIMITS = (
    st.integers(-400, 70000)
    | st.floats(-2.0, 2.0)
    | st.sampled_from(
        ["forward", "backward", "left", "blue", "#00FF00", "#zz", "happy", "angry", "blink", "off", "rainbow"]
    )
)
ARG_NAMES = st.sampled_from(
    ["pan_degrees", "tilt_degrees", "speed", "direction", "distance_cm", "degrees", "color", "pattern",
     "duration_ms", "expression", "other"]
)  # fmt: skip

LIMITS: dict[str, tuple[float, float]] = {
    "pan_degrees": (-90, 90), "tilt_degrees": (-30, 30), "distance_cm": (1, 30), "degrees": (-180, 180),
}  # fmt: skip
SPEEDS = {"head": (0.1, 1.0), "body": (0.1, 0.5)}
DURATIONS = {"led": (100, 60000), "eyes": (500, 30000)}


def _assert_in_limits(command: dict[str, Any]) -> None:
    payload = command["payload"]
    group = payload.get("motor_group", "led")
    for key, (low, high) in LIMITS.items():
        if key in payload:
            assert isinstance(payload[key], int) and low <= payload[key] <= high
    if "speed" in payload:
        low, high = SPEEDS[group]
        assert isinstance(payload["speed"], float) and low <= payload["speed"] <= high
    if "duration_ms" in payload:
        low, high = DURATIONS[group]
        assert isinstance(payload["duration_ms"], int) and low <= payload["duration_ms"] <= high
    if command["type"] == "led":
        assert payload["pattern"] in ("solid", "blink", "pulse", "rainbow", "off")
        color = payload["color"]
        assert len(color) == 7 and color[0] == "#" and int(color[1:], 16) >= 0 and color == color.upper()
    if group == "head":  # PROTOCOL.md's shape: degrees of a pan or of a tilt
        low, high = {"pan": (-90, 90), "tilt": (-30, 30)}[payload["action"]]
        assert isinstance(payload["degrees"], int) and low <= payload["degrees"] <= high
    if group == "body":
        assert payload["action"] in ("forward", "backward", "turn")
    if group == "eyes":
        assert payload["expression"] in ("happy", "sad", "surprised", "thinking", "sleepy", "neutral", "love", "angry")


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from([*NAMES, "fly", ""]),
    args=st.dictionaries(ARG_NAMES, NEAR_LIMITS | JSON_VALUES, max_size=5) | JSON_VALUES,
)
def test_any_arguments_give_in_limit_commands_or_an_error_message(name: str, args: Any) -> None:
    result = validate_call({"name": name, "args": args, "id": "c"})
    if isinstance(result, ToolMessage):
        assert result.status == "error" and result.tool_call_id == "c" and "Nothing was done" in str(result.content)
        return
    assert result.name == name and result.call_id == "c"
    commands = commands_for([result])
    assert 1 <= len(commands) <= 2  # a head move that also tilts is a pan and a tilt command
    for command in commands:
        _assert_in_limits(command)
    assert confirmation([result]).endswith(".")
    assert describe_action(result)


# ------------------------------------------------------------------------------------ words


@pytest.mark.parametrize(
    ("name", "args", "sentence"),
    [
        ("move_head", {"pan_degrees": -30}, "Turning my head to the left."),
        ("move_head", {"pan_degrees": 45}, "Turning my head to the right."),
        ("move_head", {"tilt_degrees": -10}, "Turning my head down."),
        ("move_head", {"pan_degrees": -1, "tilt_degrees": 20}, "Turning my head to the left and up."),
        ("move_head", {}, "Looking straight ahead."),
        ("drive", {"direction": "forward", "distance_cm": 10}, "Driving forward 10 centimetres."),
        ("drive", {"direction": "backward", "distance_cm": 1}, "Driving backward 1 centimetre."),
        ("turn_body", {"degrees": -90}, "Turning 90 degrees to the left."),
        ("turn_body", {"degrees": 180}, "Turning 180 degrees to the right."),
        ("turn_body", {"degrees": 0}, "Staying put."),
        ("set_lights", {"color": "blue"}, "Making my lights blue."),
        ("set_lights", {"color": "#0000ff"}, "Making my lights blue."),
        ("set_lights", {"color": "#123456", "pattern": "blink"}, "Blinking my lights a custom colour."),
        ("set_lights", {"color": "pink", "pattern": "pulse"}, "Pulsing my lights pink."),
        ("set_lights", {"color": "red", "pattern": "rainbow"}, "Making my lights a rainbow."),
        ("set_lights", {"color": "red", "pattern": "off"}, "Turning my lights off."),
        ("show_expression", {"expression": "happy"}, "Making a happy face."),
        ("show_expression", {"expression": "angry"}, "Making an angry face."),
        ("show_expression", {"expression": "love"}, "Making a loving face."),
        ("stop_all_motion", {}, "Stopping."),
    ],
)
def test_the_confirmation_says_what_was_done(name: str, args: dict, sentence: str) -> None:
    assert confirmation([valid(name, **args)]) == sentence


def test_one_sentence_per_action_in_order() -> None:
    actions = [valid("move_head", pan_degrees=-30), valid("set_lights", color="blue"), valid("stop_all_motion")]
    assert confirmation(actions) == "Turning my head to the left. Making my lights blue. Stopping."
    assert confirmation([]) == ""


@pytest.mark.parametrize(
    ("name", "args", "line"),
    [
        ("move_head", {"pan_degrees": -30}, "head pan=-30 tilt=0 speed=0.5"),
        ("drive", {"direction": "forward", "distance_cm": 10}, "drive forward 10cm speed=0.3"),
        ("turn_body", {"degrees": 45}, "turn degrees=45 speed=0.3"),
        ("set_lights", {"color": "blue"}, "lights solid #0000FF 5000ms"),
        ("show_expression", {"expression": "sleepy"}, "face sleepy 3000ms"),
        ("stop_all_motion", {}, "stop all motion"),
    ],
)
def test_describe_action_gives_one_log_line(name: str, args: dict, line: str) -> None:
    assert describe_action(valid(name, **args)) == line


def test_a_head_move_that_also_tilts_is_a_pan_and_a_tilt_command() -> None:
    assert commands_for([valid("move_head", pan_degrees=20, tilt_degrees=-15, speed=0.8)]) == [
        {
            "type": "motor",
            "sequence": 0,
            "payload": {"motor_group": "head", "action": "pan", "degrees": 20, "speed": 0.8},
        },
        {
            "type": "motor",
            "sequence": 1,
            "payload": {"motor_group": "head", "action": "tilt", "degrees": -15, "speed": 0.8},
        },
    ]


# ------------------------------------------------------------------------ what a command's words fix

_ALL = ["move_head", "drive", "turn_body", "set_lights", "show_expression", "stop_all_motion"]


def _narrow(text: str, tool: str) -> dict[str, Any]:
    """The properties of ``tool`` that ``text`` narrowed, with their bounds (enum, minimum, maximum)."""
    schema = call_schemas(text, _ALL).get(tool)
    if schema is None:
        return {}
    original = {t["function"]["name"]: t["function"]["parameters"] for t in robot_tool_schemas()}[tool]
    changed = {f: v for f, v in schema["properties"].items() if v != original["properties"][f]}
    return {f: {k: v[k] for k in ("enum", "minimum", "maximum") if k in v} for f, v in changed.items()}


@pytest.mark.parametrize(
    ("text", "tool", "expected"),
    [
        ("Turn your head left", "move_head",
         {"pan_degrees": {"minimum": -90, "maximum": -1}, "tilt_degrees": {"enum": [0]}}),
        ("look to your right please", "move_head",
         {"pan_degrees": {"minimum": 1, "maximum": 90}, "tilt_degrees": {"enum": [0]}}),
        ("Look down.", "move_head", {"tilt_degrees": {"minimum": -30, "maximum": -1}, "pan_degrees": {"enum": [0]}}),
        ("Look up at the ceiling", "move_head",
         {"tilt_degrees": {"minimum": 1, "maximum": 30}, "pan_degrees": {"enum": [0]}}),
        ("Turn your head 30 degrees to the left.", "move_head",
         {"pan_degrees": {"enum": [-30]}, "tilt_degrees": {"enum": [0]}}),
        ("Look down and to the left", "move_head",
         {"pan_degrees": {"minimum": -90, "maximum": -1}, "tilt_degrees": {"minimum": -30, "maximum": -1}}),
        ("Turn your head 200 degrees to the left", "move_head",  # beyond the limit: the side only
         {"pan_degrees": {"minimum": -90, "maximum": -1}, "tilt_degrees": {"enum": [0]}}),
        ("Turn your head 200 degrees.", "move_head", {}),  # no side said: nothing fixed
        ("Look left, no, right!", "move_head", {}),  # both sides: the words are not clear
        ("Spin 90 degrees to the right", "turn_body", {"degrees": {"enum": [90]}}),
        ("Drive forward 10 centimetres", "drive", {"direction": {"enum": ["forward"]}, "distance_cm": {"enum": [10]}}),
        ("Drive forward 2 meters", "drive", {"direction": {"enum": ["forward"]}}),
        ("Come a little closer to me", "drive", {"direction": {"enum": ["forward"]}}),
        ("Make your lights blue", "set_lights", {"color": {"enum": ["blue"]}}),
        ("Blink your lights yellow", "set_lights", {"color": {"enum": ["yellow"]}, "pattern": {"enum": ["blink"]}}),
        ("Make your lights red or blue", "set_lights", {}),
        ("Look happy", "show_expression", {"expression": {"enum": ["happy"]}}),
        ("You look tired, show me your sleepy face", "show_expression", {"expression": {"enum": ["sleepy"]}}),
        ("Stop!", "stop_all_motion", {}),
    ],
)  # fmt: skip
def test_a_commands_clear_words_narrow_the_call(text: str, tool: str, expected: dict[str, Any]) -> None:
    assert _narrow(text, tool) == expected


def test_narrowed_fields_are_required_and_stay_within_the_tools_limits() -> None:
    schema = call_schemas("Turn your head 30 degrees to the left", ["move_head"])["move_head"]
    assert {"pan_degrees", "tilt_degrees"} <= set(schema["required"])  # a default would let the call skip them
    for text in ["look left", "look right", "look up", "look down", "spin left", "turn your head 90 degrees right"]:
        for name, narrowed in call_schemas(text, _ALL).items():
            tool = {t["function"]["name"]: t for t in robot_tool_schemas()}[name]["function"]["parameters"]
            for field, spec in narrowed["properties"].items():
                low, high = tool["properties"][field].get("minimum"), tool["properties"][field].get("maximum")
                for value in [*spec.get("enum", []), spec.get("minimum"), spec.get("maximum")]:
                    if isinstance(value, int) and low is not None:
                        assert low <= value <= high, (text, field, value)
