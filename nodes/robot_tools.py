"""NAILA's robot actions as tools: their argument models with hard limits, the check of a model's call,
the upstream ``naila/command/request`` payload (../shared/PROTOCOL.md) and the spoken confirmation.

The limits live in the argument models (``Field(ge=, le=)``, ``Literal``), so one definition serves three
purposes: the schema the model reads (and the grammar that constrains a forced call), the validation of
every call before anything moves, and the guarantee that a command payload never carries a value outside
them. The tool set is fixed and in a fixed order: the chat template puts tools near the top of the
prompt, so a different set per turn would invalidate the saved prompt states.

How the caller (the graph) uses it:

1. bind :func:`robot_tool_schemas` (``tool_choice="any"`` for a clear command, ``"auto"`` otherwise);
2. :func:`validate_call` every entry of ``AIMessage.tool_calls``; entries of ``invalid_tool_calls`` (cut
   off by ``max_tokens``, a deadline or a cancel) are never executed;
3. every call valid → :func:`command_message` (published QoS 1 to the device that asked) and
   :func:`confirmation` as the spoken answer;
4. any call invalid → nothing of that answer is executed; append :func:`repair_messages` to the
   conversation (the ``AIMessage`` and one ``ToolMessage`` per call, the errors naming the argument, its
   value and the allowed range) and ask the model again — at most :data:`MAX_REPAIR_ROUNDS` times, then
   speak :data:`UNABLE_TEXT` (or the pattern fallback) and publish no command.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from langchain_core.messages import AIMessage, BaseMessage, ToolCall, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "COLORS",
    "MAX_REPAIR_ROUNDS",
    "ROBOT_TOOLS",
    "UNABLE_TEXT",
    "Drive",
    "MoveHead",
    "SetLights",
    "ShowExpression",
    "StopAllMotion",
    "TurnBody",
    "ValidatedAction",
    "call_schemas",
    "command_message",
    "commands_for",
    "confirmation",
    "describe_action",
    "executed_call",
    "repair_messages",
    "robot_tool_schemas",
    "tool_name",
    "tool_turn",
    "validate_call",
]

MAX_REPAIR_ROUNDS = 2  # after an invalid call: the error goes back to the model at most this many times
UNABLE_TEXT = "Sorry, I can't do that."  # spoken when the repair rounds are used up

# CSS colour names (and their CSS values) the LEDs accept besides "#RRGGBB".
COLORS: dict[str, str] = {
    "red": "#FF0000",
    "orange": "#FFA500",
    "yellow": "#FFFF00",
    "gold": "#FFD700",
    "lime": "#00FF00",
    "green": "#008000",
    "teal": "#008080",
    "cyan": "#00FFFF",
    "turquoise": "#40E0D0",
    "blue": "#0000FF",
    "navy": "#000080",
    "purple": "#800080",
    "violet": "#EE82EE",
    "magenta": "#FF00FF",
    "pink": "#FFC0CB",
    "white": "#FFFFFF",
}
_COLOR_PATTERN = "^(?:" + "|".join(COLORS) + "|#[0-9A-Fa-f]{6})$"
_HEX_NAMES = {hex_value: name for name, hex_value in COLORS.items()}

Expression = Literal["happy", "sad", "surprised", "thinking", "sleepy", "neutral", "love", "angry"]
Pattern = Literal["solid", "blink", "pulse", "rainbow", "off"]


def _tool(name: str) -> ConfigDict:
    # title = the tool name the model sees; strict: no "30" for 30, no true for 1; extra: unknown args refused
    return ConfigDict(title=name, strict=True, extra="forbid", frozen=True)


def _speed(default: float, high: float) -> Any:
    """A speed within [0.1, high]. The grammar converter (llm.json_grammar) bounds numbers by whole numbers
    only, so the schema carries the whole-number hull (0..1) and the description the exact range; the
    validation enforces the exact range."""

    def hull(schema: dict[str, Any]) -> None:
        schema["minimum"], schema["maximum"] = math.floor(schema["minimum"]), math.ceil(schema["maximum"])

    return Field(default, ge=0.1, le=high, description=f"0.1 (slow) to {high} (fast)", json_schema_extra=hull)


class MoveHead(BaseModel):
    """Turn the robot's head. Pan: negative = left, positive = right. Tilt: negative = down, positive = up."""

    model_config = _tool("move_head")
    pan_degrees: int = Field(0, ge=-90, le=90, description="negative = left, positive = right")
    tilt_degrees: int = Field(0, ge=-30, le=30, description="negative = down, positive = up")
    speed: float = _speed(0.5, 1.0)


