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
    from naila_graph.memory import clear_conversation, open_checkpointer
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
        graph = build_graph(model, saver, settings=settings, degraded_reason=degraded_reason)
        if interactive:
            return _interactive(graph, args, thread_id)
        assert text is not None
        result = _turn(graph, text, args, thread_id, stream_to=None)
        print(result["response_text"])
        if args.verbose:
            _report(result)
        return 0


def _turn(graph: Any, text: str, args: argparse.Namespace, thread_id: str, stream_to: Any) -> dict[str, Any]:
    from naila_graph.graph import turn_config, turn_input

    inputs = turn_input(text, device_id=args.device, input_type="text")
    config = turn_config(thread_id, device_id=args.device)
    if stream_to is None:
        return dict(graph.invoke(inputs, config))
    streamed = False
    final: dict[str, Any] = {}
    for mode, payload in graph.stream(inputs, config, stream_mode=["messages", "values"]):
        if mode == "messages":
            chunk, meta = payload
            if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "generate_response":
                if chunk.text:
                    stream_to.write(chunk.text)
                    stream_to.flush()
                    streamed = True
        else:
            final = payload
    if not streamed:
        stream_to.write(final.get("response_text", ""))
    elif final.get("response_source") != "llm":
        stream_to.write("\n[the model failed; instead:] " + final.get("response_text", ""))
    stream_to.write("\n")
    stream_to.flush()
    return final


def _interactive(graph: Any, args: argparse.Namespace, thread_id: str) -> int:
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
            result = _turn(graph, line, args, thread_id, stream_to=sys.stdout)
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
