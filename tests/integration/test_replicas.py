"""Several ``naila serve`` replicas, one mosquitto, one PostgreSQL (issue #15 §2–§3; naila_graph/replicas.py).

Real parts throughout: a mosquitto of the test's own, a fresh database on the machine's PostgreSQL per test,
the tiny GGUF. Replicas that are killed (``kill -9``) are ``naila serve`` processes; the others run in this
process. Every request is answered once, each device's answers come in the order it sent them, the memory
holds every turn in order, and a dead replica's requests are taken over within 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from llm import ChatLlamaCpp
from naila_graph import protocol as p
from naila_graph.memory import conversation_messages, open_checkpointer
from naila_graph.pg_queue import QueueDatabase, digest
from naila_graph.replicas import ReplicaConflict
from naila_graph.server import NailaServer
from naila_graph.settings import MQTTSettings, NailaSettings
from tests.e2e.test_cli import naila
from tests.e2e.test_serve_cli import _start_server, _wait_ready
from tests.support.mqtt import Robot, robot
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.broker

# Generous queue limits: a burst of 100 requests must wait, not be refused overloaded.
LIMITS = {"queue_limit": 1000, "queue_per_device": 100}


@pytest.fixture
def queue_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _model(path: str, max_tokens: int = 8) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=path, n_ctx=2048, max_tokens=max_tokens, temperature=0.0, seed=1).load()


@contextlib.asynccontextmanager
async def replica(
    broker: Any, url: str, tmp_path: Path, model: Any, name: str, *, workers: int = 2, **overrides: Any
) -> AsyncIterator[NailaServer]:
    settings = NailaSettings(
        data_dir=tmp_path / name,
        queue_url=url,
        replica_id=name,
        health_interval_seconds=0.5,
        **{**LIMITS, **overrides},
    )
    mqtt = MQTTSettings(broker_host=broker.host, broker_port=broker.port, client_id=f"naila-{name}")
    async with NailaServer(settings, mqtt, chat_model=model, workers=workers) as server:
        yield server


async def _leader(servers: list[NailaServer], within: float = 10.0) -> NailaServer:
    end = time.monotonic() + within
    while time.monotonic() < end:
        for server in servers:
            if server.replica is not None and server.replica.role == "leader" and server.replica._ingest is not None:
                if server.replica._ingest.connected.is_set():
                    return server
        await asyncio.sleep(0.05)
    raise AssertionError("no replica took the ingest role")


def _finals(bot: Robot) -> list[tuple[str, str, str]]:
    """(device, task id, finish reason or error) of every final answer and error reply, in arrival order."""
    out = []
    for item in bot.received:
        if item.topic == p.RESPONSE_TOPIC:
            data = item.data
            out.append((data["target_device"], data["task_id"], data["response"]["finish_reason"]))
        elif item.topic.startswith("naila/ai/responses/error/"):
            out.append((item.topic.rsplit("/", 1)[1], item.data["task_id"], "error:" + item.data["error"]))
    return out


def _sent(devices: int, per_device: int, prefix: str) -> dict[str, list[str]]:
    return {f"{prefix}_{d}": [f"{prefix}_{d}-t{i}" for i in range(per_device)] for d in range(devices)}


async def _publish_round(bot: Robot, sent: dict[str, list[str]], i: int) -> None:
    for device, tasks in sent.items():
        await bot.publish(
            p.TASK_TOPIC,
            {
                "task_id": tasks[i],
                "device_id": device,
                "transcription": f"note {i} please",
                "timestamp": p.utc_timestamp(),
            },
        )


def _check_answers(finals: list[tuple[str, str, str]], sent: dict[str, list[str]], allowed_twice: set[str]) -> None:
    """Every task answered (no refusal), in each device's order; none twice but those in ``allowed_twice``."""
    counts = Counter(task for _, task, _ in finals)
    twice = {task for task, n in counts.items() if n > 1}
    assert twice <= allowed_twice, f"answered twice: {twice - allowed_twice}"
    assert all(not kind.startswith("error") for _, _, kind in finals), [f for f in finals if f[2].startswith("error")]
    every = {t for tasks in sent.values() for t in tasks}
    assert set(counts) == every, f"not answered: {every - set(counts)}"
    for device, tasks in sent.items():
        answered = list(dict.fromkeys(task for dev, task, _ in finals if dev == device))
        assert answered == tasks, f"{device}: answers out of order: {answered}"


