"""Postgres memory that outlasts a Postgres restart (imported only for a ``postgresql://`` NAILA_MEMORY_URL).

The first connection is waited for with backoff; a pool checks each connection before lending it (a killed
backend costs a reconnect, not a turn); a checkpoint read or write that fails for a transient reason is
retried for a bounded time, and :class:`~naila_graph.memory.MemoryHealth` says memory is degraded meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from naila_graph.memory import SETTING, MemoryHealth, MemoryUnavailableError, RetryPolicy, masked_url

logger = logging.getLogger("naila.memory")

T = TypeVar("T")

CONNECT_TIMEOUT_SECONDS = 5  # one connection attempt (libpq connect_timeout)
POOL_MIN, POOL_MAX = 1, 2  # the saver serialises its queries; the second connection serves a health probe
POOL_WAIT_SECONDS = 5.0  # how long a query waits for a pooled connection before it counts as a failed try
PROBE_WAIT_SECONDS = 2.0  # a health probe must not hold up a health report
TRANSIENT = (psycopg.OperationalError,)  # lost, refused, shut down, pool timeout; not bad data (DataError)
CHECK_HINT = (
    f"Check that PostgreSQL is running and reachable at that host and port, and that the user, password and"
    f" database in the URL are right (the database must exist); or unset {SETTING} to use the local SQLite file."
)


def describe(exc: BaseException, url: str) -> str:
    """The error's text as one sentence, without the URL's password."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = urlsplit(url).password
    text = text.replace(password, "***") if password else text
    return text if text.endswith((".", "?", "!")) else text + "."


