"""``naila chat``: one turn, or an interactive streaming session, through the whole graph."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from langchain_core.messages import AIMessageChunk


def _eprint(*parts: Any, end: str = "\n") -> None:
    print(*parts, file=sys.stderr, flush=True, end=end)


def open_model(model_override: str | None) -> tuple[Any, str | None]:
    """The loaded chat model, or ``(None, reason)`` for degraded mode (the reason goes to stderr)."""
    from llm import LLMSettings, load_chat_model
    from llm.errors import LLMError, ModelLoadError, ModelNotFoundError

    settings = LLMSettings(model_path=model_override) if model_override else LLMSettings()
    model = load_chat_model(settings)
    try:
        model.load()
    except LLMError as exc:
        reason = (
            "model_not_found"
            if isinstance(exc, ModelNotFoundError)
            else "model_load_failed"
            if isinstance(exc, ModelLoadError)
            else "model_error"
        )
        _eprint(f"naila: degraded mode (pattern responder only): {exc}")
        return None, reason
    return model, None


def run_chat(args: argparse.Namespace) -> int:
    from naila_graph.graph import build_graph
    from naila_graph.memory import clear_conversation, open_checkpointer, prune_thread
    from naila_graph.settings import NailaSettings

    settings = NailaSettings()
    text: str | None = args.text
    interactive = text is None and sys.stdin.isatty()
    if text is None and not interactive:
        text = sys.stdin.read()
    if not interactive and not (text or "").strip():
        _eprint("naila: error: nothing to say (the message is empty)")
        return 2
    thread_id = args.conversation or args.device
    model, degraded_reason = open_model(args.model)
    with open_checkpointer(settings.resolved_memory_url()) as saver:
        if args.new and clear_conversation(saver, thread_id):
            _eprint(f"naila: forgot conversation {thread_id!r}")
        if interactive:
            return _interactive(model, settings, degraded_reason, args, thread_id)
        graph = build_graph(model, saver, settings=settings, degraded_reason=degraded_reason)
        assert text is not None
        result = _turn(graph, text, args, thread_id)
        prune_thread(saver, thread_id)
        print(result["response_text"])
        if args.verbose:
            _report(result)
        return 0


def _turn(graph: Any, text: str, args: argparse.Namespace, thread_id: str) -> dict[str, Any]:
    from naila_graph.graph import turn_config, turn_input

    inputs = turn_input(text, device_id=args.device, input_type="text")
    return dict(graph.invoke(inputs, turn_config(thread_id, device_id=args.device), durability="exit"))


async def _streamed_turn(
    model: Any, settings: Any, degraded_reason: str | None, text: str, args: argparse.Namespace, thread_id: str
) -> dict[str, Any]:
    """One turn with the answer streamed to stdout. Async, so Ctrl-C cancels the generation itself:
    asyncio.run turns SIGINT into cancelling this task, and the chat model stops at the next token."""
    from naila_graph.graph import build_graph, turn_config, turn_input
    from naila_graph.memory import aprune_thread, open_async_checkpointer

    out = sys.stdout
    inputs = turn_input(text, device_id=args.device, input_type="text")
    config = turn_config(thread_id, device_id=args.device)
    streamed = False
    final: dict[str, Any] = {}
    async with open_async_checkpointer(settings.resolved_memory_url()) as saver:
        graph: Any = build_graph(model, saver, settings=settings, degraded_reason=degraded_reason)
        async for mode, payload in graph.astream(inputs, config, stream_mode=["messages", "values"], durability="exit"):
            if mode == "messages":
                chunk, meta = payload
                if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "generate_response":
                    if chunk.text:
                        out.write(chunk.text)
                        out.flush()
                        streamed = True
            else:
                final = payload
        await aprune_thread(saver, thread_id)
    if not streamed:
        out.write(final.get("response_text", ""))
    elif final.get("response_source") != "llm":
        out.write("\n[the model failed; instead:] " + final.get("response_text", ""))
    out.write("\n")
    out.flush()
    return final


def _interactive(
    model: Any, settings: Any, degraded_reason: str | None, args: argparse.Namespace, thread_id: str
) -> int:
    import asyncio

    _eprint("NAILA is listening. Ctrl-C stops an answer, Ctrl-D leaves.")
    while True:
        try:
            _eprint("you> ", end="")
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            _eprint("")
            continue
        if not line:  # Ctrl-D
            _eprint("")
            return 0
        if not line.strip():
            continue
        try:
            sys.stdout.write("naila> ")
            result = asyncio.run(_streamed_turn(model, settings, degraded_reason, line, args, thread_id))
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            _eprint("[stopped]")
            continue
        if args.verbose:
            _report(result)


def _report(result: dict[str, Any]) -> None:
    metrics = result.get("metrics") or {}
    tps = metrics.get("tokens_per_second")
    _eprint(
        f"[intent={result.get('intent')} ({result.get('intent_confidence', 0):.2f})"
        f" source={result.get('response_source')} fallback={result.get('fallback_reason')}"
        f" finish={result.get('finish_reason')}"
        f" tokens/s={f'{tps:.1f}' if tps else '-'}"
        f" ttft_ms={metrics.get('time_to_first_token_ms') and round(metrics['time_to_first_token_ms'])}]"
    )
