"""LLM_BACKEND=openai against a real llama.cpp server (xllamacpp, the tiny GGUF on a free loopback port), a
stub server that drips tokens (the deadline), a port nobody listens on (server down), and `naila llm-server`.

The tiny model's text is random; the tests check what the server and the backend do with it (counts, stops,
timings, fallbacks, the grammar of a forced tool call), never its words. The real 0.5B bundle answers a
question and takes a robot command through the graph.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.runnables import RunnableBinding
from langgraph.checkpoint.sqlite import SqliteSaver

from llm import LLMSettings, load_chat_model
from llm.capabilities import LocalModel
from llm.errors import ContextOverflowError, GenerationTimeoutError, ModelUnavailableError
from llm.openai_backend import ChatOpenAICompatible
from naila_graph.graph import build_graph, turn_config, turn_input
from naila_graph.settings import NailaSettings
from naila_graph.telemetry import ModelStatus, ServerStats, health_payload
from nodes.act import ActionTaker
from nodes.generate_response import ResponseGenerator
from nodes.robot_tools import call_schemas, robot_tool_schemas
from tests.support.broker import free_port
from tests.support.models import tiny_model_path

xllamacpp = pytest.importorskip("xllamacpp", reason="needs the 'server' extra (scripts/setup.sh --test installs it)")

SLOTS = 2
SLOT_CTX = 2048
PROMPT = [SystemMessage("You are NAILA, a desk robot."), HumanMessage("Tell me about stars")]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """A real llama.cpp server (2 slots of 2048 tokens) on the tiny GGUF."""
    params = xllamacpp.CommonParams()
    params.model.path = tiny_model_path()
    params.n_parallel = SLOTS
    params.n_ctx = SLOTS * SLOT_CTX
    params.port = free_port()
    params.hostnames = ["127.0.0.1"]
    params.verbosity = 1  # errors only
    server = xllamacpp.Server(params)
    yield f"http://127.0.0.1:{params.port}/v1"
    del server  # stops it


def openai_model(url: str, **overrides: Any) -> ChatOpenAICompatible:
    settings = LLMSettings(
        _env_file=None,  # type: ignore[call-arg]
        backend="openai",
        base_url=url,
        temperature=0,
        seed=1,
        **overrides,
    )
    model = load_chat_model(settings)
    assert isinstance(model, ChatOpenAICompatible)
    return model


def aggregate(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


@pytest.fixture
def saver(tmp_path: Path) -> Iterator[SqliteSaver]:
    conn = sqlite3.connect(tmp_path / "memory.sqlite", check_same_thread=False)
    yield SqliteSaver(conn)
    conn.close()


# ---------------------------------------------------------------- the real server


def test_the_backend_reads_the_slot_context_and_counts_tokens_like_the_server(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=4)
    assert not isinstance(model, LocalModel)  # no prefill or saved states: the graph must not assume them
    assert model.n_ctx == SLOT_CTX  # per slot, from /props
    assert model.token_counting == "server"
    counted = model.get_num_tokens_from_messages(PROMPT)
    answer = model.invoke(PROMPT)
    assert answer.usage_metadata is not None
    assert answer.usage_metadata["input_tokens"] == counted  # the server's own tokenizer and template
    assert model.server_info()["n_ctx_per_slot"] == SLOT_CTX
    health = health_payload(
        ServerStats(), ModelStatus(model=model, status="loaded"), connected=True, queue_depth=0, in_progress=0
    )
    assert health["ai_services"]["llm"]["backend"]["token_counting"] == "server"  # health says which
    assert model.model_name == tiny_model_path()  # no LLM_MODEL: the server's own (/v1/models)
    assert answer.response_metadata["model_name"] == model.model_name


def test_a_history_with_a_robot_action_is_counted_and_cut(server_url: str) -> None:
    """A stored tool call and its result: counted per message (an assistant message with calls cannot end
    a template's list: llama.cpp takes it for a prefill and refuses it) and dropped together."""
    model = openai_model(server_url, max_tokens=4)
    call = AIMessage("", tool_calls=[{"name": "move_head", "args": {"direction": "left"}, "id": "call1"}])
    action = [HumanMessage("look left"), call, ToolMessage("done", tool_call_id="call1"), AIMessage("Done!")]
    messages = [SystemMessage("You are NAILA."), *action, HumanMessage("what did you just do?")]
    exact = model.get_num_tokens_from_messages(messages)
    answer = model.invoke(messages)
    assert answer.usage_metadata is not None and answer.usage_metadata["input_tokens"] == exact
    assert model._estimate(messages, None) >= exact - 8  # the per-message estimate is close
    without = model.get_num_tokens_from_messages([messages[0], messages[-1]])
    room = (without + exact) // 2  # the question fits, the question with the action does not
    kept = model.fit_to_context(messages, SLOT_CTX - room)
    assert kept == [messages[0], messages[-1]]  # the whole action went, no orphan tool result


def test_streaming_yields_text_usage_and_timings(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=8)
    chunks = list(model.stream(PROMPT))
    texts = [c.text for c in chunks if c.text]
    assert len(texts) >= 2  # streamed piece by piece, not one block
    total = aggregate(chunks)
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == 8  # the tiny model never ends a turn: max tokens stops it
    assert total.usage_metadata["input_tokens"] > 0
    meta = total.response_metadata
    assert meta["finish_reason"] == "length"
    assert 0 < meta["time_to_first_token_ms"] <= meta["inference_time_ms"]
    assert meta["tokens_per_second"] is None or meta["tokens_per_second"] > 0
    assert "prompt_tokens_cached" in meta


async def test_async_streaming_reports_the_same(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=5)
    chunks = [chunk async for chunk in model.astream(PROMPT)]
    total = aggregate(chunks)
    assert total.text
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == 5
    assert total.response_metadata["time_to_first_token_ms"] > 0
    again = await model.ainvoke(PROMPT)  # same prompt: the slot's prompt cache serves it
    assert again.response_metadata["prompt_tokens_cached"] > 0


def test_max_tokens_per_call_is_respected(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=20)
    short = model.invoke(PROMPT, max_tokens=3)
    assert short.usage_metadata is not None and short.usage_metadata["output_tokens"] == 3


def test_a_stop_sequence_ends_the_answer_before_it(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=24)
    full = model.invoke(PROMPT).text
    # a plain character well inside the greedy answer: the same answer must stop right before it
    position, stop = next((i, ch) for i, ch in enumerate(full) if i >= 3 and ch.isascii() and ch.isalnum())
    stopped = model.invoke(PROMPT, stop=[stop])
    assert stopped.response_metadata["finish_reason"] == "stop"
    assert stop not in stopped.text
    assert stopped.text == full[: full.index(stop)]
    assert position >= full.index(stop)


def test_an_oversized_history_is_cut_to_the_slot(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=4)
    history: list[BaseMessage] = []
    for i in range(12):
        history += [HumanMessage(f"question {i}: " + "tell me more " * 25), AIMessage("answer " * 40)]
    messages = [SystemMessage("You are NAILA."), *history, HumanMessage("and the last one?")]
    assert model.get_num_tokens_from_messages(messages) > SLOT_CTX  # would not fit as it is
    kept = model.fit_to_context(messages, 4)
    assert kept[0] == messages[0] and kept[-1] == messages[-1]  # persona and question stay
    assert kept[1:-1] == history[len(history) - len(kept) + 2 :]  # the newest turns, whole
    assert isinstance(kept[1], HumanMessage)
    answer = model.invoke(messages)
    assert answer.usage_metadata is not None
    assert SLOT_CTX // 2 < answer.usage_metadata["input_tokens"] <= SLOT_CTX - 4


def test_a_graph_turn_with_a_long_history_is_answered_by_the_model(server_url: str, saver: SqliteSaver) -> None:
    """The graph keeps turns by an approximate count (about 4 characters a token) in the slot's window; the
    tiny model's small vocabulary makes each character about a token, so the backend must cut the history
    it was given to the slot."""
    model = openai_model(server_url, max_tokens=16)  # enough text to survive the speech cleanup
    graph = build_graph(model, saver, settings=NailaSettings(robot_tools="off", max_turns=20))
    config = turn_config("robot1")
    stored: list[BaseMessage] = []
    for i in range(10):
        stored += [HumanMessage(f"story {i}: " + "once upon a time " * 20), AIMessage("and then " * 30)]
    graph.update_state(config, {"messages": stored}, as_node="finalize")
    out = graph.invoke(turn_input("Tell me about stars", device_id="robot1"), config)
    assert (out["response_source"], out["fallback_reason"]) == ("llm", None)
    assert out["metrics"]["history_messages"] == len(stored)  # the graph sent them all ...
    assert out["metrics"]["input_tokens"] <= SLOT_CTX - 16  # ... and the backend cut them to the slot


def test_the_graph_chooses_the_history_for_the_slots_context_not_an_assumed_window(
    server_url: str, saver: SqliteSaver
) -> None:
    """A memory that fits an assumed 4096-token window but not the server's 2048-token slot: the graph
    itself keeps only the newest turns (the slot's context, ``context_window``, less this model's answer),
    and the model answers in a prompt that fits the slot."""
    model = openai_model(server_url, max_tokens=16)
    assert model.context_window == SLOT_CTX
    graph = build_graph(model, saver, settings=NailaSettings(robot_tools="off", max_turns=20))
    config = turn_config("robot1")
    stored: list[BaseMessage] = []
    for i in range(16):
        stored += [HumanMessage(f"story {i}: " + "once upon a time " * 20), AIMessage("and then " * 30)]
    assert SLOT_CTX < count_tokens_approximately(stored) < 4096 - 512 - 600  # would fit the old assumption
    graph.update_state(config, {"messages": stored}, as_node="finalize")
    out = graph.invoke(turn_input("Tell me about stars", device_id="robot1"), config)
    assert (out["response_source"], out["fallback_reason"]) == ("llm", None)
    kept = out["metrics"]["history_messages"]
    assert 0 < kept < len(stored) and kept % 2 == 0  # the newest whole turns, chosen by the graph
    assert count_tokens_approximately(stored[-kept:]) <= SLOT_CTX - 16
    assert out["metrics"]["input_tokens"] <= SLOT_CTX - 16  # the prompt the server evaluated fits its slot


# ---------------------------------------------------------------- forced tool calls

HEAD_LEFT = "Turn your head to the left."
HEAD = [t for t in robot_tool_schemas() if t["function"]["name"] == "move_head"]  # all six do not fit 2048
STOP = [t for t in robot_tool_schemas() if t["function"]["name"] == "stop_all_motion"]
COMMAND = [SystemMessage("You are NAILA, a desk robot."), HumanMessage(HEAD_LEFT)]


def test_a_forced_call_is_held_to_its_narrowed_schema_by_the_servers_grammar(server_url: str) -> None:
    """llama.cpp's server takes tool_choice="required" as a hint (the tiny model writes noise); the backend
    sends the call's grammar instead, so even noise is one valid call, within what "left" allows."""
    model = openai_model(server_url, max_tokens=300)
    narrowed = call_schemas(HEAD_LEFT, ["move_head"])
    bound = model.bind_tools(HEAD + STOP, tool_choice="move_head", call_schemas=narrowed)
    reply = bound.invoke(COMMAND)
    assert reply.invalid_tool_calls == []
    [call] = reply.tool_calls
    assert call["name"] == "move_head" and call["id"]
    assert -90 <= call["args"]["pan_degrees"] <= -1 and call["args"]["tilt_degrees"] == 0
    assert reply.response_metadata["finish_reason"] == "stop"  # the grammar ended it, not max_tokens
    assert reply.usage_metadata is not None  # the tools are in the prompt, as in any turn that has them
    assert reply.usage_metadata["input_tokens"] == model.get_num_tokens_from_messages(COMMAND, HEAD + STOP)
    assert reply.response_metadata["time_to_first_token_ms"] > 0


async def test_any_tool_forced_on_the_async_path(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=300)
    reply = await model.bind_tools(HEAD + STOP, tool_choice="any").ainvoke(COMMAND)
    assert reply.invalid_tool_calls == []
    assert [c["name"] for c in reply.tool_calls] in (["move_head"], ["stop_all_motion"])
    streamed = [chunk async for chunk in model.bind_tools(STOP, tool_choice=True).astream(COMMAND)]
    total = aggregate([c for c in streamed if isinstance(c, AIMessageChunk)])
    assert len(streamed) > 1  # pieces, as they came
    assert [c["name"] for c in total.tool_calls] == ["stop_all_motion"] and total.tool_calls[0]["args"] == {}


def test_a_forced_call_cut_off_by_max_tokens_is_never_a_valid_call(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=6)
    reply = model.bind_tools(HEAD, tool_choice="required").invoke(COMMAND)
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.tool_calls == [] and len(reply.invalid_tool_calls) == 1


def test_bind_tools_names_what_is_wrong(server_url: str) -> None:
    model = openai_model(server_url)
    with pytest.raises(ValueError, match="names no bound tool"):
        model.bind_tools(HEAD, tool_choice="fly")
    with pytest.raises(ValueError, match="call_schemas names tools that are not bound: fly"):
        model.bind_tools(HEAD, tool_choice="any", call_schemas={"fly": {"type": "object"}})


def test_the_act_node_takes_a_clear_command_on_this_backend(server_url: str) -> None:
    """The act node's forced, narrowed call (nodes/act.py) on the openai backend: a head turn to the left,
    not "Sorry, I can't do that." (only the head tool: the six robot tools do not fit the tiny model)."""
    model = openai_model(server_url, max_tokens=300)
    prompts = ResponseGenerator(
        model, persona="You are NAILA.", clock=lambda: datetime(2026, 6, 15, 10, 30), max_turns=4
    )
    prompts.tools = HEAD
    update = ActionTaker(model, prompts).invoke({"intent": "robot_command", "text": HEAD_LEFT, "messages": []}, {})
    assert (update["response_source"], update.get("fallback_reason")) == ("llm", None)
    [command] = update["commands"]
    assert command["payload"]["motor_group"] == "head" and command["payload"]["degrees"] < 0
    assert update["metrics"]["input_tokens"] > 0


def test_auto_keeps_the_servers_own_tool_calling(server_url: str) -> None:
    """``auto`` and the narrowed schemas of an ordinary turn: the tools go to the server as they are."""
    model = openai_model(server_url)
    bound = model.bind_tools(HEAD, tool_choice="auto", call_schemas=call_schemas(HEAD_LEFT, ["move_head"]))
    assert isinstance(bound, RunnableBinding)
    _, _, sent, calls = model._prepare_call(list(COMMAND), dict(bound.kwargs))
    assert calls is None and sent["tool_choice"] == "auto" and sent["tools"] == HEAD
    assert "call_schemas" not in sent and "grammar" not in (sent.get("extra_body") or {})


def test_a_server_without_grammars_gets_the_narrowed_tool_and_required(record_url: str) -> None:
    """A server that is not llama.cpp (no /props): the forced call is its own business (vLLM and OpenAI
    force ``required``), with the one named tool, narrowed, and no llama.cpp fields."""
    model = openai_model(record_url, max_tokens=8)
    narrowed = call_schemas(HEAD_LEFT, ["move_head"])
    model.bind_tools(HEAD + STOP, tool_choice="move_head", call_schemas=narrowed).invoke(COMMAND)
    [body] = _RecordHandler.bodies
    assert body["tool_choice"] == "required"
    assert [t["function"]["name"] for t in body["tools"]] == ["move_head"]
    assert body["tools"][0]["function"]["parameters"] == narrowed["move_head"]
    assert "grammar" not in body and "call_schemas" not in body


def test_a_message_larger_than_the_slot_falls_back_with_context_overflow(server_url: str, saver: SqliteSaver) -> None:
    model = openai_model(server_url, max_tokens=4)
    with pytest.raises(ContextOverflowError):
        model.invoke([SystemMessage("You are NAILA."), HumanMessage("why " * 1000)])
    graph = build_graph(model, saver, settings=NailaSettings(robot_tools="off"))
    out = graph.invoke(turn_input("why is the sky " * 200, device_id="robot1"), turn_config("robot1"))
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "context_overflow")