class Drive(BaseModel):
    """Drive the robot's body a short distance forward or backward."""

    model_config = _tool("drive")
    direction: Literal["forward", "backward"]
    distance_cm: int = Field(ge=1, le=30, description="centimetres")
    speed: float = _speed(0.3, 0.5)


class TurnBody(BaseModel):
    """Turn the robot's whole body on the spot. Negative degrees = left, positive = right."""

    model_config = _tool("turn_body")
    degrees: int = Field(ge=-180, le=180, description="negative = left, positive = right")
    speed: float = _speed(0.3, 0.5)


class SetLights(BaseModel):
    """Set the robot's LED lights: a colour name or "#RRGGBB", a pattern, and how long."""

    model_config = _tool("set_lights")
    color: str = Field(pattern=_COLOR_PATTERN, description="a colour name (" + ", ".join(COLORS) + ") or #RRGGBB")
    pattern: Pattern = "solid"
    duration_ms: int = Field(5000, ge=100, le=60000, description="milliseconds")

    @field_validator("color", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class ShowExpression(BaseModel):
    """Show a facial expression with the robot's eyes."""

    model_config = _tool("show_expression")
    expression: Expression
    duration_ms: int = Field(3000, ge=500, le=30000, description="milliseconds")


class StopAllMotion(BaseModel):
    """Stop every motor of the robot at once."""

    model_config = _tool("stop_all_motion")


# Fixed order: the tools are rendered near the top of the prompt, so the saved prompt states depend on it.
ROBOT_TOOLS: tuple[type[BaseModel], ...] = (MoveHead, Drive, TurnBody, SetLights, ShowExpression, StopAllMotion)
_BY_NAME: dict[str, type[BaseModel]] = {str(tool.model_config.get("title")): tool for tool in ROBOT_TOOLS}


def tool_name(model: type[BaseModel] | BaseModel) -> str:
    return str(model.model_config.get("title"))


def robot_tool_schemas() -> list[dict[str, Any]]:
    """The robot tools as OpenAI-style tool dicts, always the same and in the same order."""
    return [convert_to_openai_tool(tool) for tool in ROBOT_TOOLS]


@dataclass(frozen=True)
class ValidatedAction:
    """A call that passed validation: safe to turn into commands."""

    name: str
    args: BaseModel
    call_id: str


# ------------------------------------------------------------------------------- what the words say

_LEFT = re.compile(r"\bleft\b")
_RIGHT = re.compile(r"\bright\b")
_UP = re.compile(r"\b(?:up|upwards?|above|ceiling|sky)\b")
_DOWN = re.compile(r"\b(?:down|downwards?|below|floor)\b")
_FORWARD = re.compile(r"\b(?:forwards?|ahead|closer|nearer|towards? me)\b")
_BACKWARD = re.compile(r"\b(?:backwards?|back|away|reverse)\b")
_DEGREES = re.compile(r"\b(\d{1,4})\s*(?:°|degrees?|deg)\b")
_CENTIMETRES = re.compile(r"\b(\d{1,4})\s*(?:cm|centimet(?:er|re)s?)\b")
_EXPRESSION_WORDS: dict[str, str] = {
    "happy": "happy", "smile": "happy", "sad": "sad", "surprised": "surprised", "surprise": "surprised",
    "thinking": "thinking", "thoughtful": "thinking", "sleepy": "sleepy", "tired": "sleepy",
    "neutral": "neutral", "love": "love", "loving": "love", "angry": "angry", "mad": "angry",
}  # fmt: skip
_PATTERN_WORDS: dict[str, str] = {
    "blink": "blink", "blinking": "blink", "flash": "blink", "flashing": "blink", "pulse": "pulse",
    "pulsing": "pulse", "rainbow": "rainbow", "off": "off",
}  # fmt: skip


def _one(found: set[Any]) -> Any:
    return next(iter(found)) if len(found) == 1 else None


def _words_in(text: str, words: dict[str, str]) -> set[str]:
    return {value for word, value in words.items() if re.search(rf"\b{word}\b", text)}


def call_schemas(text: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For a clear command, the arguments its words leave open, per robot tool in ``names``: a JSON schema
    narrower than the tool's (``ChatLlamaCpp.bind_tools(call_schemas=...)`` holds the call's grammar to it).

    Only what the words say unambiguously: "left" (and not "right") makes a head pan or a body turn negative,
    "look down" tilts the head down and leaves the pan at 0, "30 degrees" fixes the size when it is within
    the limits, "forward"/"closer" the driving direction, one colour name the lights' colour, one mood the
    expression. Small models get directions wrong more often than anything else (the 0.5B panned when told
    to look down); the grammar makes that impossible. Everything else stays the model's choice.
    """
    lowered = text.lower()
    horizontal = _one({side for side, words in (("left", _LEFT), ("right", _RIGHT)) if words.search(lowered)})
    vertical = _one({side for side, words in (("up", _UP), ("down", _DOWN)) if words.search(lowered)})
    degrees = _one({int(n) for n in _DEGREES.findall(lowered)})
    schemas: dict[str, dict[str, Any]] = {}
    for name in names:
        tool = _BY_NAME.get(name)
        if tool is None:
            continue
        fields: dict[str, dict[str, Any]] = {}
        if tool is MoveHead:
            if horizontal:
                fields["pan_degrees"] = _signed(horizontal == "right", degrees if not vertical else None, 90)
                if not vertical:
                    fields["tilt_degrees"] = {"enum": [0]}
            if vertical:
                fields["tilt_degrees"] = _signed(vertical == "up", degrees if not horizontal else None, 30)
                if not horizontal:
                    fields["pan_degrees"] = {"enum": [0]}
        elif tool is TurnBody and horizontal:
            fields["degrees"] = _signed(horizontal == "right", degrees, 180)
        elif tool is Drive:
            direction = _one(
                {way for way, words in (("forward", _FORWARD), ("backward", _BACKWARD)) if words.search(lowered)}
            )
            if direction:
                fields["direction"] = {"enum": [direction]}
            centimetres = _one({int(n) for n in _CENTIMETRES.findall(lowered)})
            if centimetres is not None and 1 <= centimetres <= 30:
                fields["distance_cm"] = {"enum": [centimetres]}
        elif tool is SetLights:
            colour = _one({c for c in COLORS if re.search(rf"\b{c}\b", lowered)})
            if colour:
                fields["color"] = {"enum": [colour]}
            pattern = _one(_words_in(lowered, _PATTERN_WORDS))
            if pattern:
                fields["pattern"] = {"enum": [pattern]}
                if pattern == "off" and not colour:
                    fields["color"] = {"enum": ["white"]}  # off: the colour does not matter
        elif tool is ShowExpression:
            expression = _one(_words_in(lowered, _EXPRESSION_WORDS))
            if expression:
                fields["expression"] = {"enum": [expression]}
        if fields:
            schemas[name] = _with_fields(tool, fields)
    return schemas


def _signed(positive: bool, size: int | None, limit: int) -> dict[str, Any]:
    """Degrees on one side of 0: exactly ``size`` when it is within the limit, else any (1..limit)."""
    if size is not None and 1 <= size <= limit:
        return {"enum": [size if positive else -size]}
    return {"minimum": 1, "maximum": limit} if positive else {"minimum": -limit, "maximum": -1}


def _with_fields(tool: type[BaseModel], fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The tool's argument schema with ``fields`` narrowed; a narrowed field is required (a default would
    let the call leave it out)."""
    schema = convert_to_openai_tool(tool)["function"]["parameters"]
    properties = {k: dict(v) for k, v in schema.get("properties", {}).items()}
    for field, narrow in fields.items():
        kept = {k: v for k, v in properties[field].items() if k in ("type", "description")}
        properties[field] = {**kept, **narrow}
    required = list(dict.fromkeys([*schema.get("required", []), *fields]))
    return {**schema, "properties": properties, "required": required}


# ---------------------------------------------------------------------------------------- validation


def validate_call(call: ToolCall) -> ValidatedAction | ToolMessage:
    """``call`` checked against its tool's limits: a :class:`ValidatedAction`, or an error ``ToolMessage``
    (``status="error"``) that tells the model what was wrong and what is allowed. Never raises."""
    call_id = str(call.get("id") or "")
    name = call.get("name")
    tool = _BY_NAME.get(name) if isinstance(name, str) else None
    if tool is None:
        known = ", ".join(_BY_NAME)
        return _error(call_id, f"There is no tool named {_shown(name)}; the robot tools are {known}.")
    args = call.get("args")
    if not isinstance(args, dict):
        return _error(call_id, f"The arguments of {name} must be a JSON object, not {_shown(args)}.")
    try:
        return ValidatedAction(name=name, args=tool.model_validate(args), call_id=call_id)
    except ValidationError as error:
        problems = "; ".join(_problem(tool, item, args) for item in error.errors())
        return _error(call_id, f"{name} was refused: {problems}. Call {name} again with corrected arguments.")


def _error(call_id: str, text: str) -> ToolMessage:
    return ToolMessage(content=f"{text} Nothing was done.", tool_call_id=call_id, status="error")


def _problem(tool: type[BaseModel], item: Any, args: dict[str, Any]) -> str:
    field = str(item["loc"][0]) if item.get("loc") else ""
    kind = item.get("type", "")
    if kind == "extra_forbidden":
        takes = ", ".join(tool.model_fields) or "no arguments"
        return f"unknown argument {field}={_shown(args.get(field))} ({tool_name(tool)} takes {takes})"
    if field not in tool.model_fields:
        return str(item.get("msg", "invalid arguments"))
    allowed = _allowed(tool, field)
    if kind == "missing":
        return f"{field} is missing (allowed: {allowed})"
    value = _shown(args.get(field))
    if kind in ("greater_than_equal", "less_than_equal", "finite_number"):
        return f"{field}={value} is out of range (allowed: {allowed})"
    if kind.endswith("_type"):
        return f"{field}={value} has the wrong type (allowed: {allowed})"
    return f"{field}={value} is not allowed (allowed: {allowed})"


def _allowed(tool: type[BaseModel], field: str) -> str:
    info = tool.model_fields[field]
    choices = get_args(info.annotation)
    if choices:
        return "one of " + ", ".join(json.dumps(choice) for choice in choices)
    if field == "color":
        return "a colour name (" + ", ".join(COLORS) + ') or "#RRGGBB"'
    low = next(m.ge for m in info.metadata if hasattr(m, "ge"))
    high = next(m.le for m in info.metadata if hasattr(m, "le"))
    kind = "an integer" if info.annotation is int else "a number"
    hint = f"; {info.description}" if info.description and "=" in info.description else ""
    return f"{kind} from {low} to {high}{hint}"


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def repair_messages(message: AIMessage, results: Sequence[ValidatedAction | ToolMessage]) -> list[BaseMessage]:
    """What goes back to the model after a round with an invalid call: ``message`` and one ``ToolMessage``
    per call (in ``results``' order, one result per ``message.tool_calls`` entry). Valid calls of that round
    were not executed either, and their message says so, so the model repeats the whole answer corrected."""
    replies: list[BaseMessage] = [message]
    for result in results:
        if isinstance(result, ToolMessage):
            replies.append(result)
        else:
            note = f"{result.name} was valid but not done, because another call was invalid; call it again."
            replies.append(ToolMessage(content=note, tool_call_id=result.call_id, status="error"))
    return replies


# ---------------------------------------------------------------------------------------- commands


def _hex(color: str) -> str:
    return COLORS.get(color, color).upper()


def _payloads(args: BaseModel) -> list[tuple[str, dict[str, Any]]]:
    """One action's commands. The head in PROTOCOL.md's shape: a ``pan`` command, and a ``tilt`` command
    when the head is also to tilt (the robot keeps the tilt it has otherwise)."""
    if isinstance(args, MoveHead):
        head = [("motor", {"motor_group": "head", "action": "pan", "degrees": args.pan_degrees, "speed": args.speed})]
        if args.tilt_degrees:
            head.append(
                ("motor", {"motor_group": "head", "action": "tilt", "degrees": args.tilt_degrees, "speed": args.speed})
            )
        return head
    return [_payload(args)]


def _payload(args: BaseModel) -> tuple[str, dict[str, Any]]:
    if isinstance(args, Drive):
        return "motor", {
            "motor_group": "body", "action": args.direction, "distance_cm": args.distance_cm, "speed": args.speed,
        }  # fmt: skip
    if isinstance(args, TurnBody):
        return "motor", {"motor_group": "body", "action": "turn", "degrees": args.degrees, "speed": args.speed}
    if isinstance(args, SetLights):
        return "led", {"pattern": args.pattern, "color": _hex(args.color), "duration_ms": args.duration_ms}
    if isinstance(args, ShowExpression):
        return "motor", {
            "motor_group": "eyes", "action": "expression",
            "expression": args.expression, "duration_ms": args.duration_ms,
        }  # fmt: skip
    if isinstance(args, StopAllMotion):
        return "motor", {"motor_group": "all", "action": "stop"}
    raise TypeError(f"not a robot tool's arguments: {type(args).__name__}; validate the call with validate_call")


def commands_for(actions: Sequence[ValidatedAction]) -> list[dict[str, Any]]:
    """The ``commands`` list of a ``naila/command/request`` message, in the actions' order."""
    payloads = [item for action in actions for item in _payloads(action.args)]
    return [{"type": kind, "sequence": i, "payload": payload} for i, (kind, payload) in enumerate(payloads)]


def _timestamp(now: datetime) -> str:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC)), not a naive datetime")
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def command_message(
    task_id: str,
    device_id: str,
    actions: Sequence[ValidatedAction],
    text: str,
    intent: str,
    confidence: float,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The full ``naila/command/request`` payload for ``actions``, addressed to ``device_id``."""
    return {
        "task_id": task_id,
        "source": "ai_server",
        "target_device": device_id,
        "timestamp": _timestamp(now or datetime.now(UTC)),
        "priority": "normal",
        "response": {"text": text, "intent": intent, "confidence": confidence},
        "commands": commands_for(actions),
    }


# ---------------------------------------------------------------------------------------- words


def _side(degrees: int) -> str:
    return "to the left" if degrees < 0 else "to the right"


def _sentence(args: BaseModel) -> str:
    if isinstance(args, MoveHead):
        ways = [_side(args.pan_degrees)] if args.pan_degrees else []
        ways += ["down" if args.tilt_degrees < 0 else "up"] if args.tilt_degrees else []
        return f"Turning my head {' and '.join(ways)}." if ways else "Looking straight ahead."
    if isinstance(args, Drive):
        unit = "centimetre" if args.distance_cm == 1 else "centimetres"
        return f"Driving {args.direction} {args.distance_cm} {unit}."
    if isinstance(args, TurnBody):
        return f"Turning {abs(args.degrees)} degrees {_side(args.degrees)}." if args.degrees else "Staying put."
    if isinstance(args, SetLights):
        if args.pattern == "off":
            return "Turning my lights off."
        if args.pattern == "rainbow":
            return "Making my lights a rainbow."
        name = _HEX_NAMES.get(_hex(args.color), args.color)
        color = "a custom colour" if name.startswith("#") else name
        verb = {"solid": "Making", "blink": "Blinking", "pulse": "Pulsing"}[args.pattern]
        return f"{verb} my lights {color}."
    if isinstance(args, ShowExpression):
        face = "loving" if args.expression == "love" else args.expression
        article = "an" if face[0] in "aeiou" else "a"
        return f"Making {article} {face} face."
    if isinstance(args, StopAllMotion):
        return "Stopping."
    raise TypeError(f"not a robot tool's arguments: {type(args).__name__}")


def confirmation(actions: Sequence[ValidatedAction]) -> str:
    """The spoken confirmation: one short sentence per action, in order ("Turning my head to the left.")."""
    return " ".join(_sentence(action.args) for action in actions)


def describe_action(action: ValidatedAction) -> str:
    """One line for logs and the CLI, e.g. ``head pan=-30 tilt=0 speed=0.5``."""
    args = action.args
    if isinstance(args, MoveHead):
        return f"head pan={args.pan_degrees} tilt={args.tilt_degrees} speed={args.speed}"
    if isinstance(args, Drive):
        return f"drive {args.direction} {args.distance_cm}cm speed={args.speed}"
    if isinstance(args, TurnBody):
        return f"turn degrees={args.degrees} speed={args.speed}"
    if isinstance(args, SetLights):
        return f"lights {args.pattern} {_hex(args.color)} {args.duration_ms}ms"
    if isinstance(args, ShowExpression):
        return f"face {args.expression} {args.duration_ms}ms"
    return "stop all motion"


def executed_call(action: ValidatedAction) -> dict[str, Any]:
    """The call as it was done (its arguments with the defaults filled in), as a ``ToolCall`` dict."""
    return {"name": action.name, "args": action.args.model_dump(), "id": action.call_id, "type": "tool_call"}


def tool_turn(calls: Sequence[dict[str, Any]], results: Sequence[str]) -> list[BaseMessage]:
    """The executed ``calls`` as the conversation keeps them: per call an ``AIMessage`` with that one call
    and the ``ToolMessage`` with its result (one call per assistant message: Llama 3.1's template allows no
    more), so the next turn's prompt shows what was done the way the chat template renders tool use."""
    turn: list[BaseMessage] = []
    for index, (call, result) in enumerate(zip(calls, results, strict=True)):
        call_id = str(call.get("id") or f"call_{index}")
        tool_call = ToolCall(name=call["name"], args=dict(call.get("args") or {}), id=call_id)
        turn.append(AIMessage(content="", tool_calls=[tool_call]))
        turn.append(ToolMessage(content=result, tool_call_id=call_id, name=call["name"]))
    return turn
