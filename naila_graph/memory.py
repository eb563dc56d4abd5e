"""Conversation memory = LangGraph checkpointers (SQLite by default, Postgres for shared servers).

Postgres goes through a connection pool that checks a connection before lending it (a restarted server or a
killed backend costs a reconnect, not a turn); the first connection is retried with backoff at startup, and
a failing read or write of a checkpoint is retried for a bounded time while :class:`MemoryHealth` says
memory is degraded. Errors name ``NAILA_MEMORY_URL`` (password masked) and what to check.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

from langgraph.checkpoint.base import BaseCheckpointSaver

logger = logging.getLogger("naila.memory")

T = TypeVar("T")

SETTING = "NAILA_MEMORY_URL"
CONNECT_TIMEOUT_SECONDS = 5  # one connection attempt (libpq connect_timeout)
POOL_MIN, POOL_MAX = 1, 2  # the saver serialises its queries; the second connection serves a probe or a prune
POOL_WAIT_SECONDS = 5.0  # how long a query waits for a pooled connection before it counts as a failed try
PROBE_WAIT_SECONDS = 2.0  # a health probe must not hold up a health report
_CHECK_HINT = (
    "Check that PostgreSQL is running and reachable at that host and port, and that the user, password and"
    " database in the URL are right (the database must exist); or unset {setting} to use the local SQLite file."
)


class MemoryConfigError(ValueError):
    """NAILA_MEMORY_URL is unusable."""


class MemoryUnavailableError(RuntimeError):
    """The memory database could not be reached (or written) within the retry budget; the message names
    ``NAILA_MEMORY_URL`` with its password masked and says what to check."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard memory tries: ``connect_attempts`` at startup (delays doubling from ``first_delay`` up to
    ``max_delay``), and for how long (``operation_seconds``) a failing checkpoint read or write is retried."""

    connect_attempts: int = 6  # pauses 0 + 1 + 2 + 4 + 8 s: a Postgres that starts with the server is waited for
    first_delay: float = 1.0
    max_delay: float = 8.0
    operation_seconds: float = 30.0  # outlasts a Postgres restart; a turn's write is lost only after this

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt ``attempt`` (1-based): none after the first (a dropped connection
        is replaced at once), then doubling from ``first_delay`` up to ``max_delay``."""
        return 0.0 if attempt <= 1 else float(min(self.first_delay * 2 ** (attempt - 2), self.max_delay))


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(connect_attempts=1, operation_seconds=0.0)  # interactive commands: fail at once


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


