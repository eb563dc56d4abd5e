"""``naila memory list | show | clear``: the stored conversations."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from naila_graph.cli.errors import AddCommon, CLIError, action, command_group, eprint, print_table


def register(sub: Any, common: AddCommon) -> None:
    actions = command_group(sub, common, "memory", "stored conversations: list, show, clear")
    action(actions, common, "list", "conversations with turn counts and last activity", cmd_memory_list)
    show = action(actions, common, "show", "one conversation's messages", cmd_memory_show)
    show.add_argument("id", help="device or conversation id")
    clear = action(actions, common, "clear", "forget one conversation", cmd_memory_clear)
    clear.add_argument("id", help="device or conversation id")


def _memory_url() -> str:
    from naila_graph.settings import NailaSettings

    return NailaSettings().resolved_memory_url()


@contextmanager
def _stored_memory() -> Iterator[Any]:
    """The checkpointer of NAILA_MEMORY_URL; an interactive command tries once and says what to check."""
    from naila_graph.memory import NO_RETRY, MemoryConfigError, MemoryUnavailableError, open_checkpointer

    try:
        with open_checkpointer(_memory_url(), retry=NO_RETRY) as saver:
            yield saver
    except (MemoryConfigError, MemoryUnavailableError) as exc:
        raise CLIError(str(exc)) from exc


def cmd_memory_list(args: argparse.Namespace) -> int:
    from naila_graph.memory import format_timestamp, list_conversations

    with _stored_memory() as saver:
        rows = [("ID", "TURNS", "LAST ACTIVITY")]
        for conv in list_conversations(saver):
            rows.append((conv.thread_id, str(conv.turns), format_timestamp(conv.last_activity)))
    if len(rows) == 1:
        eprint("no stored conversations")
        return 0
    print_table(rows)
    return 0


def cmd_memory_show(args: argparse.Namespace) -> int:
    from naila_graph.memory import conversation_messages

    with _stored_memory() as saver:
        messages = conversation_messages(saver, args.id)
    if not messages:
        raise CLIError(f"no stored conversation {args.id!r} (see `naila memory list`)")
    for message in messages:
        role = {"human": "user", "ai": "naila"}.get(message.type, message.type)
        print(f"{role}: {message.text}")
    return 0


def cmd_memory_clear(args: argparse.Namespace) -> int:
    from naila_graph.memory import clear_conversation

    with _stored_memory() as saver:
        existed = clear_conversation(saver, args.id)
    if not existed:
        raise CLIError(f"no stored conversation {args.id!r} (see `naila memory list`)")
    eprint(f"forgot conversation {args.id!r}")
    return 0
