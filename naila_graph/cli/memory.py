"""``naila memory list | show | clear``: the stored conversations."""

from __future__ import annotations

import argparse
from typing import Any

from naila_graph.cli.errors import AddCommon, CLIError, eprint, print_table


def register(sub: Any, common: AddCommon) -> None:
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
    print_table(rows)
    return 0


def cmd_memory_show(args: argparse.Namespace) -> int:
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
    from naila_graph.memory import clear_conversation, open_checkpointer

    with open_checkpointer(_memory_url()) as saver:
        existed = clear_conversation(saver, args.id)
    if not existed:
        raise CLIError(f"no stored conversation {args.id!r} (see `naila memory list`)")
    eprint(f"forgot conversation {args.id!r}")
    return 0