def _check_memory(url: str, sent: dict[str, list[str]]) -> None:
    """Each device's thread holds its turns in order ('note 0', 'note 1', ...) and one latest checkpoint."""
    with open_checkpointer(url) as saver:
        for device, tasks in sent.items():
            humans = [m.content for m in conversation_messages(saver, device) if m.type == "human"]
            notes = [int(text.split()[1]) for text in humans]
            assert list(dict.fromkeys(notes)) == list(range(len(tasks))), f"{device}: memory {humans}"
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT thread_id, count(*) FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id"
        ).fetchall()
    assert {thread: n for thread, n in rows if n != 1} == {}, "more than the latest checkpoint kept"


def _queue_rows(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM naila_requests ORDER BY id").fetchall()


async def _until_pruned(url: str, within: float = 10.0) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM (SELECT thread_id FROM checkpoints WHERE checkpoint_ns = ''"
                " GROUP BY thread_id HAVING count(*) > 1) AS t"
            ).fetchone()
        if row is not None and row[0] == 0:
            return
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------------------------- in process


async def test_three_replicas_answer_fifty_tasks_once_in_each_devices_order(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    sent = _sent(10, 5, "burst")
    started = time.monotonic()
    async with (
        robot(mosquitto.host, mosquitto.port) as bot,
        replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "r1") as r1,
        replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "r2") as r2,
        replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "r3") as r3,
    ):
        servers = [r1, r2, r3]
        leader = await _leader(servers)
        for i in range(5):
            await _publish_round(bot, sent, i)
        await bot.wait_for(lambda: len(_finals(bot)) >= 50, 120, "50 answers")
        await asyncio.sleep(1.0)  # a duplicate would arrive now
        health = {s.replica.replica_id: s.health_payload()["replica"] for s in servers if s.replica}
        status = [r.data for r in bot.received if r.topic == p.STATUS_TOPIC]
        await _until_pruned(queue_url)
    elapsed = time.monotonic() - started
    _check_answers(_finals(bot), sent, set())
    _check_memory(queue_url, sent)
    claims = {rid: h["claims_total"] for rid, h in health.items()}
    assert sum(claims.values()) == 50 and sum(1 for n in claims.values() if n > 0) >= 2, claims
    assert [h["role"] for h in health.values()].count("leader") == 1
    assert health[leader.replica.replica_id]["role"] == "leader"  # type: ignore[union-attr]
    assert all(h["queue_depth"] == 0 for h in health.values())
    assert status and all(s.get("replica_id") == leader.replica.replica_id for s in status if s["status"] == "online")  # type: ignore[union-attr]
    print(f"\n50 answers by 3 replicas in {elapsed:.1f} s; claims {claims}")


