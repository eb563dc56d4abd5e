"""act: a clear robot command ("turn your head left", "make your lights blue") becomes a forced call of
NAILA's robot tools (nodes/robot_tools.py), checked against the tools' hard limits before anything moves.

The model sees the same prompt as in any other turn (persona, robot tools, facts, history; the guidance
of intent ``robot_command``), so a command reuses the saved prompt states, with a forced ``tool_choice``:
the grammar admits exactly one valid call. A command that names one part of the body ("your head")
allows only that part's tool; one that names several ("turn your head left and make your lights red")
gets one forced call per part, in the order said; one that names none, any tool. What the words fix
("left", "look down", "30 degrees", "blue", "happy") narrows the call's grammar too
(:func:`nodes.robot_tools.call_schemas`): a small model cannot pan when told to look down.
A call whose arguments break a limit the grammar cannot hold (e.g. a speed of 0.7 where 0.5 is the
most) goes back to the model as an error ``ToolMessage`` it can read, at most ``MAX_REPAIR_ROUNDS``
times; then NAILA says it cannot do that and nothing is sent. Nothing is executed from a call the answer
did not finish (``invalid_tool_calls``). :meth:`ActionTaker.settle` does the same checking and repairing
for a call the model made on its own in an ordinary turn (``NAILA_ROBOT_TOOLS=auto``).

The turn's state gets the spoken confirmation (``response_text``), ``actions`` (one line per action, for
logs and front ends), ``commands`` (the ``naila/command/request`` commands the server publishes) and
``tool_calls`` (the calls as done, which finalize stores in memory with their results).
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Generator
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableConfig

from llm.errors import GenerationCancelledError
from nodes.failures import failure_reason
from nodes.pattern_responder import pattern_response
from nodes.robot_tools import (
    MAX_REPAIR_ROUNDS,
    UNABLE_TEXT,
    ValidatedAction,
    call_schemas,
    commands_for,
    confirmation,
    describe_action,
    executed_call,
    repair_messages,
    validate_call,
)
from prompts.templates import group_turns

logger = logging.getLogger(__name__)

# Words that name one tool's part of the body: when a command names exactly one, only that tool may be
# called (a small model otherwise turns its whole body when asked to turn its head).
_TOOL_WORDS: dict[str, re.Pattern[str]] = {
    "move_head": re.compile(r"\b(?:head|look|nod|glance|peek)\b"),
    "set_lights": re.compile(r"\b(?:lights?|leds?|lamp|glow|blink|flash|light\s+up)\b"),
    "drive": re.compile(r"\b(?:drive|forwards?|backwards?|roll|come|closer|nearer)\b"),
    "turn_body": re.compile(
        r"\b(?:turn\s+(?:yourself\s+|your\s+body\s+)?around|spin|(?:turn|rotate)\s+(?:your\s+body|yourself)"
        r"|turn\s+(?:to\s+(?:the\s+|your\s+)?)?(?:left|right)|turn\s+\d+\s*(?:degrees|°)|(?:quarter|half|full)\s+turn)\b"
    ),
    "show_expression": re.compile(r"\b(?:face|expression|smile|look\s+(?:happy|sad|surprised|sleepy|angry))\b"),
    "stop_all_motion": re.compile(r"^\W*(?:please\s+)?(?:stop|halt|freeze)\b"),
}


def named_tools(text: str) -> list[str]:
    """The robot tools a command's words point to, in the order it says them ("turn your head left and
    make your lights red": move_head, set_lights)."""
    lowered = text.lower()
    found = {name: m.start() for name, words in _TOOL_WORDS.items() if (m := words.search(lowered))}
    if "show_expression" in found and "move_head" in found:  # "look happy" is a face, not a head move
        del found["move_head"]
    return sorted(found, key=found.__getitem__)


def likely_tool(text: str) -> str | None:
    """The one robot tool a command's words point to, or None when they point to none or to several."""
    named = named_tools(text)
    return named[0] if len(named) == 1 else None


COMMAND_INTENT = "robot_command"
# With NAILA_ROBOT_TOOLS=commands a command's prompt (tools in it) shares only the persona with the saved
# states of ordinary turns: everything after is evaluated, so only the last turns come along.
COMMAND_HISTORY_TURNS = 2


