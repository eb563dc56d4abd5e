"""The AI server: lifecycle, admission and workers (../shared/PROTOCOL.md).

``async with NailaServer(...) as server: await server.wait_for_stop()``. Startup enters each part into
one ``AsyncExitStack`` (model, memory, MQTT link, health monitor, workers), so shutdown leaves them in
reverse order. A request goes: MQTT link → :meth:`_on_message` (parse, write to the durable inbox,
admit; only then is it acknowledged to the broker) → the fair scheduler → a worker → the turn layer
(:mod:`naila_graph.turn`) → its events → topics on the link; its final answer or refusal settles its inbox
row. Rows a crash left unsettled are answered first on the next start (:mod:`naila_graph.inbox`).

With ``NAILA_QUEUE_URL`` the server is one of several replicas (:mod:`naila_graph.replicas`): requests come
from a Postgres queue that the ingest leader fills, instead of its own subscription, inbox and scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel

from naila_graph import protocol as p
from naila_graph import telemetry
from naila_graph.brain import loaded_model, prime_prompt_cache
from naila_graph.graph import build_graph, make_generator
from naila_graph.inbox import Entry, Inbox, inbox_path
from naila_graph.memory import MemoryHealth, acheck_memory, masked_url, open_async_checkpointer
from naila_graph.mqtt_link import MqttLink
from naila_graph.replies import TurnPublisher, request_log
from naila_graph.scheduler import FairScheduler, Overloaded, QueueClosed, RecentIds
from naila_graph.settings import MQTTSettings, NailaSettings
from naila_graph.telemetry import ModelStatus, ServerStats
from naila_graph.turn import TurnRequest, TurnRunner, consume
from naila_graph.user_facts import UserFacts, open_async_store

if TYPE_CHECKING:
    from naila_graph.replicas import Replica

logger = logging.getLogger("naila.server")

SERVER_WORKERS = 2  # one request may wait for the model while another gets a pattern/action answer
CANCEL_WAIT_SECONDS = 10.0  # how long cancelled answers get to end after the shutdown grace
BACKGROUND_WAIT_SECONDS = 5.0  # how long error replies in flight get at shutdown
CANCELLED_SOURCE = "cancelled"  # response.source of a request cancelled before anything answered it


@dataclass
class _Running:
    request: p.Request
    task: asyncio.Task[None]
    cancel_reason: str | None = None
    answered: bool = False  # the final answer is out; only memory is being written


class NailaServer:
    """The MQTT AI server. Build it, then ``async with`` it; ``request_stop()`` ends ``wait_for_stop()``."""

    def __init__(
        self,
        settings: NailaSettings | None = None,
        mqtt: MQTTSettings | None = None,
        *,
        chat_model: BaseChatModel | None = None,
        model_factory: Callable[[], BaseChatModel] | None = None,
        clock: Callable[[], datetime] | None = None,
        workers: int = SERVER_WORKERS,
    ) -> None:
        self.settings = settings or NailaSettings()
        self.mqtt = mqtt or MQTTSettings()
        self._model_factory = model_factory
        self.chat_model = chat_model
        self._clock = clock
        self._workers_count = workers
        self.stats = ServerStats()
        self.memory_health = MemoryHealth()
        self._saver: Any = None
        self.user_facts: UserFacts | None = None  # the facts about each device's person (naila_graph/user_facts.py)
        self.model = ModelStatus(chat_model)
        self.startup_phases: dict[str, float] = {}
        self.link: MqttLink | None = None
        self.inbox: Inbox | None = None
        self.replica: Replica | None = None  # with NAILA_QUEUE_URL: this replica's part in the set
        self.turns: TurnRunner | None = None
        self._stack = contextlib.AsyncExitStack()
        self._scheduler = FairScheduler(self.settings.queue_limit, self.settings.queue_per_device)
        self._recent = RecentIds(ttl=max(300.0, self.settings.stale_request_seconds * 2))
        self._running: dict[str, _Running] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._stop_requested = asyncio.Event()
        self._stop_reason = "stopped"

    @property
    def degraded_reason(self) -> str | None:
        return self.model.degraded_reason

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.connected.is_set()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> NailaServer:
        try:
            await self.start()
        except BaseException:
            await self.stop("startup_failed")
            raise
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop(self._stop_reason if exc_info[0] is None else "error")

    @contextlib.asynccontextmanager
    async def _phase(self, name: str) -> AsyncIterator[None]:
        logger.info("startup: %s ...", name)
        started = time.perf_counter()
        yield
        elapsed = (time.perf_counter() - started) * 1000
        self.startup_phases[name] = round(elapsed, 1)
        logger.info("startup: %s done in %.0f ms", name, elapsed)

    async def start(self) -> None:
        stack = self._stack
        async with self._phase("configuration"):
            from llm.hardware import detect_hardware

            self.model.hardware = detect_hardware().acceleration
            tls_context = self.mqtt.tls_context()  # unusable certificate files stop the start here
            logger.info(
                "broker %s:%s (MQTT %s, client id %s), memory %s, queue limit %d",
                self.mqtt.broker_host,
                self.mqtt.broker_port,
                self.mqtt.protocol,
                self.mqtt.client_id,
                masked_url(self.settings.resolved_memory_url()),
                self.settings.queue_limit,
            )
        async with self._phase("load AI models"):
            if self.chat_model is None:
                self.chat_model = self._model_factory() if self._model_factory is not None else None
            self.chat_model = await stack.enter_async_context(loaded_model(self.chat_model, self.model))
        async with self._phase("build graph and memory"):
            saver = await stack.enter_async_context(
                open_async_checkpointer(self.settings.resolved_memory_url(), health=self.memory_health)
            )
            self._saver = saver
            store = await stack.enter_async_context(open_async_store(self.settings.resolved_memory_url()))
            self.user_facts = UserFacts(store, max_facts=self.settings.max_user_facts)
            model = self.chat_model if self.degraded_reason is None else None
            generator = make_generator(model, self.settings, clock=self._clock, degraded_reason=self.degraded_reason)
            graph = build_graph(
                model,
                saver,
                settings=self.settings,
                clock=self._clock,
                degraded_reason=self.degraded_reason,
                generator=generator,
                store=store,
            )
            self.turns = TurnRunner(graph, saver=saver, generator=generator, busy=self._busy, stats=self.stats)
            stack.push_async_callback(self.turns.aclose)
        replicated = self.settings.queue_url is not None
        async with self._phase("open the request queue" if replicated else "open the request inbox"):
            if self.settings.queue_url is not None:  # the ingest leader subscribes to requests, not this link
                try:
                    from naila_graph.replicas import Replica
                except ImportError as exc:
                    raise RuntimeError(
                        f"NAILA_QUEUE_URL needs the Postgres extra ({exc}): pip install 'naila-graph[postgres]'"
                    ) from None
                replica = Replica(self, self.settings.queue_url, self.settings.replica_id)
                self.replica = await stack.enter_async_context(replica)
            else:
                self.inbox = stack.enter_context(Inbox(inbox_path(self.settings.data_dir, self.mqtt.client_id)))
        async with self._phase("connect MQTT and subscribe"):
            # with replicas, the ingest leader's link says whether NAILA is online
            online = (p.STATUS_TOPIC, telemetry.status_payload("online", self.mqtt.client_id))
            offline = (p.STATUS_TOPIC, telemetry.status_payload("offline", self.mqtt.client_id))
            self.link = await stack.enter_async_context(
                MqttLink(
                    self.mqtt,
                    (p.CANCEL_TOPIC,) if replicated else p.INPUT_TOPICS,
                    self._on_message,
                    online=None if replicated else online,
                    will=None if replicated else offline,
                    tls_context=tls_context,
                    counters=self.stats,
                    manual_ack=True,
                )
            )
            stack.push_async_callback(self._announce_shutdown)
            self._recover()  # before the link reads anything new: the device's older requests come first
            await self._wait_connected(self.link)
        async with self._phase("start health monitor"):
            await stack.enter_async_context(self._health_monitor())
            if self.replica is not None:
                await stack.enter_async_context(self.replica.running(self._workers_count))
            else:
                await stack.enter_async_context(self._workers_running())
        await self.publish(p.STARTUP_TOPIC, telemetry.startup_payload(self.model, self.startup_phases))
        # Online first, then the persona: a robot waiting for a restarted server is not kept waiting for it.
        self._spawn(self._prime())
        logger.info(
            "NAILA AI server ready%s (startup phases: %s)",
            f" in DEGRADED mode ({self.degraded_reason}): the pattern responder answers"
            if self.degraded_reason
            else "",
            ", ".join(f"{k} {v:.0f} ms" for k, v in self.startup_phases.items()),
        )

    async def _wait_connected(self, link: MqttLink) -> None:
        waiter = asyncio.create_task(link.connected.wait())
        stopper = asyncio.create_task(self._stop_requested.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        if not link.connected.is_set():
            raise RuntimeError("stopped before the broker could be reached")

    @contextlib.asynccontextmanager
    async def _health_monitor(self) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                try:
                    await acheck_memory(self._saver)  # an outage (and its end) is seen without a turn
                except Exception as exc:  # the probe records the outage; the report still goes out
                    logger.debug("memory probe: %s", exc)
                await self.publish(p.HEALTH_TOPIC, self.health_payload())
                await asyncio.sleep(self.settings.health_interval_seconds)

        task = asyncio.create_task(loop(), name="health monitor")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _workers_running(self) -> AsyncIterator[None]:
        """The workers; on the way out: queued requests are refused, answers in progress get the grace
        period, then are cancelled."""
        workers = [asyncio.create_task(self._worker(), name=f"worker {i}") for i in range(self._workers_count)]
        try:
            yield
        finally:
            for request in self._scheduler.drain():
                await self.publish_error(
                    request.device_id, request.task_id, "shutting_down", "the server is shutting down"
                )
                self._settle(request.inbox_id)
            await self._finish_running()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            if self._background:
                await asyncio.wait(self._background, timeout=BACKGROUND_WAIT_SECONDS)

    async def _finish_running(self) -> None:
        running = [r.task for r in self._running.values()]
        if not running:
            return
        grace = self.settings.shutdown_grace_seconds
        logger.info("waiting up to %.1f s for %d answer(s) in progress", grace, len(running))
        _, pending = await asyncio.wait(running, timeout=grace)
        for item in list(self._running.values()):
            if item.task in pending:
                item.cancel_reason = "shutdown"
                item.task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CANCEL_WAIT_SECONDS)

    async def _prime(self) -> None:
        """The persona as every turn's prompt starts, evaluated (or taken from disk) while the server is
        already online; with NAILA_ROBOT_TOOLS=commands also the persona with the robot tools, which a
        command's prompt starts with."""
        generator = self.turns.generator if self.turns else None
        variants = [generator.prompt_tools if generator else None]
        if generator is not None and generator.tools and generator.prompt_tools is None:
            variants.append(generator.tools)
        for tools in variants:
            if self._priming_must_stop():
                return
            await prime_prompt_cache(
                self.chat_model,
                self.settings.system_prompt_file,
                self.degraded_reason,
                should_stop=self._priming_must_stop,
                state_dir=self.settings.prompt_states_dir,
                tools=tools,
            )

    async def _announce_shutdown(self) -> None:
        if self.connected:
            await self.publish(p.SHUTDOWN_TOPIC, telemetry.shutdown_payload(self._stop_reason, self.stats))
            if self.replica is None:  # a replica's status is the ingest leader's (naila_graph.replicas)
                await self.publish(
                    p.STATUS_TOPIC, telemetry.status_payload("offline", self.mqtt.client_id), retain=True
                )

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the server to shut down (signal handlers call this)."""
        self._stop_reason = reason
        self._stop_requested.set()

    async def wait_for_stop(self) -> str:
        await self._stop_requested.wait()
        return self._stop_reason

    async def stop(self, reason: str = "stopped") -> None:
        """Graceful shutdown: no new requests, in-flight ones finish or are cancelled, then each part is
        left in reverse order of startup."""
        logger.info("shutdown (%s): no new requests", reason)
        self._stop_reason = reason
        self._stop_requested.set()
        if self.link is not None:
            self.link.stop_reading()
        await self._stack.aclose()
        logger.info("shutdown complete after %.1f s of uptime", self.stats.uptime_seconds)

    def health_payload(self) -> dict[str, Any]:
        payload = telemetry.health_payload(
            self.stats,
            self.model,
            memory=self.memory_health.as_dict(),
            connected=self.connected,
            queue_depth=self._scheduler.depth if self.replica is None else self.replica.queue_depth,
            in_progress=len(self._running),
        )
        if self.replica is not None:
            payload["replica"] = self.replica.health()
        return payload

    # ------------------------------------------------------------------ publishing

    async def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> bool:
        """Publish JSON on the link (waits for a reconnect when the broker is briefly gone)."""
        if self.link is None:
            return False
        return await self.link.publish(topic, payload, retain=retain)

    async def publish_error(self, device_id: str | None, task_id: str | None, code: str, message: str) -> None:
        if device_id is None:
            return
        await self.publish(p.error_topic(device_id), p.error_payload(task_id, code, message))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ admission

    def _busy(self) -> bool:
        return self._scheduler.depth > 0 or self._stop_requested.is_set()

    def _priming_must_stop(self) -> bool:
        """Priming gives way to any request, also one a worker already took from the queue."""
        return self._busy() or bool(self._running)

    def _on_message(self, topic: str, payload: bytes, redelivered: bool = False) -> None:
        """One message from the link. Whatever it holds is written to the inbox before this returns (the
        link acknowledges it to the broker only then), except cancels and forgets, which are acted on at once."""
        if redelivered and topic != p.CANCEL_TOPIC and self.inbox is not None and self.inbox.holds(topic, payload):
            logger.info("message on %s delivered again by the broker: already taken, not answered twice", topic)
            return
        self._handle(topic, payload)

    def _handle(self, topic: str, payload: bytes, recovered: Entry | None = None) -> None:
        """Parse, keep in the inbox (a ``recovered`` request already has its row) and admit."""
        entry = recovered.id if recovered is not None else None
        max_bytes = self.mqtt.max_payload_bytes
        try:
            if topic == p.CANCEL_TOPIC:
                self._on_cancel(p.parse_cancel(payload, max_bytes=max_bytes))
                return
            if topic == p.FORGET_TOPIC:
                self._spawn(self._forget(p.parse_forget(payload, max_bytes=max_bytes), entry))
                return
            if topic == p.TASK_TOPIC:
                request = p.parse_task(payload, max_bytes=max_bytes)
            elif topic.startswith(p.STT_PREFIX):
                request = p.parse_stt(topic, payload, max_bytes=max_bytes)
            else:
                logger.warning("message on unexpected topic %s ignored", topic)
                return
        except p.PayloadError as exc:
            self.stats.errors += 1
            logger.warning(
                "bad payload on %s (device=%s task=%s): %s: %s",
                topic,
                exc.device_id,
                exc.task_id,
                exc.code,
                exc.message,
            )
            if entry is None:
                entry = self._keep(topic, payload, exc.task_id)
            self._spawn(self._reply_error(entry, exc.device_id, exc.task_id, exc.code, exc.message))
            return
        if recovered is not None:
            if recovered.task_id is not None:  # an STT request keeps the task id it was first given
                request.task_id = recovered.task_id
            if request.timestamp is None:  # its age counts from when it first arrived
                request.timestamp = recovered.received_at
        request.inbox_id = entry if entry is not None else self._keep(topic, payload, request.task_id)
        self._accept(request)

    def _keep(self, topic: str, payload: bytes, task_id: str | None) -> int | None:
        """Write the message to the inbox; None (served from memory only) when the inbox cannot take it."""
        if self.inbox is None:
            return None
        try:
            return self.inbox.add(topic, payload, task_id)
        except sqlite3.Error as exc:
            self.stats.errors += 1
            logger.error(
                "request inbox %s refused a write (%s): this request would not survive a crash", self.inbox.path, exc
            )
            return None

    def _settle(self, entry: int | None) -> None:
        """The request of inbox row ``entry`` got its final answer or refusal."""
        if entry is None or self.inbox is None:
            return
        try:
            self.inbox.settle(entry)
        except sqlite3.Error as exc:  # it will be answered once more after a restart, never lost
            logger.error("request inbox %s: row %d could not be settled (%s)", self.inbox.path, entry, exc)

    def _recover(self) -> None:
        """Answer the requests a previous process took but did not settle (it was killed or crashed)."""
        if self.inbox is None:
            return
        entries = self.inbox.unsettled()
        if not entries:
            return
        logger.warning("%d request(s) taken before the last stop were not answered; answering them first", len(entries))
        self.stats.recovered_total += len(entries)
        for entry in entries:
            self._handle(entry.topic, entry.payload, entry)

    async def _reply_error(
        self, entry: int | None, device_id: str | None, task_id: str | None, code: str, message: str
    ) -> None:
        await self.publish_error(device_id, task_id, code, message)
        self._settle(entry)

    def _refuse(self, request: p.Request, code: str, message: str) -> None:
        if code == "overloaded":  # it says "try again shortly": a retry with the same task id is no duplicate
            self._recent.forget(f"{request.device_id}/{request.task_id}")
        self._spawn(self._reply_error(request.inbox_id, request.device_id, request.task_id, code, message))

    def _accept(self, request: p.Request) -> None:
        log = request_log(request)
        if request.input_type != "stt" and self._recent.seen_before(f"{request.device_id}/{request.task_id}"):
            log.info(
                "duplicate task %s from %s dropped (already answered or in progress)",
                request.task_id,
                request.device_id,
            )
            self._settle(request.inbox_id)  # the first copy's own row settles when it is answered
            return
        age = time.time() - request.timestamp if request.timestamp is not None else 0.0
        limit = self.settings.stale_request_seconds
        if age > limit:
            log.warning("stale request %s from %s (%.0f s old) refused", request.task_id, request.device_id, age)
            self._refuse(
                request,
                "stale_request",
                f"the request is {age:.0f} s old; requests older than {limit:.0f} s are not answered",
            )
            return
        if not request.text.strip():
            log.info("empty request %s from %s refused", request.task_id, request.device_id)
            self._refuse(request, "empty_input", "the request holds no text to answer")
            return
        try:
            displaced = self._scheduler.submit(request)
        except Overloaded as exc:
            self.stats.errors += 1
            log.warning("overloaded: %s; request %s refused", exc, request.task_id)
            self._refuse(request, "overloaded", f"the server is busy ({exc}); try again shortly")
            return
        except QueueClosed:
            self._refuse(request, "shutting_down", "the server is shutting down")
            return
        if displaced is not None:
            self._refuse_displaced(displaced, request.device_id)
        log.info(
            "queued %s request %s from %s (%d waiting)",
            request.input_type,
            request.task_id,
            request.device_id,
            self._scheduler.depth,
        )

    def _refuse_displaced(self, displaced: p.Request, newcomer: str) -> None:
        """``displaced`` was waiting on the device holding the most slots of a full queue: refuse it."""
        self.stats.errors += 1
        request_log(displaced).warning(
            "overloaded: waiting request %s of %s refused to make room for %s",
            displaced.task_id,
            displaced.device_id,
            newcomer,
        )
        held = self._scheduler.waiting(displaced.device_id)
        self._refuse(
            displaced,
            "overloaded",
            f"the server is busy: all NAILA_QUEUE_LIMIT={self.settings.queue_limit} places are taken and this device"
            f" held the most ({held + 1}), so its newest request made room for another device; try again shortly",
        )

    def _on_cancel(self, cancel: p.CancelRequest) -> None:
        waiting = self._scheduler.remove(cancel.device_id, cancel.task_id)
        if self.replica is not None:  # a request still in the shared queue: whichever replica gets there first
            self.replica.on_cancel(cancel)
        for request in waiting:
            self._spawn(self._publish_cancelled_unstarted(request))
        running = self._running.get(cancel.device_id)
        if running is not None and running.answered:
            logger.info("cancel from %s: %s is already answered", cancel.device_id, running.request.task_id)
        elif running is not None and cancel.task_id in (None, running.request.task_id):
            running.cancel_reason = "barge_in"
            running.task.cancel()
            logger.info("barge-in: cancelling %s of %s", running.request.task_id, cancel.device_id)
        elif not waiting:
            logger.info("cancel from %s: nothing to cancel (task %s)", cancel.device_id, cancel.task_id)

    async def _forget(self, forget: p.ForgetRequest, entry: int | None) -> None:
        """Forget a device (``naila/ai/memory/forget``): its conversation and its facts; the answer goes to
        ``naila/ai/memory/forgotten``, a failure to the device's error topic. A turn of the device in progress
        is let finish first, so it cannot store itself after the forget."""
        running = self._running.get(forget.device_id)
        if running is not None:
            await asyncio.wait({running.task}, timeout=self.settings.shutdown_grace_seconds + CANCEL_WAIT_SECONDS)
        try:
            had = await self._saver.aget_tuple({"configurable": {"thread_id": forget.device_id}}) is not None
            await self._saver.adelete_thread(forget.device_id)
            facts = await self.user_facts.aforget(forget.device_id) if self.user_facts is not None else 0
        except Exception as exc:  # the database failed: say so; the server keeps serving
            self.stats.errors += 1
            logger.error("could not forget device %s: %s", forget.device_id, exc)
            await self._reply_error(
                entry, forget.device_id, forget.task_id, "memory_unavailable", f"the memory could not be changed: {exc}"
            )
            return
        logger.info("forgot device %s (conversation: %s, %d facts)", forget.device_id, had, facts)
        await self.publish(p.FORGOTTEN_TOPIC, p.forgotten_payload(forget, conversation=had, facts=facts))
        self._settle(entry)

    async def _publish_cancelled_unstarted(self, request: p.Request) -> None:
        await self.publish(p.stream_topic(request.device_id), p.stream_payload(request.task_id, 0, "", final=True))
        request_log(request).info("request %s cancelled while waiting", request.task_id)
        # Nothing answered it (no model, pattern or action): the response says so instead of "pattern".
        payload = p.response_payload(request, {"finish_reason": "cancelled"})
        payload["response"]["source"] = CANCELLED_SOURCE
        await self.publish(p.RESPONSE_TOPIC, payload)
        self._settle(request.inbox_id)

    # ------------------------------------------------------------------ workers

    def mark_answered(self, device_id: str, text: str | None = None) -> None:
        """The device's final answer (``text``) is out: a cancel now only stops storing the turn."""
        if (running := self._running.get(device_id)) is not None:
            running.answered = True
            if self.replica is not None:  # the queue row says so: a replica taking it over does not answer again
                self.replica.answered(running.request.inbox_id, text)
            else:
                self._settle(running.request.inbox_id)

    def cancel_reason(self, device_id: str) -> str | None:
        running = self._running.get(device_id)
        return running.cancel_reason if running else None

    async def _worker(self) -> None:
        while True:
            request = await self._scheduler.next()
            if request is None:
                return
            try:
                await self.serve_request(request)
            finally:
                self._scheduler.done(request.device_id)
                self._settle(request.inbox_id)  # answered, failed with an error reply, or cancelled

    async def serve_request(self, request: p.Request) -> None:
        """Answer ``request`` (a cancel or the shutdown may stop it); returns when it is over."""
        task = asyncio.create_task(self._answer(request), name=f"answer {request.task_id}")
        self._running[request.device_id] = _Running(request, task)
        try:
            await asyncio.wait({task})  # not `await task`: a cancelled answer must not stop the worker
        finally:
            self._running.pop(request.device_id, None)

    async def _answer(self, request: p.Request) -> None:
        """One turn: the turn layer's events mapped to the device's topics."""
        assert self.turns is not None
        self.stats.requests_total += 1
        turn = self.turns.start(
            TurnRequest(
                text=request.text,
                device_id=request.device_id,
                thread_id=request.thread_id,
                task_id=request.task_id,
                input_type=request.input_type,
                confidence=request.confidence,
                received=request.received,
            )
        )
        await consume(turn, TurnPublisher(self, request).handle)
