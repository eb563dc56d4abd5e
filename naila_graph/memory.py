"""Conversation memory = LangGraph checkpointers (SQLite by default, Postgres for shared servers).

What a Postgres outage does to memory (waiting, pooling, retrying) is :mod:`naila_graph.memory_postgres`,
imported only for a ``postgresql://`` URL; here: the policy (:class:`RetryPolicy`), what health reports
read (:class:`MemoryHealth`), and the stored conversations. Errors name ``NAILA_MEMORY_URL``, password masked.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from langgraph.checkpoint.base import BaseCheckpointSaver

logger = logging.getLogger("naila.memory")

SETTING = "NAILA_MEMORY_URL"


class MemoryConfigError(ValueError):
    """NAILA_MEMORY_URL is unusable."""


class MemoryUnavailableError(RuntimeError):
    """The memory database could not be reached (or written) within the retry budget; the message names
    ``NAILA_MEMORY_URL`` with its password masked and says what to check."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard memory tries: ``connect_attempts`` at startup (pauses doubling from ``first_delay`` up to
    ``max_delay``), and for how long a failing checkpoint write (``write_seconds``) or read
    (``read_seconds``) is retried."""

    connect_attempts: int = 6  # pauses 0 + 1 + 2 + 4 + 8 s: a Postgres that starts with the server is waited for
    first_delay: float = 1.0
    max_delay: float = 8.0
    write_seconds: float = 30.0  # outlasts a Postgres restart; a turn's write is lost only after this
    read_seconds: float = 5.0  # a turn's first read holds up its answer: a dropped connection, not an outage

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (1-based): none after the first (a dropped connection
        is replaced at once), then doubling from ``first_delay`` up to ``max_delay``."""
        return 0.0 if attempt <= 1 else float(min(self.first_delay * 2 ** (attempt - 2), self.max_delay))


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(connect_attempts=1, write_seconds=0.0, read_seconds=0.0)  # interactive: fail at once


@dataclass
class MemoryHealth:
    """Whether memory works right now. ``degraded`` from a failed database call until the next one that
    succeeds; ``last_error`` says why (no password). Read it for health reports (:meth:`as_dict`)."""

    degraded: bool = False
    last_error: str | None = None
    degraded_since: float | None = None  # time.time() of the first failure of the current outage
    retries: int = 0  # database calls retried since start
    failures: int = 0  # database calls given up (a turn not stored)

    def record_error(self, message: str) -> None:
        if not self.degraded:
            self.degraded_since = time.time()
        self.degraded = True
        self.last_error = message

    def record_ok(self) -> None:
        if self.degraded:
            logger.info("memory: the database answers again after %.1f s", time.time() - (self.degraded_since or 0))
        self.degraded = False
        self.degraded_since = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "degraded": self.degraded,
            "last_error": self.last_error,
            "degraded_seconds": round(time.time() - self.degraded_since, 1) if self.degraded_since else 0.0,
            "retries": self.retries,
            "failures": self.failures,
        }


def masked_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = parts.query
    if "password" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k == "password" else v) for k, v in pairs], safe="*")
    return parts._replace(netloc=netloc, query=query).geturl()


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


def memory_health(saver: BaseCheckpointSaver) -> MemoryHealth:
    """The health of ``saver``'s database (always healthy for savers that do not track it, e.g. SQLite)."""
    health = getattr(saver, "health", None)
    return health if isinstance(health, MemoryHealth) else MemoryHealth()


async def acheck_memory(saver: BaseCheckpointSaver) -> MemoryHealth:
    """Ask the database whether it answers (for a periodic health report: an outage is seen, and its end,
    without a turn); records the result in and returns :func:`memory_health` of ``saver``."""
    probe = getattr(saver, "aprobe", None)
    if probe is not None:
        await probe()
    return memory_health(saver)


@contextmanager
def open_checkpointer(url: str, *, retry: RetryPolicy = DEFAULT_RETRY) -> Iterator[BaseCheckpointSaver]:
    """A synchronous checkpointer for ``url`` (``sqlite:///path`` or ``postgresql://…``); a Postgres that does
    not answer is waited for as ``retry`` says, then :class:`MemoryUnavailableError`."""
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
        from naila_graph.memory_postgres import open_postgres

        with open_postgres(_postgres_url(url), retry) as pg_saver:
            yield pg_saver
    else:
        raise MemoryConfigError(f"{SETTING} must be sqlite:///path or postgresql://…, got {url!r}")