async def test_the_graph_streams_the_servers_tokens(server_url: str) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    model = openai_model(server_url, max_tokens=12)
    graph = build_graph(model, InMemorySaver(), settings=NailaSettings(robot_tools="off"))
    config = turn_config("robot1")
    task = turn_input("Tell me about stars", device_id="robot1")
    items: list[Any] = [item async for item in graph.astream(task, config, stream_mode="messages")]
    tokens = [chunk.text for chunk, meta in items if meta["langgraph_node"] == "generate_response" and chunk.text]
    assert len(tokens) > 1  # piece by piece, as they came from the server
    state = (await graph.aget_state(config)).values
    assert (state["response_source"], state["metrics"]["output_tokens"]) == ("llm", 12)
    assert state["metrics"]["time_to_first_token_ms"] > 0


# ---------------------------------------------------------------- failures without a real server


class _DripHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that streams one token every ``interval`` seconds, for ``count`` tokens;
    everything else is 404 (no /props, no /tokenize: a server we know nothing about)."""

    interval = 0.2
    count = 100

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_error(404)

    def received(self, body: bytes) -> None:
        pass

    def do_POST(self) -> None:
        self.received(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for i in range(self.count):
                event = {
                    "id": "drip",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "drip",
                    "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                self.wfile.flush()
                time.sleep(self.interval)
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: what the deadline is for


class _StallHandler(_DripHandler):
    """One token, then silence."""

    interval = 10.0
    count = 2


class _RecordHandler(_DripHandler):
    """Keeps the body of every chat request; answers two quick tokens."""

    interval = 0.0
    count = 2
    bodies: ClassVar[list[dict[str, Any]]] = []

    def received(self, body: bytes) -> None:
        if self.path == "/v1/chat/completions":
            self.bodies.append(json.loads(body))


def _stub(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def drip_url() -> Iterator[str]:
    yield from _stub(_DripHandler)


@pytest.fixture
def stall_url() -> Iterator[str]:
    yield from _stub(_StallHandler)


@pytest.fixture
def record_url() -> Iterator[str]:
    _RecordHandler.bodies.clear()
    yield from _stub(_RecordHandler)


def test_the_deadline_covers_the_whole_answer_not_each_read(drip_url: str) -> None:
    model = openai_model(drip_url, max_inference_time_seconds=1.0)
    started = time.monotonic()
    received: list[str] = []
    with pytest.raises(GenerationTimeoutError):
        for chunk in model.stream(PROMPT):
            received.append(chunk.text)
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5  # every read was quick (0.2 s); the answer as a whole took too long
    assert 2 <= len([t for t in received if t]) <= 8
    assert model.token_counting == "approximate"  # this server has no /tokenize


def test_a_server_that_stalls_is_cut_at_the_deadline(stall_url: str) -> None:
    model = openai_model(stall_url, max_inference_time_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(GenerationTimeoutError):
        model.invoke(PROMPT)
    assert 0.9 <= time.monotonic() - started < 2.5  # not the stub's 10 s silence


async def test_the_deadline_fires_on_the_async_path_too(drip_url: str) -> None:
    model = openai_model(drip_url, max_inference_time_seconds=0.8)
    started = time.monotonic()
    with pytest.raises(GenerationTimeoutError):
        await model.ainvoke(PROMPT)
    assert 0.8 <= time.monotonic() - started < 2.0
    shorter = model.bind(timeout=0.3)  # a call's own timeout (the guard retry binds the time left)
    started = time.monotonic()
    with pytest.raises(GenerationTimeoutError):
        await shorter.ainvoke(PROMPT)
    assert time.monotonic() - started < 0.8


def test_the_approximate_count_has_a_margin_and_still_cuts_history(drip_url: str) -> None:

    model = openai_model(drip_url, context_size=512, max_tokens=16)
    assert model.n_ctx == 512  # the server says nothing: LLM_CONTEXT_SIZE
    messages: list[BaseMessage] = [SystemMessage("You are NAILA.")]
    for i in range(30):
        messages += [HumanMessage(f"question {i} " + "word " * 10), AIMessage("answer " * 10)]
    messages.append(HumanMessage("last"))
    assert model.get_num_tokens_from_messages(messages) > count_tokens_approximately(messages)
    kept = model.fit_to_context(messages, 16)
    assert 3 <= len(kept) < len(messages) and kept[-1] == messages[-1]
    assert model.get_num_tokens_from_messages(kept) <= 512 - 16


def test_server_down_the_graph_answers_with_the_pattern_responder(saver: SqliteSaver) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    model = openai_model(url, max_tokens=8)
    assert model.token_counting == "unknown"
    with pytest.raises(ModelUnavailableError):
        model.invoke(PROMPT)
    graph = build_graph(model, saver, settings=NailaSettings(robot_tools="off"))
    out = graph.invoke(turn_input("Tell me about stars", device_id="robot1"), turn_config("robot1"))
    assert (out["response_source"], out["fallback_reason"]) == ("pattern", "model_unavailable")
    assert out["response_text"]


def test_the_openai_backend_needs_a_base_url() -> None:
    from pydantic import ValidationError

    from llm.settings import describe_settings_error

    with pytest.raises(ValidationError) as caught:
        LLMSettings(_env_file=None, backend="openai")  # type: ignore[call-arg]
    assert "LLM_BACKEND=openai needs LLM_BASE_URL" in describe_settings_error(caught.value)
    with pytest.raises(ValidationError) as caught:
        LLMSettings(_env_file=None, backend="openai", base_url="localhost:8080")  # type: ignore[call-arg]
    assert "LLM_BASE_URL='localhost:8080'" in describe_settings_error(caught.value)
    with pytest.raises(ValidationError):
        LLMSettings(_env_file=None, backend="vllm")  # type: ignore[call-arg, arg-type]


# ---------------------------------------------------------------- naila llm-server


def test_llm_server_prints_its_url_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "naila_graph.cli", "llm-server", "--model", tiny_model_path(), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"http://127.0.0.1:{port}/v1", proc.stderr.read() if proc.stderr else ""
        with urllib.request.urlopen(f"{line}/models", timeout=10) as reply:
            models = json.loads(reply.read())
        assert models["data"][0]["id"].endswith(".gguf")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_llm_server_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from naila_graph.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["llm-server", "--model", tiny_model_path(), "--port", str(port)])
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_llm_server_without_the_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from naila_graph.cli import main

    monkeypatch.setitem(sys.modules, "xllamacpp", None)  # import fails as if not installed
    assert main(["llm-server", "--port", str(free_port())]) == 1
    assert "pip install 'naila-graph[server]'" in capsys.readouterr().err


async def test_four_requests_at_once_share_the_slots(server_url: str) -> None:
    model = openai_model(server_url, max_tokens=4)
    answers = await asyncio.gather(*(model.ainvoke(PROMPT) for _ in range(4)))
    assert all(a.usage_metadata and a.usage_metadata["output_tokens"] == 4 for a in answers)


@pytest.fixture(scope="module")
def real_server_url(real_model: str) -> Iterator[str]:
    """A real llama.cpp server (one slot of 4096 tokens) on the real 0.5B bundle."""
    params = xllamacpp.CommonParams()
    params.model.path = real_model
    params.n_ctx = 4096
    params.port = free_port()
    params.hostnames = ["127.0.0.1"]
    params.verbosity = 1
    server = xllamacpp.Server(params)
    yield f"http://127.0.0.1:{params.port}/v1"
    del server


@pytest.mark.real_model
@pytest.mark.slow
def test_the_real_model_answers_a_question_through_the_graph(real_server_url: str, saver: SqliteSaver) -> None:
    model = openai_model(real_server_url, max_tokens=48)
    graph = build_graph(model, saver, settings=NailaSettings(robot_tools="off"))
    out = graph.invoke(turn_input("What is the capital of France?", device_id="robot1"), turn_config("robot1"))
    assert (out["response_source"], out["fallback_reason"]) == ("llm", None)
    assert "Paris" in out["response_text"]
    assert out["metrics"]["time_to_first_token_ms"] > 0
    assert out["metrics"]["input_tokens"] > 100  # the persona's prompt, counted by the server


@pytest.mark.real_model
@pytest.mark.slow
def test_the_real_model_turns_its_head_left_through_the_graph(real_server_url: str, saver: SqliteSaver) -> None:
    """A clear command on LLM_BACKEND=openai: the act node's forced call, held by the grammar, becomes a head
    pan to the left (the command the server publishes), not "Sorry, I can't do that."."""
    model = openai_model(real_server_url, max_tokens=96)
    graph = build_graph(model, saver, settings=NailaSettings(robot_tools="commands"))
    out = graph.invoke(turn_input("Turn your head to the left.", device_id="robot1"), turn_config("robot1"))
    assert out["intent"] == "robot_command"
    assert (out["response_source"], out["fallback_reason"]) == ("llm", None), out["response_text"]
    [command] = out["commands"]
    assert command["payload"]["motor_group"] == "head" and command["payload"]["action"] == "pan"
    assert command["payload"]["degrees"] < 0
    assert out["actions"] and out["response_text"] != "Sorry, I can't do that."