async def test_duplicates_stale_requests_bad_payloads_and_forgets_through_the_queue(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    async with (
        robot(mosquitto.host, mosquitto.port) as bot,
        replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "d1") as d1,
        replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "d2") as d2,
    ):
        await _leader([d1, d2])
        payload = {"task_id": "twice", "device_id": "dup_bot", "transcription": "hello", "timestamp": p.utc_timestamp()}
        await bot.publish(p.TASK_TOPIC, payload)
        await asyncio.sleep(0.001)
        await bot.publish(p.TASK_TOPIC, payload)
        await bot.answer("twice", 30)
        old = {"task_id": "old", "device_id": "dup_bot", "transcription": "hi", "timestamp": time.time() - 3600}
        await bot.publish(p.TASK_TOPIC, old)
        error = await bot.error("dup_bot", 20, "old")
        await bot.publish(p.TASK_TOPIC, b'{"device_id": "dup_bot", "task_id": "bad", "transcription": 5}')
        bad = await bot.error("dup_bot", 20, "bad")
        await bot.publish(p.FORGET_TOPIC, {"device_id": "dup_bot", "task_id": "forget-1"})
        forgotten = await bot.wait_for(lambda: bot.on(p.FORGOTTEN_TOPIC, "forget-1"), 20, "the forget's answer")
        await asyncio.sleep(1.0)
        duplicates = sum(s.replica.duplicates_total for s in (d1, d2) if s.replica)
    assert len(bot.on(p.RESPONSE_TOPIC, "twice")) == 1
    assert bad["error"] == "invalid_payload"  # refused by the ingest leader, never queued
    assert forgotten[0]["forgotten"]["conversation"] is True  # through the queue, after the device's turns
    with open_checkpointer(queue_url) as saver:
        assert conversation_messages(saver, "dup_bot") == []
    assert duplicates == 1
    assert error["error"] == "stale_request"
    rows = {r["task_id"]: r for r in _queue_rows(queue_url)}
    outcomes = {task: row["outcome"] for task, row in rows.items()}
    assert outcomes == {"twice": "answered", "old": "stale", "forget-1": "forgotten"}
    waited = rows["twice"]["claimed_at"] - rows["twice"]["received_at"]
    assert waited < 0.2, f"an idle replica took {waited:.3f} s to claim a stored request"  # NOTIFY wakes it


async def test_barge_in_reaches_the_replica_running_the_request_and_a_queued_one_is_cancelled(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    model = _model(tiny_model)
    async with (
        robot(mosquitto.host, mosquitto.port) as bot,
        replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "front", workers=0) as ingest,
    ):
        await _leader([ingest])
        async with replica(mosquitto, queue_url, tmp_path, model, "worker") as worker:
            assert worker.replica is not None and worker.replica.role == "standby"
            ticket = await asyncio.to_thread(model._gate.acquire, None)  # the request waits for the model
            try:
                running = await bot.task("barge_bot", "tell me a very long story")
                await bot.wait_for(lambda: "barge_bot" in worker._running, 20, "the request running on the worker")
                queued = await bot.task("barge_bot", "and another one")
                await bot.wait_for(lambda: ingest.replica and ingest.replica.queue_depth == 1, 10, "the second queued")  # type: ignore[union-attr]
                await bot.publish(p.CANCEL_TOPIC, {"device_id": "barge_bot", "task_id": queued})
                cancelled = await bot.answer(queued, within=10)
                assert "barge_bot" in worker._running  # the queued one went; the running one goes on
                sent = time.monotonic()
                await bot.publish(p.CANCEL_TOPIC, {"device_id": "barge_bot", "task_id": running})
                answer = await bot.answer(running, within=10)
                took = time.monotonic() - sent
            finally:
                model._gate.release(ticket)
            after = await bot.task("barge_bot", "hello again")
            done = await bot.answer(after, 30)
            # a cancel that overtakes its own request (robots send both at once) still cancels it
            await bot.publish(p.CANCEL_TOPIC, {"device_id": "barge_bot", "task_id": "overtaken"})
            await bot.task("barge_bot", "never mind", task_id="overtaken")
            overtaken = await bot.answer("overtaken", 10)
            health = worker.health_payload()["replica"]
    assert answer["response"]["finish_reason"] == "cancelled"
    assert took < 1.0, f"barge-in answered after {took:.2f} s"
    assert cancelled["response"]["finish_reason"] == "cancelled" and cancelled["response"]["source"] == "cancelled"
    assert done["response"]["finish_reason"] in ("stop", "length")
    assert overtaken["response"]["finish_reason"] == "cancelled"
    assert health["role"] == "standby" and health["replica_id"] == "worker"
    print(f"\nbarge-in on a non-leader replica answered cancelled in {took * 1000:.0f} ms")


