"""Memory when PostgreSQL is wrong or goes away (issue #12 defect 7): the error names NAILA_MEMORY_URL, the
first connection is waited for, a dropped connection is replaced, a write during an outage is retried until
the turn is stored, and MemoryHealth says memory is degraded while it is.

Outages are real: the database's backends are terminated and, for an outage that lasts, the database stops
accepting connections (``ALLOW_CONNECTIONS false``) until the test lets it come back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from psycopg import sql

from naila_graph.graph import build_graph
from naila_graph.memory import (
    MemoryHealth,
    MemoryUnavailableError,
    RetryPolicy,
    acheck_memory,
    conversation_messages,
    masked_url,
    open_async_checkpointer,
    open_checkpointer,
)
from tests.integration.test_memory_postgres import aturn, fake, pairs, pg_url, turn  # noqa: F401
from tests.support.postgres import SERVER_URL

WRONG_URL = "postgresql://naila:s3cret@127.0.0.1:1/naila"  # nothing listens on port 1
FAST = RetryPolicy(connect_attempts=2, first_delay=0.05, max_delay=0.05)
WAIT_SECONDS = 30.0  # an outage in these tests ends well within this


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(SERVER_URL, autocommit=True, connect_timeout=5)


def _name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def terminate_backends(url: str) -> int:
    """Kill every connection to ``url``'s database, as a Postgres restart does; the number killed."""
    with _admin() as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (_name(url),),
        ).fetchall()
    return len(rows)


def allow_connections(url: str, allowed: bool) -> None:
    """Let the database accept connections again, or refuse them (and drop the present ones): an outage."""
    with _admin() as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(_name(url)), sql.Literal(allowed))
        )
    if not allowed:
        terminate_backends(url)


@pytest.fixture
def later_db() -> Iterator[str]:
    """The URL of a database that does not exist yet (dropped after the test if it was created)."""
    try:
        _admin().close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL server unreachable at {SERVER_URL}: {exc}")
    name = f"naila_test_{uuid.uuid4().hex[:16]}"
    try:
        yield urlsplit(SERVER_URL)._replace(path=f"/{name}").geturl()
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


async def test_a_wrong_url_names_the_setting_masks_the_password_and_says_what_to_check(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="naila.memory")
    with pytest.raises(MemoryUnavailableError) as failure:
        async with open_async_checkpointer(WRONG_URL, retry=FAST):
            pass
    message = str(failure.value)
    assert "NAILA_MEMORY_URL=postgresql://naila:***@127.0.0.1:1/naila" in message
    assert "(2 attempts" in message and "Connection refused" in message
    assert "Check that PostgreSQL is running" in message
    assert "s3cret" not in message + caplog.text
    assert "attempt 1 of 2" in caplog.text  # the retry is logged, naming the setting too
    assert "NAILA_MEMORY_URL=postgresql://naila:***@" in caplog.text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://naila:s3cret@db:5432/naila", "postgresql://naila:***@db:5432/naila"),
        (
            "postgresql://naila@db/naila?password=s3cret&sslmode=require",
            "postgresql://naila@db/naila?password=***&sslmode=require",
        ),
        ("postgresql://db/naila", "postgresql://db/naila"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_a_wrong_url_of_the_synchronous_checkpointer_names_the_setting_too() -> None:
    with pytest.raises(MemoryUnavailableError, match=r"NAILA_MEMORY_URL=postgresql://naila:\*\*\*@127\.0\.0\.1:1"):
        with open_checkpointer(WRONG_URL, retry=FAST):
            pass


async def test_startup_waits_for_a_database_that_comes_up(later_db: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="naila.memory")

    def create_it() -> None:
        time.sleep(1.0)
        with _admin() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_name(later_db))))

    creator = threading.Thread(target=create_it)
    creator.start()
    try:
        retry = RetryPolicy(connect_attempts=8, first_delay=0.25, max_delay=1.0)
        async with open_async_checkpointer(later_db, retry=retry) as saver:
            graph = build_graph(fake("Hello!"), saver)
            assert (await aturn(graph, "Hi"))["response_text"] == "Hello!"
    finally:
        creator.join()
    assert "cannot connect to NAILA_MEMORY_URL" in caplog.text and "does not exist" in caplog.text


