"""Handlers of the ``naila`` sub-commands (wired by :mod:`naila_graph.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

AddCommon = Callable[[argparse.ArgumentParser], None]


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

    from naila_graph import mqtt_cli

    mqtt_cli.register(sub, common)
    from evals import cli as eval_cli

    eval_cli.register(sub, common)

    models = sub.add_parser("models", help="model bundles: list, fetch, path")
    common(models)
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    mlist = msub.add_parser("list", help="known bundles")
    common(mlist)
    mlist.set_defaults(handler=cmd_models_list)
    mfetch = msub.add_parser("fetch", help="download, assemble and verify a bundle; prints its path")
    common(mfetch)
    mfetch.add_argument("name")
    mfetch.set_defaults(handler=cmd_models_fetch)
    mpath = msub.add_parser("path", help="print the path of a fetched bundle")
    common(mpath)
    mpath.add_argument("name")
    mpath.set_defaults(handler=cmd_models_path)

    memory = sub.add_parser("memory", help="stored conversations: list, show, clear")
    common(memory)
    memsub = memory.add_subparsers(dest="memory_command", metavar="ACTION")
    memsub.required = True
    memlist = memsub.add_parser("list", help="conversations with turn counts and last activity")
    common(memlist)
    memlist.set_defaults(handler=cmd_memory_list)
    memshow = memsub.add_parser("show", help="one conversation's messages")
    common(memshow)
    memshow.add_argument("id", help="device or conversation id")
    memshow.set_defaults(handler=cmd_memory_show)
    memclear = memsub.add_parser("clear", help="forget one conversation")
    common(memclear)
    memclear.add_argument("id", help="device or conversation id")
    memclear.set_defaults(handler=cmd_memory_clear)

    bench = sub.add_parser(
        "bench",
        help="the performance suite: ours vs raw, interleaved devices, graph+MQTT, leak check,"
        " bandwidth ceiling, knob sweep; one table on stdout",
    )
    common(bench)
    from evals.bench_suite import add_arguments as add_bench_arguments

    add_bench_arguments(bench)
    bench.set_defaults(handler=cmd_bench)

    config = sub.add_parser("config", help="settings")
    common(config)
    csub = config.add_subparsers(dest="config_command", metavar="ACTION")
    csub.required = True
    cshow = csub.add_parser("show", help="print the effective settings (secrets masked)")
    common(cshow)
    cshow.set_defaults(handler=cmd_config_show)


# ---------------------------------------------------------------- models


def cmd_models_list(args: argparse.Namespace) -> int:
    from llm.bundles import BUNDLES, bundle_path, is_fetched

    rows = [("NAME", "SIZE", "FETCHED", "DEFAULT", "PATH")]
    for name, bundle in BUNDLES.items():
        rows.append(
            (
                name,
                f"{bundle.size_bytes / 1e6:,.0f} MB",
                "yes" if is_fetched(name) else "no",
                "yes" if bundle.default else "",
                str(bundle_path(name)),
            )
        )
    _print_table(rows)
    return 0


def cmd_models_fetch(args: argparse.Namespace) -> int:
    from llm.bundles import fetch_bundle

    print(fetch_bundle(args.name, progress=True))
    return 0


def cmd_models_path(args: argparse.Namespace) -> int:
    from llm.bundles import bundle_path, get_bundle, is_fetched
    from naila_graph.cli import CLIError

    get_bundle(args.name)
    if not is_fetched(args.name):
        raise CLIError(f"bundle {args.name!r} is not fetched yet; run `naila models fetch {args.name}`")
    print(bundle_path(args.name))
    return 0


# ---------------------------------------------------------------- memory


def _memory_url() -> str:
    from naila_graph.settings import NailaSettings

    return NailaSettings().resolved_memory_url()


def cmd_memory_list(args: argparse.Namespace) -> int:
    from naila_graph.memory import format_timestamp, list_conversations, open_checkpointer

    with open_checkpointer(_memory_url()) as saver:
        rows = [("ID", "TURNS", "LAST ACTIVITY")]
        for conv in list_conversations(saver):
            rows.append((conv.thread_id, str(conv.turns), format_timestamp(conv.last_activity)))
    if len(rows) == 1:
        eprint("no stored conversations")
        return 0
    _print_table(rows)
    return 0


def cmd_memory_show(args: argparse.Namespace) -> int:
    from naila_graph.cli import CLIError
    from naila_graph.memory import conversation_messages, open_checkpointer

    with open_checkpointer(_memory_url()) as saver:
        messages = conversation_messages(saver, args.id)
    if not messages:
        raise CLIError(f"no stored conversation {args.id!r} (see `naila memory list`)")
    for message in messages:
        role = {"human": "user", "ai": "naila"}.get(message.type, message.type)
        print(f"{role}: {message.text}")
    return 0


def cmd_memory_clear(args: argparse.Namespace) -> int:
    from naila_graph.cli import CLIError
    from naila_graph.memory import clear_conversation, open_checkpointer

    with open_checkpointer(_memory_url()) as saver:
        existed = clear_conversation(saver, args.id)
    if not existed:
        raise CLIError(f"no stored conversation {args.id!r} (see `naila memory list`)")
    eprint(f"forgot conversation {args.id!r}")
    return 0


# ---------------------------------------------------------------- config


_SECRET_WORDS = ("PASSWORD", "API_KEY", "SECRET", "TOKEN")


def cmd_config_show(args: argparse.Namespace) -> int:
    from llm.settings import LLMSettings

    values: dict[str, Any] = {}
    for name, value in LLMSettings().model_dump().items():
        values[f"LLM_{name.upper()}"] = value
    extra = _other_settings()
    values.update(extra)
    for key in sorted(os.environ):
        if key.startswith(("LANGSMITH_", "LANGCHAIN_")):
            values[key] = os.environ[key]
    for key, value in values.items():
        if any(word in key for word in _SECRET_WORDS) and value:
            values[key] = "********"
    print(json.dumps(values, indent=2, default=str))
    return 0


def _other_settings() -> dict[str, Any]:
    try:
        from naila_graph.settings import settings_as_env
    except ImportError:
        return {}
    return settings_as_env()


# ---------------------------------------------------------------- bench


def cmd_bench(args: argparse.Namespace) -> int:
    from evals.bench_suite import run_from_args

    return run_from_args(args)


# ---------------------------------------------------------------- chat


def cmd_chat(args: argparse.Namespace) -> int:
    from naila_graph.chat import run_chat

    return run_chat(args)


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def eprint(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)