async def test_a_dead_replicas_published_answer_is_not_given_again_but_its_turn_is_stored(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    """What a replica killed between publishing an answer and storing the turn leaves: a running row whose
    claimer is gone, marked answered. The replica that takes it over stores the turn and answers nothing."""
    db = QueueDatabase(queue_url, "setup")
    await db.connect()
    await db.setup()
    await db.close()
    first = p.encode({"task_id": "ghost-1", "device_id": "ghost_bot", "transcription": "note 0 please"})
    second = p.encode({"task_id": "ghost-2", "device_id": "ghost_bot", "transcription": "note 1 please"})
    now = time.time()
    with psycopg.connect(queue_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO naila_requests (kind, device_id, task_id, topic, payload, digest, received_at, status,"
            " claimed_by, claimer_pid, claimer_since, claims, claimed_at, answered_at, answer) VALUES"
            " ('turn', 'ghost_bot', 'ghost-1', %s, %s, %s, %s, 'running', 'dead', 0, now(), 1, %s, %s,"
            " 'It was answered.')",
            (p.TASK_TOPIC, first, digest(p.TASK_TOPIC, first), now, now, now),
        )
        conn.execute(
            "INSERT INTO naila_requests (kind, device_id, task_id, topic, payload, digest, received_at)"
            " VALUES ('turn', 'ghost_bot', 'ghost-2', %s, %s, %s, %s)",
            (p.TASK_TOPIC, second, digest(p.TASK_TOPIC, second), now),
        )
    async with (
        robot(mosquitto.host, mosquitto.port) as bot,
        replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "heir") as heir,
    ):
        await bot.answer("ghost-2", 30)
        await asyncio.sleep(0.5)
        health = heir.health_payload()["replica"]
    assert not bot.on(p.RESPONSE_TOPIC, "ghost-1")
    rows = {r["task_id"]: r for r in _queue_rows(queue_url)}
    assert rows["ghost-1"]["outcome"] == "answered_before" and rows["ghost-1"]["reclaimed_from"] == "dead"
    assert health["reclaimed_total"] == 1
    with open_checkpointer(queue_url) as saver:
        messages = [(m.type, m.content) for m in conversation_messages(saver, "ghost_bot")]
    assert messages[:2] == [("human", "note 0 please"), ("ai", "It was answered.")]
    assert [text for kind, text in messages if kind == "human"] == ["note 0 please", "note 1 please"]


async def test_a_second_replica_with_the_same_client_id_is_refused(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    model = _model(tiny_model)
    async with replica(mosquitto, queue_url, tmp_path, model, "same") as first:
        settings = NailaSettings(data_dir=tmp_path / "other", queue_url=queue_url, replica_id="other")
        mqtt = MQTTSettings(broker_host=mosquitto.host, broker_port=mosquitto.port, client_id="naila-same")
        with pytest.raises(ReplicaConflict, match="MQTT_CLIENT_ID=naila-same"):
            async with NailaServer(settings, mqtt, chat_model=_model(tiny_model)):
                pass
        await asyncio.sleep(0.5)
        assert first.connected  # the first replica's broker session was not taken over


async def test_a_leader_stopped_gracefully_hands_ingest_over_and_the_queue_limits_hold(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    model = _model(tiny_model)
    async with robot(mosquitto.host, mosquitto.port) as bot, contextlib.AsyncExitStack() as outer:
        going = contextlib.AsyncExitStack()
        goes = await going.enter_async_context(
            replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "goes", queue_per_device=1)
        )
        await _leader([goes])
        stays = await outer.enter_async_context(
            replica(mosquitto, queue_url, tmp_path, model, "stays", queue_per_device=1)
        )
        ticket = await asyncio.to_thread(model._gate.acquire, None)
        try:
            stopped = time.monotonic()
            await going.aclose()  # SIGTERM's path: the leader hands the ingest role on first
            leader = await _leader([stays])
            took = time.monotonic() - stopped
            first = await bot.task("limit_bot", "hello")
            await bot.wait_for(lambda: "limit_bot" in stays._running, 20, "the first request running")
            second = await bot.task("limit_bot", "and then")  # waits: the one place this device has
            await bot.wait_for(lambda: stays.replica and stays.replica.queue_depth == 1, 10, "the second queued")  # type: ignore[union-attr]
            third = await bot.task("limit_bot", "one too many")
            refused = await bot.error("limit_bot", 10, third)
        finally:
            model._gate.release(ticket)
        await bot.answer(first, 30)
        await bot.answer(second, 30)
        statuses = [r.data["status"] for r in bot.received if r.topic == p.STATUS_TOPIC]
    assert leader is stays and took < 2.0, f"the ingest role moved after {took:.2f} s"
    assert refused["error"] == "overloaded" and "NAILA_QUEUE_PER_DEVICE" in refused["message"]
    assert statuses == ["online", "offline", "online"]  # the old leader said it leaves; the new one is online
    print(f"\nthe ingest role moved {took * 1000:.0f} ms after the leader began its graceful stop")


async def test_a_replica_that_loses_its_queue_connection_stops(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    async with replica(mosquitto, queue_url, tmp_path, _model(tiny_model), "cut") as server:
        assert server.replica is not None
        with psycopg.connect(queue_url, autocommit=True) as admin:  # its locks and claims end with the session
            admin.execute("SELECT pg_terminate_backend(%s)", (server.replica.db.pid,))
        reason = await asyncio.wait_for(server.wait_for_stop(), timeout=5)
    assert reason == "queue_database_lost"


def test_queue_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="NAILA_MEMORY_URL is a SQLite file"):
        NailaSettings(queue_url="postgresql://x/y", memory_url="sqlite:////tmp/m.sqlite")
    with pytest.raises(ValueError, match="must start with postgresql://"):
        NailaSettings(queue_url="mysql://x/y")
    assert NailaSettings(queue_url="postgres://h/db").resolved_memory_url() == "postgresql://h/db"
    shown = naila("config", "show", env={"NAILA_QUEUE_URL": "postgresql://naila:hunter2@db:5432/naila"})
    assert shown.returncode == 0 and "hunter2" not in shown.stdout
    assert '"NAILA_QUEUE_URL": "postgresql://naila:***@db:5432/naila"' in shown.stdout
    refused = naila("serve", env={"NAILA_QUEUE_URL": "redis://x", "MQTT_BROKER_PORT": "1"})
    assert refused.returncode == 1 and "NAILA_QUEUE_URL" in refused.stderr and "postgresql://" in refused.stderr


# ---------------------------------------------------------------------------------------------- processes


def _env(broker: Any, url: str, tmp_path: Path, name: str, model: str) -> dict[str, str]:
    return {
        "LLM_MODEL_PATH": model,
        "LLM_MAX_TOKENS": "8",
        "LLM_TEMPERATURE": "0",
        "NAILA_DATA_DIR": str(tmp_path / name),
        "NAILA_QUEUE_URL": url,
        "NAILA_REPLICA_ID": name,
        "NAILA_QUEUE_LIMIT": "1000",
        "NAILA_QUEUE_PER_DEVICE": "100",
        "MQTT_BROKER_HOST": broker.host,
        "MQTT_BROKER_PORT": str(broker.port),
        "MQTT_CLIENT_ID": f"naila-{name}",
    }


@contextlib.contextmanager
def processes(broker: Any, url: str, tmp_path: Path, model: str, names: list[str]) -> Iterator[dict[str, Any]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in names:
            procs[name] = _start_server([], _env(broker, url, tmp_path, name, model), tmp_path / f"{name}.log")
        for name, proc in procs.items():
            _wait_ready(proc, tmp_path / f"{name}.log", within=90)
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _roles(url: str) -> dict[str, tuple[str, float | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT replica_id, role, leader_since FROM naila_replicas").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


async def _until(check: Any, within: float, what: str) -> Any:
    end = time.monotonic() + within
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {within} s waiting for {what}")


def _running_on(url: str, name: str) -> list[str]:
    return [r["task_id"] for r in _queue_rows(url) if r["status"] == "running" and r["claimed_by"] == name]


async def test_kill_9_of_a_worker_replica_mid_load_loses_nothing(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    sent = _sent(10, 10, "kw")
    names = ["w1", "w2", "w3"]
    with processes(mosquitto, queue_url, tmp_path, tiny_model, names) as procs:
        leader = await _until(
            lambda: next((n for n, (role, _) in _roles(queue_url).items() if role == "leader"), None), 10, "a leader"
        )
        async with robot(mosquitto.host, mosquitto.port) as bot:
            for i in range(10):
                await _publish_round(bot, sent, i)
            await bot.wait_for(lambda: len(_finals(bot)) >= 20, 90, "the first answers")
            victim = await _until(
                lambda: next((n for n in names if n != leader and _running_on(queue_url, n)), None),
                20,
                "a worker replica with a request in progress",
            )
            in_flight = set(_running_on(queue_url, victim))
            killed_at = time.time()
            procs[victim].kill()
            procs[victim].wait(timeout=10)
            answered_at_kill = len(_finals(bot))
            await bot.wait_for(
                lambda: {t for _, t, _ in _finals(bot)} >= {t for ts in sent.values() for t in ts},
                120,
                "every request answered",
            )
            await asyncio.sleep(1.5)  # a duplicate would arrive now
            await _until_pruned(queue_url)
    rows = _queue_rows(queue_url)
    taken_over = {r["task_id"]: r for r in rows if r["reclaimed_from"] == victim}
    assert answered_at_kill < 100, "all were answered before the kill: the test proved nothing"
    assert taken_over, f"nothing of {victim} was taken over (in flight at the kill: {in_flight})"
    delays = [r["reclaimed_at"] - killed_at for r in taken_over.values()]
    assert max(delays) < 2.0, f"taken over after {delays} s"
    answered_before = {t for t, r in taken_over.items() if r["outcome"] == "answered_before"}
    _check_answers(_finals(bot), sent, allowed_twice=set(taken_over) - answered_before)
    _check_memory(queue_url, sent)
    print(
        f"\nkilled {victim} with {sorted(in_flight)} in flight; taken over {sorted(taken_over)} after"
        f" {max(delays) * 1000:.0f} ms; answered before the kill: {sorted(answered_before)}"
    )


async def test_kill_9_of_the_ingest_leader_while_robots_publish_hands_ingest_over(
    mosquitto: Any, queue_url: str, tmp_path: Path, tiny_model: str
) -> None:
    sent = _sent(10, 10, "kl")
    names = ["l1", "l2", "l3"]
    with processes(mosquitto, queue_url, tmp_path, tiny_model, names) as procs:
        leader = await _until(
            lambda: next((n for n, (role, _) in _roles(queue_url).items() if role == "leader"), None), 10, "a leader"
        )
        async with robot(mosquitto.host, mosquitto.port) as bot:
            for i in range(3):
                await _publish_round(bot, sent, i)
            await bot.wait_for(lambda: len(_finals(bot)) >= 10, 90, "the first answers")
            await _publish_round(bot, sent, 3)  # the leader is taking these in while it dies
            killed_at = time.time()
            procs[leader].kill()  # publishing goes on: these wait in the ingest session for the next leader
            for i in range(4, 10):
                await _publish_round(bot, sent, i)
                await asyncio.sleep(0.1)
            procs[leader].wait(timeout=10)
            new_leader, since = await _until(
                lambda: next(
                    ((n, s) for n, (role, s) in _roles(queue_url).items() if role == "leader" and n != leader), None
                ),
                10,
                "another replica taking the ingest role",
            )
            await bot.wait_for(
                lambda: {t for _, t, _ in _finals(bot)} >= {t for ts in sent.values() for t in ts},
                120,
                "every request answered",
            )
            await asyncio.sleep(1.5)
            await _until_pruned(queue_url)
    rows = _queue_rows(queue_url)
    taken_over = {r["task_id"]: r for r in rows if r["reclaimed_from"] == leader}
    answered_before = {t for t, r in taken_over.items() if r["outcome"] == "answered_before"}
    assert since - killed_at < 2.0, f"{new_leader} took the ingest role {since - killed_at:.2f} s after the kill"
    _check_answers(_finals(bot), sent, allowed_twice=set(taken_over) - answered_before)
    _check_memory(queue_url, sent)
    offline = [r.data for r in bot.received if r.topic == p.STATUS_TOPIC and r.data["status"] == "offline"]
    assert offline, "the dead leader's will (status offline) was not published"
    print(f"\nkilled leader {leader}; {new_leader} took over after {(since - killed_at) * 1000:.0f} ms")