async def test_the_pool_replaces_connections_the_server_dropped(pg_url: str) -> None:  # noqa: F811
    health = MemoryHealth()
    async with open_async_checkpointer(pg_url, health=health) as saver:
        graph = build_graph(fake("Hi Alex!", "Stars are suns."), saver)
        await aturn(graph, "My name is Alex.")
        assert terminate_backends(pg_url) >= 1
        second = await aturn(graph, "Tell me about stars")
        assert second["metrics"]["history_messages"] == 2  # turn 1 was read back through a new connection
    with open_checkpointer(pg_url) as sync_saver:
        assert len(conversation_messages(sync_saver, "robot1")) == 4
    assert not health.degraded


def test_the_synchronous_checkpointer_replaces_dropped_connections_too(pg_url: str) -> None:  # noqa: F811
    with open_checkpointer(pg_url) as saver:
        graph = build_graph(fake("Hi Alex!", "Stars are suns."), saver)
        turn(graph, "My name is Alex.")
        assert terminate_backends(pg_url) >= 1
        assert turn(graph, "Tell me about stars")["metrics"]["history_messages"] == 2
        assert len(conversation_messages(saver, "robot1")) == 4


class GatedModel(GenericFakeChatModel):
    """Answers only once the test opens ``gate`` (sets ``entered`` when asked): the outage can start while
    the turn is in the model, so it hits the checkpoint write at the turn's end."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        _ENTERED.set()
        _GATE.wait(WAIT_SECONDS)
        return super()._generate(*args, **kwargs)

    def _stream(self, *args: Any, **kwargs: Any) -> Any:
        _ENTERED.set()
        _GATE.wait(WAIT_SECONDS)
        yield from super()._stream(*args, **kwargs)


_ENTERED, _GATE = threading.Event(), threading.Event()


async def _until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_write_during_an_outage_is_retried_and_the_turn_is_stored(
    pg_url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="naila.memory")
    _ENTERED.clear()
    _GATE.clear()
    health = MemoryHealth()
    try:
        async with open_async_checkpointer(pg_url, health=health) as saver:
            graph = build_graph(GatedModel(messages=iter([AIMessage("Hello Alex!")])), saver)
            running = asyncio.create_task(aturn(graph, "My name is Alex."))
            await _until(_ENTERED.is_set, "the model to be asked")
            allow_connections(pg_url, False)  # the outage starts while the model answers
            _GATE.set()
            await _until(lambda: health.degraded or running.done(), "memory to report the outage")
            assert not running.done(), running.exception()  # the turn waits for memory instead of failing
            assert health.last_error
            allow_connections(pg_url, True)
            result = await asyncio.wait_for(running, WAIT_SECONDS)
        assert result["response_text"] == "Hello Alex!"
        assert not health.degraded and health.retries >= 1 and health.failures == 0
        assert "could not store the conversation 'robot1'" in caplog.text  # the write itself was retried
        with open_checkpointer(pg_url) as sync_saver:
            assert pairs(conversation_messages(sync_saver, "robot1")) == [
                ("human", "My name is Alex."),
                ("ai", "Hello Alex!"),
            ]
    finally:
        _GATE.set()
        allow_connections(pg_url, True)


@pytest.mark.slow
async def test_memory_unreachable_past_the_retry_budget_fails_the_turn_naming_the_setting(pg_url: str) -> None:  # noqa: F811
    health = MemoryHealth()
    impatient = RetryPolicy(write_seconds=1.0, read_seconds=1.0)
    try:
        async with open_async_checkpointer(pg_url, health=health, retry=impatient) as saver:
            graph = build_graph(fake("Hello!"), saver)
            allow_connections(pg_url, False)
            with pytest.raises(MemoryUnavailableError, match="NAILA_MEMORY_URL=postgresql://"):
                await aturn(graph, "Hi")
        assert health.degraded and health.failures == 1
    finally:
        allow_connections(pg_url, True)


@pytest.mark.slow
async def test_the_health_probe_sees_an_outage_and_its_end_without_a_turn(pg_url: str) -> None:  # noqa: F811
    try:
        async with open_async_checkpointer(pg_url) as saver:
            assert not (await acheck_memory(saver)).degraded
            allow_connections(pg_url, False)
            health = await acheck_memory(saver)
            assert health.degraded and health.last_error
            assert health.as_dict()["degraded"] is True
            allow_connections(pg_url, True)
            deadline = time.monotonic() + WAIT_SECONDS
            while (await acheck_memory(saver)).degraded:
                assert time.monotonic() < deadline, "the probe never saw the database back"
                await asyncio.sleep(0.2)
            assert health.as_dict()["degraded"] is False and health.as_dict()["degraded_seconds"] == 0.0
    finally:
        allow_connections(pg_url, True)
