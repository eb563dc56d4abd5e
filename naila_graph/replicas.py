"""Several ``naila serve`` replicas behind one broker and one PostgreSQL (``NAILA_QUEUE_URL``).

Topology: robots → MQTT broker → the *ingest leader* → the Postgres queue (:mod:`naila_graph.pg_queue`) →
every replica's workers → the LLM (in process, or a shared server with ``LLM_BACKEND=openai``).

* **Ingest.** One replica at a time holds the ingest role: the one holding a Postgres advisory lock (a
  session lock: it ends with the holder's connection, so when the leader dies a standby, trying every
  :data:`POLL_SECONDS`, takes over within a second). The leader subscribes to the request topics with the
  fixed client id :data:`INGEST_CLIENT_ID` and a persistent session, stores each request as a queue row and
  acknowledges the MQTT message only after the row is committed: whatever was not stored is delivered again
  by the broker, to whichever replica connects next with that client id. A task id a device already used
  (within :data:`~naila_graph.pg_queue.REMEMBER_SECONDS`) is not stored twice. Only the leader publishes the
  retained ``naila/ai/status``.
* **Workers.** Every replica's workers claim the oldest waiting request of a device whose previous request
  is finished (:meth:`~naila_graph.pg_queue.QueueDatabase.claim`), so a device's answers come in the order
  its requests arrived whichever replica answers. The claims of a replica that died are put back in the
  queue by whichever replica looks first (every :data:`POLL_SECONDS`); if that replica had already
  published the answer, the row says so and the answer is not given again (the turn is stored in memory
  if it was not). Staleness is checked when a request is claimed.
* **Cancel.** Every replica subscribes to the cancel topic with its own ``MQTT_CLIENT_ID``: the replica
  running that device's request stops it; a request still waiting is taken out of the queue by whichever
  replica gets there first and answered ``finish_reason: "cancelled"``. Cancels are remembered for
  :data:`CANCEL_MEMORY_S`, so one that came while its request was being claimed, or that named a task not yet
  stored (it overtook its request on the way through the leader), cancels it before it starts.
* **Identity.** ``NAILA_REPLICA_ID`` (default host name + pid) names the replica in health and logs. Two
  replicas with the same ``MQTT_CLIENT_ID`` would take each other's broker session: the second one is refused
  at start (a second advisory lock, on the client id), before it connects to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import psycopg

from naila_graph import protocol as p
from naila_graph import telemetry
from naila_graph.mqtt_link import MessageNotTaken, MqttLink
from naila_graph.pg_queue import LOCK_REPLICA, Claimed, QueueDatabase, listen

if TYPE_CHECKING:
    from naila_graph.server import NailaServer

logger = logging.getLogger("naila.replicas")

INGEST_CLIENT_ID = "naila-ingest"  # the ingest leader's MQTT client id: its persistent session passes on
INGEST_TOPICS = (p.STT_TOPIC, p.TASK_TOPIC, p.FORGET_TOPIC)
CANCEL_MEMORY_S = 10.0  # a cancel is remembered this long for a request claimed (or stored) just after it
POLL_SECONDS = 0.5  # a standby tries to take the ingest role, idle workers look for work, this often
PRUNE_EVERY_SECONDS = 60.0
_LOCK_INGEST = 7_362_002  # advisory lock namespaces
_LOCK_CLIENT = 7_362_003


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ReplicaConflict(RuntimeError):
    """Another running replica already uses this MQTT client id or replica id."""


class Replica:
    """This process's part in a set of replicas: ``async with Replica(server, url) as replica:`` connects to
    the queue and registers; ``async with replica.running(workers):`` runs the ingest election and the
    workers."""

    def __init__(self, server: NailaServer, url: str, replica_id: str | None = None) -> None:
        self.server = server
        self.url = url
        self.replica_id = replica_id or default_replica_id()
        self.client_id = server.mqtt.client_id
        self.db = QueueDatabase(url, self.replica_id)
        self.role = "standby"
        self.leader_since: float | None = None
        self.queue_depth = 0
        self.claims_total = 0
        self.reclaimed_total = 0
        self.duplicates_total = 0
        self.ingested_total = 0
        self._ingest: MqttLink | None = None
        self._ingest_stack = contextlib.AsyncExitStack()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending: set[asyncio.Task[Any]] = set()
        self._cancels: dict[str, list[tuple[float, str | None]]] = {}  # device -> (when, task id) of recent cancels

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Replica:
        if self.client_id == INGEST_CLIENT_ID:
            raise ReplicaConflict(
                f"MQTT_CLIENT_ID={INGEST_CLIENT_ID} is the ingest leader's own client id; give each replica another"
            )
        try:
            await self.db.connect()
            await self.db.setup()
        except psycopg.Error as exc:
            await self.db.close()
            raise RuntimeError(f"cannot use the request queue NAILA_QUEUE_URL: {exc}") from exc
        if not await self.db.try_lock(_LOCK_CLIENT, self.client_id):
            await self.db.close()
            raise ReplicaConflict(
                f"another replica is running with MQTT_CLIENT_ID={self.client_id}: two replicas with one client id"
                " would take each other's broker session; give each replica its own MQTT_CLIENT_ID"
            )
        if not await self.db.try_lock(LOCK_REPLICA, self.replica_id):
            await self.db.close()
            raise ReplicaConflict(
                f"another replica is running with NAILA_REPLICA_ID={self.replica_id}; give each its own (or unset it)"
            )
        await self.db.register(self.client_id)
        logger.info("replica %s (MQTT client id %s) joined the request queue", self.replica_id, self.client_id)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._leave_ingest()
        with contextlib.suppress(psycopg.Error):
            if not self.db.broken:
                await self.db.unregister()
        await self.db.close()

    @contextlib.asynccontextmanager
    async def running(self, workers: int) -> AsyncIterator[None]:
        """The election loop, the queue listener and ``workers`` workers; on the way out the ingest role is
        handed on first, then no new claims, then the answers in progress get the server's grace."""
        self._tasks = [
            asyncio.create_task(self._elect(), name="ingest election"),
            asyncio.create_task(self._listen(), name="queue listener"),
        ]
        workers_tasks = [asyncio.create_task(self._worker(), name=f"queue worker {i}") for i in range(workers)]
        try:
            yield
        finally:
            self._stopping = True
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._leave_ingest()
            self._wakeup.set()
            await self.server._finish_running()
            for task in workers_tasks:
                task.cancel()
            await asyncio.gather(*workers_tasks, return_exceptions=True)
            if self._pending:
                await asyncio.wait(self._pending, timeout=5.0)

    def health(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "client_id": self.client_id,
            "role": self.role,
            "leader_since": p.utc_timestamp(self.leader_since) if self.leader_since else None,
            "queue_depth": self.queue_depth,
            "claims": len(self.server._running),
            "claims_total": self.claims_total,
            "reclaimed_total": self.reclaimed_total,
            "ingested_total": self.ingested_total,
            "duplicates_total": self.duplicates_total,
        }

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _lost_database(self, exc: BaseException) -> None:
        logger.error("replica %s lost the request queue's database (%s): stopping", self.replica_id, exc)
        self.server.request_stop("queue_database_lost")

    # ------------------------------------------------------------------ ingest election

    async def _elect(self) -> None:
        last_prune = 0.0
        while True:
            try:
                if self.role != "leader" and await self.db.try_lock(_LOCK_INGEST, "ingest"):
                    await self._take_ingest()
                await self.db.heartbeat(self.role)
                for device, task, dead in await self.db.release_dead():
                    logger.warning("device=%s task=%s: replica %s died with it; back in the queue", device, task, dead)
                self.queue_depth = await self.db.waiting()
                if self.role == "leader" and time.monotonic() - last_prune > PRUNE_EVERY_SECONDS:
                    last_prune = time.monotonic()
                    await self.db.prune()
            except psycopg.Error as exc:
                if self.db.broken:  # the session and its locks are gone: another replica takes over
                    self._lost_database(exc)
                    return
                logger.warning("replica %s: queue bookkeeping failed: %s", self.replica_id, exc)
            except Exception:  # the election must go on whatever one round ran into
                logger.exception("replica %s: queue bookkeeping failed", self.replica_id)
            await asyncio.sleep(POLL_SECONDS)

    async def _take_ingest(self) -> None:
        started = time.monotonic()
        self.role = "leader"
        self.leader_since = time.time()
        await self.db.set_leader(True)
        settings = self.server.mqtt.model_copy(update={"client_id": INGEST_CLIENT_ID, "clean_session": False})
        online = telemetry.status_payload("online", self.client_id)
        online["replica_id"] = self.replica_id
        offline = telemetry.status_payload("offline", self.client_id)
        self._ingest = await self._ingest_stack.enter_async_context(
            MqttLink(
                settings,
                INGEST_TOPICS,
                self._on_request,
                online=(p.STATUS_TOPIC, online),
                will=(p.STATUS_TOPIC, offline),
                tls_context=self.server.mqtt.tls_context(),
                counters=self.server.stats,
                manual_ack=True,
            )
        )
        logger.info(
            "replica %s took the ingest role (MQTT client id %s) in %.0f ms",
            self.replica_id,
            INGEST_CLIENT_ID,
            (time.monotonic() - started) * 1000,
        )

    async def _leave_ingest(self) -> None:
        if self._ingest is None:
            return
        link, self._ingest = self._ingest, None
        link.stop_reading()
        if link.connected.is_set():  # a clean disconnect sends no will: say it here
            await link.publish(p.STATUS_TOPIC, telemetry.status_payload("offline", self.client_id), retain=True)
        await self._ingest_stack.aclose()
        self.role = "standby"
        self.leader_since = None
        with contextlib.suppress(psycopg.Error):
            if not self.db.broken:
                await self.db.unlock(_LOCK_INGEST, "ingest")
                await self.db.set_leader(False)
        logger.info("replica %s left the ingest role", self.replica_id)

    async def _on_request(self, topic: str, payload: bytes, redelivered: bool) -> None:
        """One request from the broker: stored (or refused) before the link acknowledges it."""
        try:
            await self._store(topic, payload, redelivered)
        except psycopg.Error as exc:
            # Not acknowledged: the broker delivers it again on the ingest session's next connection.
            if self.db.broken:
                self._lost_database(exc)
            raise MessageNotTaken(f"the request queue did not take the message: {exc}") from exc

    async def _store(self, topic: str, payload: bytes, redelivered: bool) -> None:
        server, db = self.server, self.db
        if redelivered and await db.holds(topic, payload):
            logger.info("message on %s delivered again by the broker: already stored", topic)
            return
        max_bytes = server.mqtt.max_payload_bytes
        try:
            if topic == p.FORGET_TOPIC:
                forget = p.parse_forget(payload, max_bytes=max_bytes)
                kind, device, task = "forget", forget.device_id, forget.task_id or p.new_task_id("forget")
            elif topic == p.TASK_TOPIC:
                request = p.parse_task(payload, max_bytes=max_bytes)
                kind, device, task = "turn", request.device_id, request.task_id
            elif topic.startswith(p.STT_PREFIX):
                request = p.parse_stt(topic, payload, max_bytes=max_bytes)
                kind, device, task = "turn", request.device_id, request.task_id
            else:
                logger.warning("message on unexpected topic %s ignored", topic)
                return
        except p.PayloadError as exc:
            server.stats.errors += 1
            logger.warning("bad payload on %s (device=%s task=%s): %s", topic, exc.device_id, exc.task_id, exc.message)
            await server.publish_error(exc.device_id, exc.task_id, exc.code, exc.message)
            return
        if kind == "turn":
            refusal = await self._overloaded(device)
            if refusal is not None:
                server.stats.errors += 1
                logger.warning("device=%s task=%s overloaded: %s", device, task, refusal)
                await server.publish_error(device, task, "overloaded", f"the server is busy ({refusal}); try again")
                return
        row = await db.add(kind, device, task, topic, payload)
        if row is None:
            self.duplicates_total += 1
            logger.info("device=%s task=%s duplicate dropped (already stored)", device, task)
            return
        self.ingested_total += 1
        logger.debug("device=%s task=%s stored as queue row %d", device, task, row)

    async def _overloaded(self, device: str) -> str | None:
        settings = self.server.settings
        held = await self.db.waiting(device)
        if held >= settings.queue_per_device:
            return f"device {device} already has {held} requests waiting (NAILA_QUEUE_PER_DEVICE)"
        depth = await self.db.waiting()
        if depth >= settings.queue_limit:
            return f"{depth} requests are already waiting (NAILA_QUEUE_LIMIT={settings.queue_limit})"
        return None

    # ------------------------------------------------------------------ workers

    async def _listen(self) -> None:
        """Wake the workers when a request was stored or finished (NOTIFY); they also poll."""
        while True:
            try:
                conn = await listen(self.url)
                async with conn:
                    async for _ in conn.notifies():
                        self._wakeup.set()
            except psycopg.Error as exc:
                logger.debug("queue listener: %s; polling meanwhile", exc)
                await asyncio.sleep(POLL_SECONDS)

    async def _next(self) -> Claimed | None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                claimed = await self.db.claim()
            except psycopg.Error as exc:
                if self.db.broken:
                    self._lost_database(exc)
                    return None
                logger.warning("claim failed: %s", exc)
                claimed = None
            if claimed is not None:
                return claimed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=POLL_SECONDS)
        return None

    async def _worker(self) -> None:
        while not self._stopping:
            claimed = await self._next()
            if claimed is None:
                return
            if self._stopping:  # claimed during shutdown: given back for another replica
                with contextlib.suppress(psycopg.Error):
                    await self.db.release(claimed.id)
                return
            self.claims_total += 1
            outcome = "failed"
            try:
                outcome = await self._run(claimed)
            except Exception:
                logger.exception("device=%s task=%s: the request failed", claimed.device_id, claimed.task_id)
            finally:
                with contextlib.suppress(psycopg.Error):
                    await self.db.finish(claimed.id, outcome)

    async def _run(self, claimed: Claimed) -> str:
        server = self.server
        if claimed.reclaimed_from is not None:
            self.reclaimed_total += 1
            logger.warning(
                "device=%s task=%s taken over from replica %s, which stopped before finishing it%s",
                claimed.device_id,
                claimed.task_id,
                claimed.reclaimed_from,
                " (its answer was already published: not answered again)" if claimed.answered else "",
            )
        if claimed.kind == "forget":
            forget = p.parse_forget(claimed.payload, max_bytes=server.mqtt.max_payload_bytes)
            await server._forget(forget, None)
            return "forgotten"
        if claimed.answered:
            await self._store_answered_turn(claimed)
            return "answered_before"
        try:
            request = self._request(claimed)
        except p.PayloadError as exc:  # stored by a leader of another version: refuse it like the leader would
            await server.publish_error(claimed.device_id, claimed.task_id, exc.code, exc.message)
            return "refused"
        age = time.time() - (request.timestamp if request.timestamp is not None else claimed.received_at)
        limit = server.settings.stale_request_seconds
        if age > limit:
            logger.warning("device=%s stale request %s (%.0f s old) refused", request.device_id, request.task_id, age)
            await server.publish_error(
                request.device_id,
                request.task_id,
                "stale_request",
                f"the request is {age:.0f} s old; requests older than {limit:.0f} s are not answered",
            )
            return "stale"
        if not request.text.strip():
            await server.publish_error(
                request.device_id, request.task_id, "empty_input", "the request holds no text to answer"
            )
            return "empty"
        if self._cancelled_before_start(claimed):
            await server._publish_cancelled_unstarted(request)
            return "cancelled"
        await server.serve_request(request)  # registers it at once: a cancel from now on finds it running
        return "answered"

    def _cancelled_before_start(self, claimed: Claimed) -> bool:
        """A cancel came while this request was being claimed (too late to find it waiting, too early to find
        it running), or named its task before the request was stored (it overtook its request)."""
        now = time.time()
        recent = [(at, task) for at, task in self._cancels.get(claimed.device_id, []) if now - at < CANCEL_MEMORY_S]
        return any(task == claimed.task_id or (task is None and at >= claimed.received_at) for at, task in recent)

    def _request(self, claimed: Claimed) -> p.Request:
        max_bytes = self.server.mqtt.max_payload_bytes
        if claimed.topic == p.TASK_TOPIC:
            request = p.parse_task(claimed.payload, max_bytes=max_bytes)
        else:
            request = p.parse_stt(claimed.topic, claimed.payload, max_bytes=max_bytes)
        request.task_id = claimed.task_id
        if request.timestamp is None:
            request.timestamp = claimed.received_at
        request.received = time.monotonic() - max(0.0, time.time() - claimed.received_at)
        request.inbox_id = claimed.id
        return request

    def answered(self, row_id: int | None, text: str | None) -> None:
        """The final answer of queue row ``row_id`` is out (called right after it is published)."""
        if row_id is not None:
            self._spawn(self._mark_answered(row_id, text))

    async def _mark_answered(self, row_id: int, text: str | None) -> None:
        try:
            await self.db.mark_answered(row_id, text)
        except psycopg.Error as exc:
            logger.warning("queue row %d: could not record that it was answered: %s", row_id, exc)

    async def _store_answered_turn(self, claimed: Claimed) -> None:
        """A replica died after publishing this answer: store the turn in memory unless it was stored."""
        turns = self.server.turns
        if turns is None or claimed.answer is None:
            return
        from langchain_core.messages import AIMessage, HumanMessage

        try:
            request = self._request(claimed)
            config: Any = {"configurable": {"thread_id": request.thread_id}}
            state = await turns.graph.aget_state(config)
            if (state.values or {}).get("task_id") == claimed.task_id:
                return  # the turn was stored before the replica died
            update = {
                "messages": [HumanMessage(request.text), AIMessage(claimed.answer)],
                "task_id": claimed.task_id,
                "device_id": request.device_id,
            }
            await turns.graph.aupdate_state(config, update, as_node="finalize")
            logger.info("device=%s task=%s: stored the turn of a replica that died", request.device_id, request.task_id)
        except Exception as exc:  # memory only: the answer is out
            logger.warning("device=%s task=%s: could not store the turn: %s", claimed.device_id, claimed.task_id, exc)

    def on_cancel(self, cancel: p.CancelRequest) -> None:
        """A cancel arrived: remembered at once (a request being claimed right now sees it), and the device's
        waiting requests are taken out of the queue."""
        now = time.time()
        kept = [(at, task) for at, task in self._cancels.get(cancel.device_id, []) if now - at < CANCEL_MEMORY_S]
        self._cancels[cancel.device_id] = [*kept, (now, cancel.task_id)]
        self._spawn(self.cancel_waiting(cancel))

    async def cancel_waiting(self, cancel: p.CancelRequest) -> None:
        """Take the device's waiting requests out of the queue and answer them cancelled."""
        try:
            rows = await self.db.cancel_waiting(cancel.device_id, cancel.task_id)
        except psycopg.Error as exc:
            logger.warning("cancel from %s: the queue could not be changed: %s", cancel.device_id, exc)
            return
        for _row_id, task_id, _payload, _topic, _received in rows:
            request = p.Request(cancel.device_id, task_id, "", "text", None, cancel.device_id)
            await self.server._publish_cancelled_unstarted(request)
