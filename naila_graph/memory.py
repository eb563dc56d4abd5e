"""Conversation memory = LangGraph checkpointers (SQLite by default, Postgres for shared servers)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver


class MemoryConfigError(ValueError):
    """NAILA_MEMORY_URL is unusable."""


def _sqlite_path(url: str) -> Path:
    raw = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url.removeprefix("sqlite://")
    if not raw:
        raise MemoryConfigError(
            "NAILA_MEMORY_URL=sqlite:/// needs a file path, e.g. sqlite:////var/lib/naila/memory.sqlite"
        )
    path = Path(raw).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MemoryConfigError(f"cannot create the memory directory {path.parent}: {exc}") from exc
    return path


def _postgres_url(url: str) -> str:
    return "postgresql://" + url.removeprefix("postgres://") if url.startswith("postgres://") else url


def _require_postgres() -> None:
    try:
        import langgraph.checkpoint.postgres  # noqa: F401
    except ImportError as exc:
        raise MemoryConfigError(
            "NAILA_MEMORY_URL is a postgresql:// URL but the Postgres extra is missing;"
            " install it with: pip install 'naila-graph[postgres]'"
        ) from exc


# WAL + synchronous=NORMAL: a committed turn survives a crash of the process (not of the OS); halves the
# per-turn cost of memory compared with an fsync per commit (evals/bench_server.py).
_SQLITE_SYNC = "PRAGMA synchronous=NORMAL"


@contextmanager
def open_checkpointer(url: str) -> Iterator[BaseCheckpointSaver]:
    """A synchronous checkpointer for ``url`` (``sqlite:///path`` or ``postgresql://…``)."""
    if url.startswith("sqlite:"):
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(_sqlite_path(url), check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            saver.setup()  # switches the file to WAL
            conn.execute(_SQLITE_SYNC)
            yield saver
        finally:
            conn.close()
    elif url.startswith(("postgresql://", "postgres://")):
        _require_postgres()
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(_postgres_url(url)) as pg_saver:
            pg_saver.setup()
            yield pg_saver
    else:
        raise MemoryConfigError(f"NAILA_MEMORY_URL must be sqlite:///path or postgresql://…, got {url!r}")


@asynccontextmanager
async def open_async_checkpointer(url: str) -> AsyncIterator[BaseCheckpointSaver]:
    """The async flavour, for the server (no blocking database call on the event loop)."""
    if url.startswith("sqlite:"):
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with aiosqlite.connect(_sqlite_path(url)) as conn:
            async_saver = AsyncSqliteSaver(conn)
            await async_saver.setup()  # switches the file to WAL
            await conn.execute(_SQLITE_SYNC)
            yield async_saver
    elif url.startswith(("postgresql://", "postgres://")):
        _require_postgres()
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async with AsyncPostgresSaver.from_conn_string(_postgres_url(url)) as pg_saver:
            await pg_saver.setup()
            yield pg_saver
    else:
        raise MemoryConfigError(f"NAILA_MEMORY_URL must be sqlite:///path or postgresql://…, got {url!r}")


@dataclass(frozen=True)
class ConversationSummary:
    thread_id: str
    turns: int
    last_activity: str | None


def _summary(thread_id: str, checkpoint: Any) -> ConversationSummary:
    values = checkpoint.checkpoint.get("channel_values", {})
    messages = values.get("messages", []) or []
    turns = sum(1 for m in messages if getattr(m, "type", None) == "human")
    return ConversationSummary(thread_id, turns, checkpoint.checkpoint.get("ts"))


def list_conversations(saver: BaseCheckpointSaver) -> list[ConversationSummary]:
    """Every stored thread with its turn count and the time of its latest checkpoint."""
    latest: dict[str, Any] = {}
    for item in saver.list(None):
        thread = item.config["configurable"]["thread_id"]
        ts = item.checkpoint.get("ts", "")
        if thread not in latest or ts > latest[thread].checkpoint.get("ts", ""):
            latest[thread] = item
    summaries = [_summary(thread, item) for thread, item in latest.items()]
    return sorted(summaries, key=lambda s: s.last_activity or "", reverse=True)


def conversation_messages(saver: BaseCheckpointSaver, thread_id: str) -> list[Any]:
    item = saver.get_tuple({"configurable": {"thread_id": thread_id}})
    if item is None:
        return []
    return list(item.checkpoint.get("channel_values", {}).get("messages", []) or [])


def clear_conversation(saver: BaseCheckpointSaver, thread_id: str) -> bool:
    """Forget a thread; returns whether anything was stored."""
    existed = saver.get_tuple({"configurable": {"thread_id": thread_id}}) is not None
    saver.delete_thread(thread_id)
    return existed


def format_timestamp(ts: str | None) -> str:
    if not ts:
        return "-"
    try:
        return datetime.fromisoformat(ts).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return ts
