"""``naila memory list | show | clear | facts | forget``: the stored conversations and the facts about the
person kept per device (naila_graph/user_facts.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from naila_graph.cli.errors import AddCommon, CLIError, action, command_group, eprint, print_table


def register(sub: Any, common: AddCommon) -> None:
    actions = command_group(sub, common, "memory", "stored conversations and facts: list, show, clear, facts, forget")
    action(actions, common, "list", "conversations with turn counts and last activity", cmd_memory_list)
    show = action(actions, common, "show", "one conversation's messages and its device's facts", cmd_memory_show)
    show.add_argument("id", help="device or conversation id")
    clear = action(actions, common, "clear", "forget one conversation (its device's facts stay)", cmd_memory_clear)
    clear.add_argument("id", help="device or conversation id")
    facts = action(actions, common, "facts", "facts about the person: per device, or one device's", cmd_memory_facts)
    facts.add_argument("device", nargs="?", help="device id (omitted: every device with facts)")
    forget = action(actions, common, "forget", "forget a device: its conversation and its facts", cmd_memory_forget)
    forget.add_argument("device", help="device id")


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


@contextmanager
def _stored_facts() -> Iterator[Any]:
    """The facts of NAILA_MEMORY_URL (:class:`~naila_graph.user_facts.UserFacts`); an unusable store is said."""
    from naila_graph.memory import MemoryConfigError, masked_url
    from naila_graph.settings import NailaSettings
    from naila_graph.user_facts import UserFacts, open_store

    url = _memory_url()
    try:
        with open_store(url) as store:
            yield UserFacts(store, max_facts=NailaSettings().max_user_facts)
    except MemoryConfigError as exc:
        raise CLIError(str(exc)) from exc
    except Exception as exc:  # sqlite3.Error, psycopg.OperationalError: the database cannot be used
        if isinstance(exc, CLIError):
            raise
        reason = " ".join(str(exc).split())  # psycopg's messages span lines
        raise CLIError(f"cannot read the facts in NAILA_MEMORY_URL={masked_url(url)}: {reason}") from exc


def _print_facts(facts: list[Any]) -> None:
    from naila_graph.memory import format_timestamp

    rows = [("KEY", "FACT", "TOLD", "SOURCE")]
    for stored in facts:
        told = datetime.fromtimestamp(stored.told, UTC).isoformat()
        rows.append((stored.fact.key, stored.fact.sentence(), format_timestamp(told), stored.source))
    print_table(rows)


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
    with _stored_facts() as user_facts:
        facts = user_facts.facts(args.id)
    if not messages and not facts:
        raise CLIError(
            f"no stored conversation {args.id!r} and no facts about its person"
            " (see `naila memory list`, `naila memory facts`)"
        )
    for message in messages:
        role = {"human": "user", "ai": "naila", "tool": "result"}.get(message.type, message.type)
        for call in getattr(message, "tool_calls", None) or []:  # a robot action NAILA took
            print(f"{role}: [call] {call['name']} {json.dumps(call['args'], ensure_ascii=False)}")
        if message.text or not getattr(message, "tool_calls", None):
            print(f"{role}: {message.text}")
    if facts:
        print(f"\nfacts about the person of device {args.id!r}:")
        _print_facts(facts)
    return 0


def cmd_memory_facts(args: argparse.Namespace) -> int:
    with _stored_facts() as user_facts:
        if args.device is None:
            rows = [("DEVICE", "FACTS")] + [(device, str(n)) for device, n in user_facts.devices()]
            if len(rows) == 1:
                eprint("no stored facts")
                return 0
            print_table(rows)
            return 0
        facts = user_facts.facts(args.device)
    if not facts:
        eprint(f"no stored facts for device {args.device!r}")
        return 0
    _print_facts(facts)
    return 0


def cmd_memory_forget(args: argparse.Namespace) -> int:
    """The device's conversation (thread = device id) and every fact about its person."""
    from naila_graph.memory import clear_conversation

    with _stored_memory() as saver:
        had_conversation = clear_conversation(saver, args.device)
    with _stored_facts() as user_facts:
        facts = user_facts.forget(args.device)
    if not had_conversation and not facts:
        raise CLIError(f"nothing stored for device {args.device!r} (see `naila memory list`, `naila memory facts`)")
    eprint(
        f"forgot device {args.device!r}: {'its conversation and ' if had_conversation else ''}"
        f"{facts} fact{'' if facts == 1 else 's'}"
    )
    return 0


def cmd_memory_clear(args: argparse.Namespace) -> int:
    from naila_graph.memory import clear_conversation

    with _stored_memory() as saver:
        existed = clear_conversation(saver, args.id)
    if not existed:
        raise CLIError(f"no stored conversation {args.id!r} (see `naila memory list`)")
    eprint(f"forgot conversation {args.id!r}")
    return 0