def _describe(exc: BaseException, url: str) -> str:
    """The error's text, one line, without the URL's password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = urlsplit(url).password
    text = text.replace(password, "***") if password else text
    return text if text.endswith((".", "?", "!")) else text + "."


def _transient_errors() -> tuple[type[BaseException], ...]:
    import psycopg

    return (psycopg.OperationalError,)  # lost connection, refused, shut down, pool timeout; not bad data


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


def _connect_failed(url: str, exc: BaseException, attempt: int, retry: RetryPolicy, started: float) -> float:
    """After a failed first connection: log and return the pause before the next attempt, or raise."""
    reason = _describe(exc, url)
    if attempt >= retry.connect_attempts:
        raise MemoryUnavailableError(
            f"cannot connect to the memory database {SETTING}={masked_url(url)}"
            f" ({attempt} attempt{'s' if attempt > 1 else ''} in {time.monotonic() - started:.0f} s): {reason} "
            + _CHECK_HINT.format(setting=SETTING)
        ) from exc
    delay = retry.delay(attempt)
    logger.warning(
        "memory: cannot connect to %s=%s (attempt %d of %d): %s Retrying in %.1f s",
        SETTING,
        masked_url(url),
        attempt,
        retry.connect_attempts,
        reason,
        delay,
    )
    return delay


def _wait_for_postgres(url: str, retry: RetryPolicy) -> None:
    """Return once the database accepts a connection (retried with backoff), else raise naming the setting."""
    import psycopg

    started = time.monotonic()
    for attempt in range(1, retry.connect_attempts + 1):
        try:
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
            return
        except psycopg.OperationalError as exc:
            time.sleep(_connect_failed(url, exc, attempt, retry, started))


async def _await_postgres(url: str, retry: RetryPolicy) -> None:
    """:func:`_wait_for_postgres` without blocking the event loop."""
    import psycopg

    started = time.monotonic()
    for attempt in range(1, retry.connect_attempts + 1):
        try:
            conn = await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg.OperationalError as exc:
            await asyncio.sleep(_connect_failed(url, exc, attempt, retry, started))
        else:
            await conn.close()
            return


def _pool_options(url: str) -> dict[str, Any]:
    """What both pools share: the saver's connection settings, and a check of each connection before it is
    lent (a connection the server dropped is replaced instead of failing the next query)."""
    from psycopg.rows import dict_row

    return {
        "conninfo": url,
        "kwargs": {
            "autocommit": True,
            "prepare_threshold": 0,
            "row_factory": dict_row,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        },
        "min_size": POOL_MIN,
        "max_size": POOL_MAX,
        "timeout": POOL_WAIT_SECONDS,
        "open": False,
        "name": "naila-memory",
    }


class _Retrying:
    """Retries a database call that failed for a transient reason (connection lost, refused, pool timeout)
    for ``retry.operation_seconds``, keeping ``health`` up to date; then raises :class:`MemoryUnavailableError`."""

    def __init__(self, url: str, health: MemoryHealth, retry: RetryPolicy) -> None:
        self.url = url
        self.health = health
        self.retry = retry

    def failed(self, what: str, exc: BaseException, attempt: int, started: float) -> float:
        """Record a failure; the pause before the next try, or raise when the budget is spent."""
        reason = _describe(exc, self.url)
        self.health.record_error(reason)
        delay = self.retry.delay(attempt)
        elapsed = time.monotonic() - started
        if elapsed + delay > self.retry.operation_seconds:
            self.health.failures += 1
            raise MemoryUnavailableError(
                f"could not {what} in the memory database {SETTING}={masked_url(self.url)}"
                f" ({attempt} tr{'ies' if attempt > 1 else 'y'} in {elapsed:.0f} s): {reason} "
                + _CHECK_HINT.format(setting=SETTING)
            ) from exc
        self.health.retries += 1
        logger.warning("memory: could not %s: %s Try %d in %.1f s", what, reason, attempt + 1, delay)
        return delay

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await call()
            except _transient_errors() as exc:
                await asyncio.sleep(self.failed(what, exc, attempt, started))
            else:
                self.health.record_ok()
                return result


def _thread(config: Any) -> str:
    return str(config.get("configurable", {}).get("thread_id", "?"))


@functools.cache
def _resilient_async_saver() -> type[Any]:
    """``AsyncPostgresSaver`` whose reads and writes of checkpoints are retried (built on first use: the
    Postgres extra is optional)."""
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    class ResilientAsyncPostgresSaver(AsyncPostgresSaver):
        def __init__(self, pool: Any, retrying: _Retrying) -> None:
            super().__init__(pool)
            self.retrying = retrying
            self.health = retrying.health

        async def aget_tuple(self, config: Any) -> Any:
            get = super().aget_tuple
            return await self.retrying.run(f"read the conversation {_thread(config)!r}", lambda: get(config))

        async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
            put = super().aput
            return await self.retrying.run(
                f"store the conversation {_thread(config)!r}", lambda: put(config, checkpoint, metadata, new_versions)
            )

        async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
            put_writes = super().aput_writes
            await self.retrying.run(
                f"store the pending writes of {_thread(config)!r}",
                lambda: put_writes(config, writes, task_id, task_path),
            )

    return ResilientAsyncPostgresSaver


def memory_health(saver: BaseCheckpointSaver) -> MemoryHealth:
    """The health of ``saver``'s database (always healthy for savers that do not track it, e.g. SQLite)."""
    health = getattr(saver, "health", None)
    return health if isinstance(health, MemoryHealth) else MemoryHealth()


async def acheck_memory(saver: BaseCheckpointSaver) -> MemoryHealth:
    """Ask the database whether it answers (for a periodic health report: an outage is seen, and its end,
    without a turn); records the result in and returns :func:`memory_health` of ``saver``."""
    health = memory_health(saver)
    retrying = getattr(saver, "retrying", None)
    if not isinstance(retrying, _Retrying):
        return health
    try:
        async with saver.conn.connection(timeout=PROBE_WAIT_SECONDS) as conn:  # type: ignore[attr-defined]
            await conn.execute("SELECT 1")
    except _transient_errors() as exc:
        health.record_error(_describe(exc, retrying.url))
    else:
        health.record_ok()
    return health


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
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg_pool import ConnectionPool

        url = _postgres_url(url)
        _wait_for_postgres(url, retry)
        with ConnectionPool(**_pool_options(url), check=ConnectionPool.check_connection) as pool:
            pg_saver = PostgresSaver(pool)
            pg_saver.setup()
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
        from psycopg_pool import AsyncConnectionPool

        url = _postgres_url(url)
        await _await_postgres(url, retry)
        async with AsyncConnectionPool(**_pool_options(url), check=AsyncConnectionPool.check_connection) as pool:
            pg_saver = _resilient_async_saver()(pool, _Retrying(url, health or MemoryHealth(), retry))
            await pg_saver.setup()
            yield pg_saver
    else:
        raise MemoryConfigError(f"{SETTING} must be sqlite:///path or postgresql://…, got {url!r}")


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


def _is_a(saver: BaseCheckpointSaver, class_name: str) -> bool:
    """isinstance without importing the optional Postgres extra."""
    return any(cls.__name__ == class_name for cls in type(saver).__mro__)


def prune_thread(saver: BaseCheckpointSaver, thread_id: str) -> int:
    """Drop every checkpoint of ``thread_id`` but the newest; returns the rows removed (0 for other savers)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    if isinstance(saver, SqliteSaver):
        with saver.lock:
            removed = sum(saver.conn.execute(sql, (thread_id,)).rowcount for sql in _SQLITE_PRUNE)
            saver.conn.commit()
        return removed
    if _is_a(saver, "PostgresSaver"):
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
    if _is_a(saver, "AsyncPostgresSaver"):
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
