"""``naila chat``: one turn, or an interactive streaming session, through the whole graph.

It only prints the turn layer's events (:mod:`naila_graph.turn`): the model's text as it comes, and
the final answer (with a notice when the model failed after it had started).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from naila_graph.cli.errors import AddCommon, CLIError, eprint

REPLACED_NOTICE = "[the model failed; instead:]"


def register(sub: Any, common: AddCommon) -> None:
    chat = sub.add_parser("chat", help="talk to NAILA (one turn with TEXT, interactive without)")
    common(chat)
    chat.add_argument("text", nargs="?", help="the message; omitted: read stdin or open a session")
    chat.add_argument("--model", help="bundle name or GGUF path (overrides LLM_MODEL_PATH)")
    chat.add_argument("--device", default="cli", help="device id = memory thread (default: cli)")
    chat.add_argument("--conversation", help="conversation id (overrides the device's thread)")
    chat.add_argument("--new", action="store_true", help="forget this conversation before the turn")
    chat.add_argument("--verbose", action="store_true", help="intent, source, tokens/s on stderr")
    chat.set_defaults(handler=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from naila_graph.brain import open_model
    from naila_graph.graph import build_graph
    from naila_graph.memory import clear_conversation, open_checkpointer
    from naila_graph.settings import NailaSettings
    from naila_graph.turn import Failed, Final, Metrics, TurnRunner
    from naila_graph.user_facts import open_store

    settings = NailaSettings()
    text: str | None = args.text
    interactive = text is None and sys.stdin.isatty()
    if text is None and not interactive:
        text = sys.stdin.read()
    if not interactive and not (text or "").strip():
        eprint("naila: error: nothing to say (the message is empty)")
        return 2
    thread_id = args.conversation or args.device
    model, degraded_reason = open_model(args.model)
    url = settings.resolved_memory_url()
    with open_checkpointer(url) as saver, open_store(url) as store:
        if args.new and clear_conversation(saver, thread_id):
            eprint(f"naila: forgot conversation {thread_id!r}")
        if interactive:
            return _interactive(model, settings, degraded_reason, args, thread_id)
        graph = build_graph(model, saver, settings=settings, degraded_reason=degraded_reason, store=store)
        assert text is not None
        for event in TurnRunner(graph, saver=saver).run_sync(_request(text, args, thread_id)):
            if isinstance(event, Failed):
                raise event.error
            if isinstance(event, Final):
                _show_actions(event.state)
                print(event.text)
            if isinstance(event, Metrics) and args.verbose:
                _report(event.state)
        return 0


def _show_actions(state: dict[str, Any]) -> None:
    """Robot actions the turn took, on stderr (stdout holds the answer): ``[action] head pan=-30 ...``."""
    for action in state.get("actions") or []:
        eprint(f"[action] {action}")


def _request(text: str, args: argparse.Namespace, thread_id: str) -> Any:
    from naila_graph.turn import TurnRequest

    return TurnRequest(text=text, device_id=args.device, thread_id=thread_id)


async def _streamed_turn(
    model: Any, settings: Any, degraded_reason: str | None, text: str, args: argparse.Namespace, thread_id: str
) -> dict[str, Any]:
    """One turn with the answer streamed to stdout. Async, so Ctrl-C cancels the generation itself:
    asyncio.run turns SIGINT into cancelling this task, and the chat model stops at the next token."""
    from naila_graph.graph import build_graph
    from naila_graph.memory import open_async_checkpointer
    from naila_graph.turn import Cancelled, Failed, Final, Metrics, Token, TurnEvent, TurnRunner, consume
    from naila_graph.user_facts import open_async_store

    out = sys.stdout
    streamed = False
    final: dict[str, Any] = {}

    async def show(event: TurnEvent) -> None:
        nonlocal streamed, final
        if isinstance(event, Token):
            out.write(event.text)
            out.flush()
            streamed = True
        elif isinstance(event, Metrics):
            final = event.state  # the turn as stored, with the model's figures
        elif isinstance(event, Final):
            _show_actions(event.state)
            if not streamed:
                out.write(event.text)
            elif event.state.get("response_source") != "llm":
                out.write(f"\n{REPLACED_NOTICE} {event.text}")
            out.write("\n")
            out.flush()
        elif isinstance(event, Failed):
            raise CLIError(f"the answer failed: {type(event.error).__name__}: {event.error}") from event.error
        elif isinstance(event, Cancelled):  # Ctrl-C: the session goes on, as after a KeyboardInterrupt
            raise KeyboardInterrupt

    url = settings.resolved_memory_url()
    async with open_async_checkpointer(url) as saver, open_async_store(url) as store:
        graph: Any = build_graph(model, saver, settings=settings, degraded_reason=degraded_reason, store=store)
        runner = TurnRunner(graph, saver=saver)
        await consume(runner.start(_request(text, args, thread_id)), show)
        await runner.aclose()
    return final


def _interactive(
    model: Any, settings: Any, degraded_reason: str | None, args: argparse.Namespace, thread_id: str
) -> int:
    eprint("NAILA is listening. Ctrl-C stops an answer, Ctrl-D leaves.")
    while True:
        try:
            eprint("you> ", end="")
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            eprint("")
            continue
        if not line:  # Ctrl-D
            eprint("")
            return 0
        if not line.strip():
            continue
        try:
            sys.stdout.write("naila> ")
            result = asyncio.run(_streamed_turn(model, settings, degraded_reason, line, args, thread_id))
        except KeyboardInterrupt:
            sys.stdout.write("\n")
            eprint("[stopped]")
            continue
        if args.verbose:
            _report(result)


def _report(result: dict[str, Any]) -> None:
    metrics = result.get("metrics") or {}
    tps = metrics.get("tokens_per_second")
    eprint(
        f"[intent={result.get('intent')} ({result.get('intent_confidence', 0):.2f})"
        f" source={result.get('response_source')} fallback={result.get('fallback_reason')}"
        f" finish={result.get('finish_reason')}"
        f" tokens/s={f'{tps:.1f}' if tps else '-'}"
        f" ttft_ms={metrics.get('time_to_first_token_ms') and round(metrics['time_to_first_token_ms'])}]"
    )