@asynccontextmanager
async def open_async_checkpointer(
    url: str, *, health: MemoryHealth | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> AsyncIterator[BaseCheckpointSaver]:
    """The async flavour, for the server (no blocking database call on the event loop). With Postgres,
    failing checkpoint reads and writes are retried as ``retry`` says and ``health`` (see
    :func:`memory_health`) follows the database's state."""
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
        from naila_graph.memory_postgres import aopen_postgres

        async with aopen_postgres(_postgres_url(url), health or MemoryHealth(), retry) as pg_saver:
            yield pg_saver
    else:
        raise MemoryConfigError(f"{SETTING} must be sqlite:///path or postgresql://…, got {url!r}")


# Keeping only a thread's newest checkpoint. NAILA never travels back in time: a turn reads the latest state
# and writes one new checkpoint (durability="exit"), and each checkpoint holds the whole conversation, so
# older ones are dead weight that grows with every turn. Postgres: langgraph-checkpoint-postgres's own
# ``prune(thread_ids, strategy="keep_latest")``, which prunes a thread in one transaction on one snapshot, so
# a turn of the same device that another replica is storing meanwhile is neither seen nor deleted (the
# hand-written DELETEs this replaces could remove the blobs of such a turn). SQLite (one process, the saver's
# lock held): these statements, written against the saver's schema; only checkpoints older than the newest
# are touched.
_SQLITE_PRUNE = (
    "DELETE FROM checkpoints WHERE thread_id = ?1 AND checkpoint_ns = '' AND checkpoint_id <"
    " (SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ?1 AND checkpoint_ns = '')",
    "DELETE FROM writes WHERE thread_id = ?1 AND checkpoint_ns = '' AND checkpoint_id <"
    " (SELECT MAX(checkpoint_id) FROM checkpoints WHERE thread_id = ?1 AND checkpoint_ns = '')",
)
_POSTGRES_COUNT = "SELECT count(*) AS n FROM checkpoints WHERE thread_id = %s"
PRUNE_ATTEMPTS = 3  # the library's prune fails when another transaction changes the thread meanwhile: retried


def _is_a(saver: BaseCheckpointSaver, class_name: str) -> bool:
    """isinstance without importing the optional Postgres extra."""
    return any(cls.__name__ == class_name for cls in type(saver).__mro__)


def _prune_conflict(exc: Exception) -> bool:
    """A prune that lost to another transaction on the same thread (retrying is safe)."""
    return type(exc).__name__ in ("SerializationFailure", "DeadlockDetected")


def _count(row: Any) -> int:
    return int(row["n"] if isinstance(row, dict) else row[0]) if row is not None else 0


def prune_thread(saver: BaseCheckpointSaver, thread_id: str) -> int:
    """Drop every checkpoint of ``thread_id`` but the newest; returns the checkpoints (SQLite: rows) removed
    (0 for other savers)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    if isinstance(saver, SqliteSaver):
        with saver.lock:
            removed = sum(saver.conn.execute(sql, (thread_id,)).rowcount for sql in _SQLITE_PRUNE)
            saver.conn.commit()
        return removed
    if _is_a(saver, "PostgresSaver"):
        with saver._cursor() as cur:  # type: ignore[attr-defined]
            before = _count(cur.execute(_POSTGRES_COUNT, (thread_id,)).fetchone())
        for attempt in range(1, PRUNE_ATTEMPTS + 1):
            try:
                saver.prune([thread_id], strategy="keep_latest")
                break
            except Exception as exc:
                if not _prune_conflict(exc) or attempt == PRUNE_ATTEMPTS:
                    raise
        with saver._cursor() as cur:  # type: ignore[attr-defined]
            return before - _count(cur.execute(_POSTGRES_COUNT, (thread_id,)).fetchone())
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
    if _is_a(saver, "AsyncPostgresSaver"):
        async with saver._cursor() as cur:  # type: ignore[attr-defined]
            await cur.execute(_POSTGRES_COUNT, (thread_id,))
            before = _count(await cur.fetchone())
        for attempt in range(1, PRUNE_ATTEMPTS + 1):
            try:
                await saver.aprune([thread_id], strategy="keep_latest")
                break
            except Exception as exc:
                if not _prune_conflict(exc) or attempt == PRUNE_ATTEMPTS:
                    raise
        async with saver._cursor() as cur:  # type: ignore[attr-defined]
            await cur.execute(_POSTGRES_COUNT, (thread_id,))
            return before - _count(await cur.fetchone())
    return 0


@dataclass(frozen=True)
class ConversationSummary:
    thread_id: str
    turns: int
    last_activity: str | None


def _messages(checkpoint: Any) -> list[Any]:
    return list(checkpoint.checkpoint.get("channel_values", {}).get("messages", []) or [])


def list_conversations(saver: BaseCheckpointSaver) -> list[ConversationSummary]:
    """Every stored conversation with its turn count and the time of its latest checkpoint. A thread whose
    latest checkpoint holds no message (e.g. only an empty input was answered) is no conversation: neither
    listed here nor shown by :func:`conversation_messages`."""
    latest: dict[str, Any] = {}
    for item in saver.list(None):
        thread = item.config["configurable"]["thread_id"]
        ts = item.checkpoint.get("ts", "")
        if thread not in latest or ts > latest[thread].checkpoint.get("ts", ""):
            latest[thread] = item
    summaries = [
        ConversationSummary(
            thread, sum(1 for m in messages if getattr(m, "type", None) == "human"), item.checkpoint.get("ts")
        )
        for thread, item in latest.items()
        if (messages := _messages(item))
    ]
    return sorted(summaries, key=lambda s: s.last_activity or "", reverse=True)


def conversation_messages(saver: BaseCheckpointSaver, thread_id: str) -> list[Any]:
    item = saver.get_tuple({"configurable": {"thread_id": thread_id}})
    return [] if item is None else _messages(item)


def clear_conversation(saver: BaseCheckpointSaver, thread_id: str) -> bool:
    """Forget a thread; returns whether it held a conversation (what :func:`list_conversations` lists)."""
    existed = bool(conversation_messages(saver, thread_id))
    saver.delete_thread(thread_id)
    return existed


def format_timestamp(ts: str | None) -> str:
    if not ts:
        return "-"
    try:
        return datetime.fromisoformat(ts).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return ts