def _connect_failed(url: str, exc: BaseException, attempt: int, retry: RetryPolicy, started: float) -> float:
    """After a failed first connection: log and return the pause before the next attempt, or raise."""
    reason = describe(exc, url)
    if attempt >= retry.connect_attempts:
        raise MemoryUnavailableError(
            f"cannot connect to the memory database {SETTING}={masked_url(url)}"
            f" ({attempt} attempt{'s' if attempt > 1 else ''} in {time.monotonic() - started:.0f} s):"
            f" {reason} {CHECK_HINT}"
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


def wait_for_postgres(url: str, retry: RetryPolicy) -> None:
    """Return once the database accepts a connection (retried with backoff), else raise naming the setting."""
    started = time.monotonic()
    for attempt in range(1, retry.connect_attempts + 1):
        try:
            psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
            return
        except TRANSIENT as exc:
            time.sleep(_connect_failed(url, exc, attempt, retry, started))


async def await_postgres(url: str, retry: RetryPolicy) -> None:
    """:func:`wait_for_postgres` without blocking the event loop."""
    started = time.monotonic()
    for attempt in range(1, retry.connect_attempts + 1):
        try:
            conn = await psycopg.AsyncConnection.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        except TRANSIENT as exc:
            await asyncio.sleep(_connect_failed(url, exc, attempt, retry, started))
        else:
            await conn.close()
            return


def _pool_options(url: str) -> dict[str, Any]:
    """What both pools share: the savers' own connection settings, the pool's size and wait, not opened yet."""
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


class Retrying:
    """Retries a database call that failed for a transient reason for a bounded time (first at once, then
    with backoff), keeping ``health`` up to date; then raises :class:`MemoryUnavailableError`."""

    def __init__(self, url: str, health: MemoryHealth, retry: RetryPolicy) -> None:
        self.url = url
        self.health = health
        self.retry = retry

    def failed(self, what: str, exc: BaseException, attempt: int, started: float, budget: float) -> float:
        """Record a failure; the pause before the next try, or raise when the budget is spent."""
        reason = describe(exc, self.url)
        self.health.record_error(reason)
        delay = self.retry.delay(attempt)
        elapsed = time.monotonic() - started
        if elapsed + delay > budget:
            self.health.failures += 1
            raise MemoryUnavailableError(
                f"could not {what} in the memory database {SETTING}={masked_url(self.url)}"
                f" ({attempt} tr{'ies' if attempt > 1 else 'y'} in {elapsed:.0f} s): {reason} {CHECK_HINT}"
            ) from exc
        self.health.retries += 1
        logger.warning("memory: could not %s: %s Try %d in %.1f s", what, reason, attempt + 1, delay)
        return delay

    async def run(self, what: str, call: Callable[[], Awaitable[T]], budget: float) -> T:
        """``call()``, retried for ``budget`` seconds."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await call()
            except TRANSIENT as exc:
                await asyncio.sleep(self.failed(what, exc, attempt, started, budget))
            else:
                self.health.record_ok()
                return result


def _thread(config: Any) -> str:
    return repr(config.get("configurable", {}).get("thread_id", "?"))


class ResilientAsyncPostgresSaver(AsyncPostgresSaver):
    """``AsyncPostgresSaver`` over a pool whose checkpoint reads and writes are retried (all are idempotent:
    the writes are upserts), so a turn finished during a short outage is stored, not dropped."""

    def __init__(self, pool: AsyncConnectionPool[Any], retrying: Retrying) -> None:
        super().__init__(pool)
        self.pool = pool
        self.retrying = retrying
        self.health = retrying.health

    async def aget_tuple(self, config: Any) -> Any:
        get = super().aget_tuple
        what = f"read the conversation {_thread(config)}"
        return await self.retrying.run(what, lambda: get(config), self.retrying.retry.read_seconds)

    async def aput(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        put = super().aput
        return await self.retrying.run(
            f"store the conversation {_thread(config)}",
            lambda: put(config, checkpoint, metadata, new_versions),
            self.retrying.retry.write_seconds,
        )

    async def aput_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
        put_writes = super().aput_writes
        await self.retrying.run(
            f"store the pending writes of {_thread(config)}",
            lambda: put_writes(config, writes, task_id, task_path),
            self.retrying.retry.write_seconds,
        )

    async def aprobe(self) -> None:
        """One ``SELECT 1`` outside the saver's lock, not retried: records whether the database answers."""
        try:
            async with self.pool.connection(timeout=PROBE_WAIT_SECONDS) as conn:
                await conn.execute("SELECT 1")
        except TRANSIENT as exc:
            self.health.record_error(describe(exc, self.retrying.url))
        else:
            self.health.record_ok()


SETUP_LOCK = 7_362_000  # advisory lock held while the tables are created or migrated
SETUP_POLL_SECONDS = 0.05


@asynccontextmanager
async def setup_lock(url: str) -> AsyncIterator[None]:
    """Held while a saver or store creates its tables: the savers' migrations are not safe to run from two
    processes at once (replicas starting together: duplicate key in ``checkpoint_migrations``)."""
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
    ) as conn:
        # Tried, not waited for in pg_advisory_lock: a waiting statement is an open transaction, which the
        # store's CREATE INDEX CONCURRENTLY in the holder's migration would wait for in turn (a deadlock).
        while True:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", (SETUP_LOCK,))).fetchone()
            if row is not None and row[0]:
                break
            await asyncio.sleep(SETUP_POLL_SECONDS)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))


@contextmanager
def open_postgres(url: str, retry: RetryPolicy) -> Iterator[PostgresSaver]:
    """A synchronous saver over a checked pool, once the database answers (for the CLI)."""
    wait_for_postgres(url, retry)
    with ConnectionPool(**_pool_options(url), check=ConnectionPool.check_connection) as pool:
        saver = PostgresSaver(pool)
        saver.setup()
        yield saver


@asynccontextmanager
async def aopen_postgres(url: str, health: MemoryHealth, retry: RetryPolicy) -> AsyncIterator[AsyncPostgresSaver]:
    """A :class:`ResilientAsyncPostgresSaver` over a checked pool, once the database answers (the server)."""
    await await_postgres(url, retry)
    async with AsyncConnectionPool(**_pool_options(url), check=AsyncConnectionPool.check_connection) as pool:
        saver = ResilientAsyncPostgresSaver(pool, Retrying(url, health, retry))
        async with setup_lock(url):
            await saver.setup()
        yield saver