class PromptSource(Protocol):
    """What the act node needs of the generate_response node (nodes/generate_response.py): the same prompt,
    history and tools, so a command's prompt shares its start (persona, tools, history) with every other
    turn's and reuses the saved prompt states."""

    tools: list[dict[str, Any]]

    def inputs(self, state: dict[str, Any]) -> dict[str, Any]: ...

    def prompt_messages(self, inputs: dict[str, Any]) -> list[BaseMessage]: ...


Plan = Generator[tuple[Any, list[BaseMessage]], Any, Any]


class ActionTaker:
    """The ``act`` node: ``invoke``/``ainvoke`` take the turn's state and return its update (empty when the
    turn is not a robot command or there is no model: the next node answers). :meth:`settle` and
    :meth:`asettle` finish an answer in which the model called a robot tool on its own (``auto``)."""

    def __init__(self, chat_model: BaseChatModel | None, prompts: PromptSource) -> None:
        self.chat_model = chat_model
        self.prompts = prompts
        self.tools = prompts.tools

    def applies(self, state: dict[str, Any]) -> bool:
        if not self.tools or state.get("intent") != COMMAND_INTENT:
            return False
        return can_call_tools(self.chat_model)

    def _messages(self, state: dict[str, Any]) -> list[BaseMessage]:
        inputs = self.prompts.inputs({**state, "intent": COMMAND_INTENT})
        if not inputs.get("tools"):  # commands mode: ordinary turns' prompts have no tools, so no saved state
            turns = group_turns(inputs["history"])[-COMMAND_HISTORY_TURNS:]  # ends like this one: keep it short
            inputs = {**inputs, "history": [m for turn in turns for m in turn]}
        return self.prompts.prompt_messages(inputs)

    def _plan(self, state: dict[str, Any]) -> Plan:
        """The calls of one command, sync or async alike: yields (bound model, messages), is sent the reply,
        returns the turn's update."""
        assert self.chat_model is not None
        actions: list[ValidatedAction] = []
        reply = None
        for choice in self._choices(state):  # one forced call per part the command names
            bound = self._bind(choice, state.get("text", ""))
            messages = self._messages(state)
            for _ in range(1 + MAX_REPAIR_ROUNDS):
                reply = yield bound, messages
                if (taken := self._valid(reply, messages)) is not None:
                    actions += taken
                    break
            else:
                return self._unable()
        return self._done(actions, reply)

    def _bind(self, choice: str, text: str) -> Any:
        """The model with the robot tools bound for one forced call; a model whose ``bind_tools`` takes
        ``call_schemas`` (ChatLlamaCpp) also gets what the command's words fix (directions, sizes, colours)."""
        assert self.chat_model is not None
        if "call_schemas" not in inspect.signature(type(self.chat_model).bind_tools).parameters:
            return self.chat_model.bind_tools(self.tools, tool_choice=choice)
        names = [t["function"]["name"] for t in self.tools] if choice == "any" else [choice]
        narrowed = call_schemas(text, names)
        return self.chat_model.bind_tools(self.tools, tool_choice=choice, call_schemas=narrowed or None)

    def _settle(self, bound: Any, messages: list[BaseMessage], reply: AIMessage) -> Plan:
        """An ``auto`` answer with calls: done when they are valid; else their errors go back to the model
        (which may now answer in words: that ``AIMessage`` is returned), at most ``MAX_REPAIR_ROUNDS`` times."""
        messages = list(messages)
        for round_ in range(1 + MAX_REPAIR_ROUNDS):
            if not (reply.tool_calls or reply.invalid_tool_calls):
                return reply
            if (taken := self._valid(reply, messages)) is not None:
                return self._done(taken, reply)
            if round_ < MAX_REPAIR_ROUNDS:
                reply = yield bound, messages
        return self._unable()

    def invoke(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        if not self.applies(state):
            return {}
        return dict(self._drive(self._plan(state), state, config))

    async def ainvoke(self, state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        if not self.applies(state):
            return {}
        return dict(await self._adrive(self._plan(state), state, config))

    def settle(
        self, state: dict[str, Any], bound: Any, messages: list[BaseMessage], reply: AIMessage, config: RunnableConfig
    ) -> dict[str, Any] | AIMessage:
        """The turn's update for an answer that called tools, or the model's answer in words."""
        return self._drive(self._settle(bound, messages, reply), state, config)

    async def asettle(
        self, state: dict[str, Any], bound: Any, messages: list[BaseMessage], reply: AIMessage, config: RunnableConfig
    ) -> dict[str, Any] | AIMessage:
        return await self._adrive(self._settle(bound, messages, reply), state, config)

    def _drive(self, plan: Plan, state: dict[str, Any], config: RunnableConfig) -> Any:
        try:
            bound, messages = next(plan)
            while True:
                bound, messages = plan.send(bound.invoke(messages, config))
        except StopIteration as done:
            return done.value
        except GenerationCancelledError:
            raise
        except Exception as exc:  # a model failure: the pattern answer says so
            return self._failed(state, exc)

    async def _adrive(self, plan: Plan, state: dict[str, Any], config: RunnableConfig) -> Any:
        try:
            bound, messages = next(plan)
            while True:
                bound, messages = plan.send(await bound.ainvoke(messages, config))
        except StopIteration as done:
            return done.value
        except GenerationCancelledError:
            raise
        except Exception as exc:  # a model failure: the pattern answer says so
            return self._failed(state, exc)

    @staticmethod
    def _choices(state: dict[str, Any]) -> list[str]:
        """``tool_choice`` per call: each tool the command names, or any one tool when it names none."""
        return named_tools(state.get("text", "")) or ["any"]

    @staticmethod
    def _valid(reply: Any, messages: list[BaseMessage]) -> list[ValidatedAction] | None:
        """``reply``'s actions when its calls are all valid; else None, with the errors appended to
        ``messages`` for the next round."""
        assert isinstance(reply, AIMessage)
        results = [validate_call(call) for call in reply.tool_calls]
        actions = [r for r in results if isinstance(r, ValidatedAction)]
        if reply.tool_calls and len(actions) == len(results) and not reply.invalid_tool_calls:
            return actions
        logger.info(
            "robot call refused (%d valid of %d, %d cut off): asking the model again",
            len(actions),
            len(results),
            len(reply.invalid_tool_calls),
        )
        # No call at all (a cut-off one, or a server that does not force the call: llama.cpp's server takes
        # tool_choice="required" as a hint): the same prompt again. A text reply is not appended: a prompt
        # that ends with two assistant messages is refused by llama.cpp's server.
        if reply.tool_calls:
            messages.extend(repair_messages(reply, results))
        return None

    @staticmethod
    def _done(actions: list[ValidatedAction], reply: Any) -> dict[str, Any]:
        meta = reply.response_metadata or {}  # the figures of the last call
        usage: dict[str, Any] = dict(reply.usage_metadata or {})
        return {
            "response_text": confirmation(actions),
            "response_source": "llm",
            "finish_reason": "stop",
            "actions": [describe_action(a) for a in actions],
            "commands": commands_for(actions),
            "tool_calls": [executed_call(a) for a in actions],
            "metrics": {
                "model_name": meta.get("model_name"),
                "input_tokens": usage.get("input_tokens"),
                "output_tokens": usage.get("output_tokens"),
                "cached_tokens": meta.get("prompt_tokens_cached"),
                "time_to_first_token_ms": meta.get("time_to_first_token_ms"),
                "inference_time_ms": meta.get("inference_time_ms"),
                "tokens_per_second": meta.get("tokens_per_second"),
            },
        }

    @staticmethod
    def _unable() -> dict[str, Any]:
        logger.warning("no valid robot call after %d repair rounds: nothing is done", MAX_REPAIR_ROUNDS)
        return {
            "response_text": UNABLE_TEXT,
            "response_source": "pattern",
            "fallback_reason": "invalid_action",
            "finish_reason": "stop",
        }

    @staticmethod
    def _failed(state: dict[str, Any], error: Exception) -> dict[str, Any]:
        reason = failure_reason(error)
        logger.warning("robot command failed (%s: %s); pattern responder answers", reason, error)
        text = pattern_response(COMMAND_INTENT, has_history=bool(state.get("messages")), text="", reason=reason)
        return {"response_text": text, "response_source": "pattern", "fallback_reason": reason, "finish_reason": "stop"}


def can_call_tools(chat_model: BaseChatModel | None) -> bool:
    """Whether ``chat_model`` implements ``bind_tools`` (a model without tools just answers in words)."""
    return chat_model is not None and type(chat_model).bind_tools is not BaseChatModel.bind_tools
