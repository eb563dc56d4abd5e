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
# per-turn cost of memory compared with an fsync per commit (evals/bench/server.py).
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


# Keeping only a thread's newest checkpoint. NAILA never travels back in time: a turn reads the latest state
# and writes one new checkpoint (durability="exit"), and each checkpoint holds the whole conversation, so
# older ones are dead weight that grows with every turn. LangGraph's savers have no prune of their own
# (BaseCheckpointSaver.prune is not implemented by the SQLite and Postgres savers), hence these statements,
# written against the savers' own schemas. Only checkpoints older than the newest are touched, so a turn
# that writes meanwhile is never affected.
_SQLITE_PRUNE = (
    "DELETE FROM checkpoints WHERE thread_id = ?1 AND checkpoint_ns = '' AND checkpoint_id <"
    " (SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ?1 AND checkpoint_ns = '')",
    "DELETE FROM writes WHERE thread_id = ?1 AND checkpoint_ns = '' AND checkpoint_id <"
    " (SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ?1 AND checkpoint_ns = '')",
)
_POSTGRES_PRUNE = (
    "DELETE FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns = '' AND checkpoint_id <"
    " (SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns = '')",
    "DELETE FROM checkpoint_writes WHERE thread_id = %(t)s AND checkpoint_ns = '' AND checkpoint_id <"
    " (SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = %(t)s AND checkpoint_ns = '')",
    # channel values live in blobs keyed by version; keep those the remaining checkpoints point to
    "DELETE FROM checkpoint_blobs b WHERE b.thread_id = %(t)s AND b.checkpoint_ns = '' AND NOT EXISTS"
    " (SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns"
    " AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)",
)


def prune_thread(saver: BaseCheckpointSaver, thread_id: str) -> int:
    """Drop every checkpoint of ``thread_id`` but the newest; returns the rows removed (0 for other savers)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    if isinstance(saver, SqliteSaver):
        with saver.lock:
            removed = sum(saver.conn.execute(sql, (thread_id,)).rowcount for sql in _SQLITE_PRUNE)
            saver.conn.commit()
        return removed
    if type(saver).__name__ == "PostgresSaver":
        with saver._cursor() as cur:  # type: ignore[attr-defined]
            removed = 0
            for sql in _POSTGRES_PRUNE:
                cur.execute(sql, {"t": thread_id})
                removed += max(cur.rowcount, 0)
        return removed
    return 0


async def aprune_thread(saver: BaseCheckpointSaver, thread_id: str) -> int:
    """:func:`prune_thread` for the async savers (the server runs it after each answered turn)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    if isinstance(saver, AsyncSqliteSaver):
        async with saver.lock:
            removed = 0
            for sql in _SQLITE_PRUNE:
                cursor = await saver.conn.execute(sql, (thread_id,))
                removed += max(cursor.rowcount, 0)
            await saver.conn.commit()
        return removed
    if type(saver).__name__ == "AsyncPostgresSaver":
        async with saver._cursor() as cur:  # type: ignore[attr-defined]
            removed = 0
            for sql in _POSTGRES_PRUNE:
                await cur.execute(sql, {"t": thread_id})
                removed += max(cur.rowcount, 0)
        return removed
    return 0


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
