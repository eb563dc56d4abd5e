"""The AI server: MQTT in, the graph, MQTT out (../shared/PROTOCOL.md).

``async with NailaServer(...) as server: await server.wait_for_stop()`` — startup and shutdown sit
next to each other (STYLE.md). Model work runs in the chat model's worker thread and memory uses the
async checkpointer, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiomqtt
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk

from llm.errors import GenerationCancelledError, LLMError, ModelLoadError, ModelNotFoundError
from naila_graph import protocol as p
from naila_graph.graph import build_graph, make_generator, turn_config, turn_input
from naila_graph.memory import aprune_thread, open_async_checkpointer
from naila_graph.scheduler import FairScheduler, Overloaded, QueueClosed, RecentIds
from naila_graph.settings import MQTTSettings, NailaSettings
from nodes.finalize import speakable, speakable_sentences
from nodes.generate_response import ResponseGenerator
from nodes.speech import SentenceSplitter, clean_for_speech, ends_with_question, has_control_markup

logger = logging.getLogger("naila.server")

SERVER_WORKERS = 2  # one request may wait for the model while another gets a pattern/action answer
_PUBLISH_ATTEMPTS = 3


def _server_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("naila-graph")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _RequestLog(logging.LoggerAdapter):
    """Prefixes ``device=… task=…`` so the log can be grepped per robot and per request."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"device={extra['device_id']} task={extra['task_id']} {msg}", kwargs


def _cache_stats(model: Any) -> dict[str, Any] | None:
    stats = getattr(model, "state_cache_stats", None)
    if stats is None:
        return None
    import dataclasses

    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    return dict(vars(stats))


def _log(request: p.Request) -> _RequestLog:
    return _RequestLog(logger, {"device_id": request.device_id, "task_id": request.task_id})


@dataclass
class ServerStats:
    started: float = field(default_factory=time.monotonic)
    messages_in: int = 0
    messages_out: int = 0
    errors: int = 0
    requests_total: int = 0
    failures_total: int = 0
    llm_answers: int = 0
    tokens_per_second_sum: float = 0.0
    prefills: int = 0
    prefill_tokens: int = 0

    def record_tps(self, tps: float | None) -> None:
        if tps:
            self.llm_answers += 1
            self.tokens_per_second_sum += tps

    @property
    def avg_tokens_per_second(self) -> float | None:
        return round(self.tokens_per_second_sum / self.llm_answers, 2) if self.llm_answers else None


@dataclass
class _Running:
    request: p.Request
    task: asyncio.Task[None]
    cancel_reason: str | None = None
    answered: bool = False  # the final answer is out; only memory is being written


def early_answer(state: dict[str, Any], raw: str, finish_reason: str) -> dict[str, Any]:
    """The final answer of a turn whose model text passed validation, as finalize will store it."""
    text = speakable(raw)
    return {
        **state,
        "response_text": text,
        "response_source": "llm",
        "fallback_reason": None,
        "finish_reason": finish_reason,
        "expects_reply": ends_with_question(text),
    }


class _SentenceStream:
    """Publishes an answer sentence by sentence while it is generated (PROTOCOL.md stream topic)."""

    def __init__(self, server: NailaServer, request: p.Request) -> None:
        self.server = server
        self.request = request
        self.topic = p.stream_topic(request.device_id)
        self.splitter = SentenceSplitter()
        self.sent: list[str] = []
        self.seq = 0
        self.raw = ""
        self.closed = False  # the final message went out as soon as the model finished

    async def _send(self, text: str, *, final: bool, replaced: bool = False) -> None:
        payload = p.stream_payload(self.request.task_id, self.seq, text, final=final, replaced=replaced)
        self.seq += 1
        await self.server.publish(self.topic, payload)

    async def feed(self, text: str) -> None:
        self.raw += text
        for sentence in self.splitter.feed(text):
            cleaned = clean_for_speech(sentence)
            if cleaned:
                await self._send(cleaned, final=False)
                self.sent.append(cleaned)

    def model_done(self) -> dict[str, Any] | None:
        """The model finished: the last stream message, to send now rather than after memory is written.

        Only when the text will pass the generate_response validation unchanged; otherwise None: wait for
        the graph's final answer (the fallback may replace it). The caller publishes it together with the
        final answer, so neither waits for the broker's acknowledgement of the other.
        """
        if self.closed or not self.raw.strip() or has_control_markup(self.raw):
            return None
        rest = self.splitter.flush()
        tail = clean_for_speech(rest) if rest else ""
        if not self.sent and not tail:
            return None
        if tail:
            self.sent.append(tail)
        payload = p.stream_payload(self.request.task_id, self.seq, tail, final=True)
        self.seq += 1
        self.closed = True
        return payload

    async def finish(self, answer: str) -> None:
        """The last message; tells the robot to drop what it had when the answer was replaced."""
        if self.closed:
            if " ".join(self.sent) != answer:
                await self._send(answer, final=True, replaced=True)
            return
        rest = self.splitter.flush()
        tail = clean_for_speech(rest) if rest else ""
        if self.sent and " ".join([*self.sent, tail] if tail else self.sent) == answer:
            await self._send(tail, final=True)
        elif not self.sent:
            sentences = speakable_sentences(answer) or [answer]
            for i, sentence in enumerate(sentences):
                await self._send(sentence, final=i == len(sentences) - 1)
        else:
            await self._send(answer, final=True, replaced=True)

    async def cancelled(self) -> str:
        await self._send("", final=True)
        return " ".join(self.sent)


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
        self.degraded_reason: str | None = None
        self.llm_status = "unloaded"
        self.hardware = "cpu"
        self.startup_phases: dict[str, float] = {}
        self._graph: Any = None
        self._saver: Any = None
        self._generator: ResponseGenerator | None = None
        self._stack = contextlib.AsyncExitStack()
        self._scheduler = FairScheduler(self.settings.queue_limit)
        self._recent = RecentIds(ttl=max(300.0, self.settings.stale_request_seconds * 2))
        self._running: dict[str, _Running] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._workers: list[asyncio.Task[None]] = []
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._disconnect = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stop_reason = "stopped"
        self._connection: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._health: asyncio.Task[None] | None = None
        self._accepting = False
        self._load_time_ms: float | None = None
        self._tls_context: ssl.SSLContext | None = None

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
        async with self._phase("configuration"):
            from llm.hardware import detect_hardware

            self.hardware = detect_hardware().acceleration
            self._tls_context = self.mqtt.tls_context()  # unusable certificate files stop the start here
            logger.info(
                "broker %s:%s (MQTT %s, client id %s), memory %s, queue limit %d",
                self.mqtt.broker_host,
                self.mqtt.broker_port,
                self.mqtt.protocol,
                self.mqtt.client_id,
                self.settings.resolved_memory_url().split("@")[-1],
                self.settings.queue_limit,
            )
        async with self._phase("load AI models"):
            await self._load_model()
        async with self._phase("build graph and memory"):
            saver = await self._stack.enter_async_context(open_async_checkpointer(self.settings.resolved_memory_url()))
            self._saver = saver
            model = self.chat_model if self.degraded_reason is None else None
            self._generator = make_generator(
                model, self.settings, clock=self._clock, degraded_reason=self.degraded_reason
            )
            self._graph = build_graph(
                model,
                saver,
                settings=self.settings,
                clock=self._clock,
                degraded_reason=self.degraded_reason,
                generator=self._generator,
            )
        async with self._phase("prime prompt cache"):
            await self._prime_cache()
        async with self._phase("connect MQTT and subscribe"):
            self._connection = asyncio.create_task(self._connection_loop(), name="mqtt connection")
            waiter = asyncio.create_task(self._connected.wait())
            stopper = asyncio.create_task(self._stop_requested.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if not self._connected.is_set():
                raise RuntimeError("stopped before the broker could be reached")
        async with self._phase("start health monitor"):
            self._health = asyncio.create_task(self._health_loop(), name="health monitor")
            self._workers = [
                asyncio.create_task(self._worker(), name=f"worker {i}") for i in range(self._workers_count)
            ]
            self._accepting = True
        await self.publish(p.STARTUP_TOPIC, self._startup_payload())
        logger.info(
            "NAILA AI server ready%s (startup phases: %s)",
            f" in DEGRADED mode ({self.degraded_reason}): the pattern responder answers"
            if self.degraded_reason
            else "",
            ", ".join(f"{k} {v:.0f} ms" for k, v in self.startup_phases.items()),
        )

    async def _load_model(self) -> None:
        if self.chat_model is None and self._model_factory is not None:
            self.chat_model = self._model_factory()
        if self.chat_model is None:
            from llm import load_chat_model

            self.chat_model = load_chat_model()
        model = self.chat_model
        load = getattr(model, "load", None)
        if load is None:  # a model without weights to load (e.g. a fake in tests)
            self.llm_status = "loaded"
            return
        logger.info("loading model %s ...", getattr(model, "model_path", None) or "(default bundle)")
        started = time.perf_counter()
        progress = asyncio.create_task(self._report_progress(started))
        try:
            await asyncio.to_thread(load)
        except LLMError as exc:
            self.degraded_reason = (
                "model_not_found"
                if isinstance(exc, ModelNotFoundError)
                else "model_load_failed"
                if isinstance(exc, ModelLoadError)
                else "model_error"
            )
            self.llm_status = "error"
            logger.error(
                "model load failed (%s): %s -- DEGRADED mode, the pattern responder answers", self.degraded_reason, exc
            )
        else:
            self.llm_status = "loaded"
            self._load_time_ms = round((time.perf_counter() - started) * 1000, 1)
            logger.info("model %s loaded in %.0f ms", getattr(model, "model_name", "?"), self._load_time_ms)
        finally:
            progress.cancel()

    @staticmethod
    async def _report_progress(started: float) -> None:
        while True:
            await asyncio.sleep(5)
            logger.info("still loading the model (%.0f s) ...", time.perf_counter() - started)

    async def _prime_cache(self) -> None:
        """Evaluate the persona once so the first request does not pay for it (DESIGN.md decision 2)."""
        if self.degraded_reason is not None or not hasattr(self.chat_model, "prompt_tokens"):
            return
        from langchain_core.messages import HumanMessage, SystemMessage

        from prompts.persona import load_persona

        messages = [SystemMessage(load_persona(self.settings.system_prompt_file)), HumanMessage("Hi")]
        try:
            await self.chat_model.ainvoke(messages, max_tokens=1)  # type: ignore[union-attr]
        except Exception as exc:  # priming is an optimisation; the first request will tell the real story
            logger.warning("could not prime the prompt cache: %s", exc)

    def request_stop(self, reason: str = "stopped") -> None:
        """Ask the server to shut down (signal handlers call this)."""
        self._stop_reason = reason
        self._stop_requested.set()

    async def wait_for_stop(self) -> str:
        await self._stop_requested.wait()
        return self._stop_reason

    async def stop(self, reason: str = "stopped") -> None:
        """Graceful shutdown: no new requests, in-flight ones finish or are cancelled, then disconnect."""
        logger.info("shutdown (%s): no new requests", reason)
        self._accepting = False
        self._stop_requested.set()
        if self._reader is not None:
            self._reader.cancel()
        for request in self._scheduler.drain():
            await self.publish_error(request.device_id, request.task_id, "shutting_down", "the server is shutting down")
        running = [r.task for r in self._running.values()]
        if running:
            grace = self.settings.shutdown_grace_seconds
            logger.info("waiting up to %.1f s for %d answer(s) in progress", grace, len(running))
            _, pending = await asyncio.wait(running, timeout=grace)
            for item in list(self._running.values()):
                if item.task in pending:
                    item.cancel_reason = "shutdown"
                    item.task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._background:
            await asyncio.wait(self._background, timeout=5)
        if self._connected.is_set():
            await self.publish(
                p.SHUTDOWN_TOPIC,
                {
                    "timestamp": p.utc_timestamp(),
                    "event": "server_shutdown",
                    "reason": reason,
                    "uptime_seconds": round(time.monotonic() - self.stats.started, 1),
                },
            )
            await self.publish(p.STATUS_TOPIC, self._status("offline"), retain=True)
        if self._health is not None:
            self._health.cancel()
            await asyncio.gather(self._health, return_exceptions=True)
        self._disconnect.set()
        if self._connection is not None:
            try:
                await asyncio.wait_for(self._connection, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._connection.cancel()
            except Exception as exc:
                logger.warning("disconnect: %s", exc)
        unload = getattr(self.chat_model, "unload", None)
        if unload is not None and getattr(self.chat_model, "is_loaded", False):
            await asyncio.to_thread(unload)
            self.llm_status = "unloaded"
        await self._stack.aclose()
        logger.info("shutdown complete after %.1f s of uptime", time.monotonic() - self.stats.started)

    # ------------------------------------------------------------------ MQTT connection

    def _client_options(self) -> dict[str, Any]:
        m = self.mqtt
        v5 = m.protocol == "5"
        options: dict[str, Any] = {
            "hostname": m.broker_host,
            "port": m.broker_port,
            "identifier": m.client_id,
            "username": m.username,
            "password": m.password,
            "keepalive": m.keepalive,
            "protocol": aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            "will": aiomqtt.Will(p.STATUS_TOPIC, p.encode(self._status("offline")), qos=1, retain=True),
            "timeout": 10,
            # without it, Nagle holds a PUBLISH behind the previous packet's delayed ACK: ~40 ms per hop
            "socket_options": ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
        }
        if v5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = m.session_expiry_seconds
            options["clean_start"] = m.clean_session
            options["properties"] = props
        else:
            options["clean_session"] = m.clean_session
        if self._tls_context is not None:
            options["tls_context"] = self._tls_context
        return options

    async def _connection_loop(self) -> None:
        """Connect, subscribe, read; on a lost connection retry with backoff until shutdown."""
        backoff = 0.5
        attempt = 0
        while not self._disconnect.is_set():
            attempt += 1
            try:
                async with aiomqtt.Client(**self._client_options()) as client:
                    attempt, backoff = 0, 0.5
                    subscriptions: list[tuple[str, int]] = [(topic, self.mqtt.qos) for topic in p.INPUT_TOPICS]
                    await client.subscribe(subscriptions)
                    await client.publish(p.STATUS_TOPIC, p.encode(self._status("online")), qos=1, retain=True)
                    self._client = client
                    self._connected.set()
                    logger.info(
                        "connected to %s:%s, subscribed to %s",
                        self.mqtt.broker_host,
                        self.mqtt.broker_port,
                        ", ".join(p.INPUT_TOPICS),
                    )
                    if self._reader is None or not self._stop_requested.is_set():
                        self._reader = asyncio.create_task(self._read(client), name="mqtt reader")
                    disconnect = asyncio.create_task(self._disconnect.wait())
                    done, _ = await asyncio.wait({self._reader, disconnect}, return_when=asyncio.FIRST_COMPLETED)
                    disconnect.cancel()
                    if self._reader in done and not self._reader.cancelled() and self._reader.exception():
                        raise self._reader.exception()  # type: ignore[misc]
                    if not self._disconnect.is_set():  # reader cancelled at shutdown: stay connected to publish
                        await self._disconnect.wait()
            except aiomqtt.MqttError as exc:
                if self._disconnect.is_set():
                    break
                self.stats.errors += 1
                level = logging.WARNING if attempt <= 1 or attempt % 10 == 0 else logging.DEBUG
                logger.log(
                    level,
                    "broker %s:%s unreachable or lost (%s); retrying in %.1f s",
                    self.mqtt.broker_host,
                    self.mqtt.broker_port,
                    exc,
                    backoff,
                )
            finally:
                self._client = None
                self._connected.clear()
                if self._reader is not None and not self._reader.done():
                    self._reader.cancel()
            if self._disconnect.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnect.wait(), timeout=backoff)
            backoff = min(backoff * 2, 10.0)

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.stats.messages_in += 1
            payload = message.payload
            if isinstance(payload, str):
                payload = payload.encode("utf-8")
            elif not isinstance(payload, bytes | bytearray):
                payload = b"" if payload is None else str(payload).encode()
            try:
                self._on_message(str(message.topic), bytes(payload))
            except Exception:  # never let one message stop the reader
                self.stats.errors += 1
                logger.exception("unexpected error handling a message on %s", message.topic)

    async def publish(self, topic: str, payload: dict[str, Any], *, retain: bool = False) -> bool:
        """Publish JSON; waits for a reconnect when the broker is briefly gone. False when it gave up."""
        data = p.encode(payload)
        for _ in range(_PUBLISH_ATTEMPTS):
            client = self._client
            if client is None or not self._connected.is_set():
                try:
                    await asyncio.wait_for(self._connected.wait(), timeout=15)
                except TimeoutError:
                    break
                continue
            try:
                await client.publish(topic, data, qos=self.mqtt.qos, retain=retain)
            except aiomqtt.MqttError as exc:
                logger.warning("publish to %s failed (%s); will retry after reconnecting", topic, exc)
                await asyncio.sleep(0.2)
                continue
            self.stats.messages_out += 1
            return True
        self.stats.errors += 1
        logger.error("gave up publishing to %s: broker unreachable", topic)
        return False

    async def publish_error(self, device_id: str | None, task_id: str | None, code: str, message: str) -> None:
        if device_id is None:
            return
        await self.publish(p.error_topic(device_id), p.error_payload(task_id, code, message))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ requests

    def _on_message(self, topic: str, payload: bytes) -> None:
        max_bytes = self.mqtt.max_payload_bytes
        try:
            if topic == p.CANCEL_TOPIC:
                self._on_cancel(p.parse_cancel(payload, max_bytes=max_bytes))
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
            self._spawn(self.publish_error(exc.device_id, exc.task_id, exc.code, exc.message))
            return
        self._accept(request)

    def _accept(self, request: p.Request) -> None:
        log = _log(request)
        if request.input_type != "stt" and self._recent.seen_before(f"{request.device_id}/{request.task_id}"):
            log.info(
                "duplicate task %s from %s dropped (already answered or in progress)",
                request.task_id,
                request.device_id,
            )
            return
        age = time.time() - request.timestamp if request.timestamp is not None else 0.0
        if age > self.settings.stale_request_seconds:
            log.warning("stale request %s from %s (%.0f s old) refused", request.task_id, request.device_id, age)
            self._spawn(
                self.publish_error(
                    request.device_id,
                    request.task_id,
                    "stale_request",
                    f"the request is {age:.0f} s old; requests older than {self.settings.stale_request_seconds:.0f} s"
                    " are not answered",
                )
            )
            return
        if not request.text.strip():
            self._spawn(
                self.publish_error(
                    request.device_id, request.task_id, "empty_input", "the request holds no text to answer"
                )
            )
            return
        try:
            self._scheduler.submit(request)
        except Overloaded as exc:
            self.stats.errors += 1
            log.warning("overloaded: %s; request %s refused", exc, request.task_id)
            self._spawn(
                self.publish_error(
                    request.device_id, request.task_id, "overloaded", f"the server is busy ({exc}); try again shortly"
                )
            )
            return
        except QueueClosed:
            self._spawn(
                self.publish_error(request.device_id, request.task_id, "shutting_down", "the server is shutting down")
            )
            return
        log.info(
            "queued %s request %s from %s (%d waiting)",
            request.input_type,
            request.task_id,
            request.device_id,
            self._scheduler.depth,
        )

    def _on_cancel(self, cancel: p.CancelRequest) -> None:
        waiting = self._scheduler.remove(cancel.device_id, cancel.task_id)
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

    async def _publish_cancelled_unstarted(self, request: p.Request) -> None:
        await self.publish(p.stream_topic(request.device_id), p.stream_payload(request.task_id, 0, "", final=True))
        await self.publish(
            p.RESPONSE_TOPIC, p.response_payload(request, {"finish_reason": "cancelled", "response_source": None})
        )

    async def _worker(self) -> None:
        while True:
            request = await self._scheduler.next()
            if request is None:
                return
            task = asyncio.create_task(self._answer(request), name=f"answer {request.task_id}")
            self._running[request.device_id] = _Running(request, task)
            try:
                await asyncio.wait({task})  # not `await task`: a cancelled answer must not stop the worker
            finally:
                self._running.pop(request.device_id, None)
                self._scheduler.done(request.device_id)

    async def _answer(self, request: p.Request) -> None:
        log = _log(request)
        self.stats.requests_total += 1
        stream = _SentenceStream(self, request)
        state: dict[str, Any] = {}
        inputs = turn_input(
            request.text,
            device_id=request.device_id,
            task_id=request.task_id,
            input_type=request.input_type,
            confidence=request.confidence,
        )
        config = turn_config(
            request.thread_id, device_id=request.device_id, task_id=request.task_id, input_type=request.input_type
        )
        started = time.monotonic()
        timeline: dict[str, float] = {}  # ms since the turn started: where the time of an answer goes

        def mark(name: str) -> None:
            timeline.setdefault(name, round((time.monotonic() - started) * 1000, 1))

        published: dict[str, Any] | None = None  # the final answer, sent as soon as the model finished
        try:
            async for mode, payload in self._graph.astream(
                inputs, config, stream_mode=["messages", "values"], durability="exit"
            ):
                if mode == "messages":
                    chunk, meta = payload
                    if isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "generate_response":
                        if chunk.text:
                            mark("first_token")
                            await stream.feed(chunk.text)
                            if stream.sent:
                                mark("first_sentence_sent")
                        finish_reason = chunk.response_metadata.get("finish_reason")
                        if finish_reason:
                            mark("model_done")
                            last = stream.model_done()
                            if last is not None:
                                # The answer is final: the robot gets it now, memory is written after. Both
                                # messages go out at once (in this order); their acknowledgements are awaited
                                # together, not one round trip to the broker after the other.
                                published = early_answer(state, stream.raw, finish_reason)
                                await asyncio.gather(
                                    self.publish(stream.topic, last),
                                    self.publish(p.RESPONSE_TOPIC, p.response_payload(request, published)),
                                )
                                mark("answer_published")
                                if (running := self._running.get(request.device_id)) is not None:
                                    running.answered = True
                else:
                    state = payload
        except (asyncio.CancelledError, GenerationCancelledError):
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            running = self._running.get(request.device_id)
            reason = running.cancel_reason if running else None
            if published is not None:
                log.warning("answer %s was sent but storing the turn was cancelled (%s)", request.task_id, reason)
                return
            log.info("answer %s cancelled (%s)", request.task_id, reason or "cancelled")
            partial = await stream.cancelled()
            state = {
                **state,
                "response_text": partial,
                "finish_reason": "cancelled",
                "response_source": state.get("response_source") or ("llm" if partial else None),
            }
            await self.publish(p.RESPONSE_TOPIC, p.response_payload(request, state))
            return
        except Exception as exc:
            self.stats.failures_total += 1
            if published is not None:  # one final answer per request: it is out, only memory failed
                log.exception("answer %s was sent but the turn could not be stored", request.task_id)
                return
            log.exception("answer %s failed", request.task_id)
            await self.publish_error(
                request.device_id, request.task_id, "internal_error", f"the answer failed: {type(exc).__name__}"
            )
            return
        mark("graph_done")
        answer = state.get("response_text", "")
        if published is None:
            await stream.finish(answer)
            await self.publish(p.RESPONSE_TOPIC, p.response_payload(request, state))
            mark("answer_published")
        elif published["response_text"] != answer:
            log.warning("answer %s: stored text differs from the text sent: %r", request.task_id, answer)
        metrics = self._metrics_payload(request, state, started)
        metrics["timeline_ms"] = timeline
        await self.publish(p.METRICS_TOPIC, metrics)
        if state.get("fallback_reason") and state.get("response_source") == "pattern":
            self.stats.failures_total += 1
        self.stats.record_tps(metrics.get("tokens_per_second"))
        log.info(
            "answered %s for %s: source=%s intent=%s fallback=%s %s",
            request.task_id,
            request.device_id,
            state.get("response_source"),
            state.get("intent"),
            state.get("fallback_reason"),
            f"{metrics['tokens_per_second']} tok/s" if metrics.get("tokens_per_second") else "",
        )
        if state.get("messages") and self._generator is not None and hasattr(self.chat_model, "aprefill"):
            self._spawn(self._prefill_next_turn(request, state["messages"]))
        self._spawn(self._prune(request))

    async def _prune(self, request: p.Request) -> None:
        """Drop the thread's older checkpoints (each holds the whole conversation); off the answer's path."""
        if self._saver is None:
            return
        try:
            removed = await aprune_thread(self._saver, request.thread_id)
        except Exception:  # pruning is housekeeping: never fail a turn for it
            _log(request).exception("could not prune the old checkpoints of %s", request.thread_id)
            return
        if removed:
            _log(request).debug("pruned %d old checkpoint rows of %s", removed, request.thread_id)

    async def _prefill_next_turn(self, request: p.Request, messages: list[Any]) -> None:
        """While the robot speaks the answer, evaluate what the device's next prompt starts with (persona +
        history including this turn), so its next turn only evaluates the new guidance and message.
        Gives way to any request: skipped when one waits, stopped between small chunks when one comes."""
        model = self.chat_model
        generator = self._generator
        if self.degraded_reason is not None or generator is None or model is None:
            return

        def busy() -> bool:
            return self._scheduler.depth > 0 or self._stop_requested.is_set()

        if busy():
            return
        started = time.perf_counter()
        try:
            prefix = await asyncio.to_thread(generator.next_turn_prefix, messages)
            if busy():
                return
            evaluated = await model.aprefill(  # type: ignore[attr-defined]
                prefix, should_stop=busy, conversation=request.thread_id, next_role="human"
            )
        except Exception as exc:  # an optimisation only: the next turn evaluates its whole prompt
            _log(request).warning("prefill of the next turn failed: %s", exc)
            return
        if evaluated:
            self.stats.prefills += 1
            self.stats.prefill_tokens += evaluated
            _log(request).debug(
                "prefilled %d tokens of the next turn in %.0f ms", evaluated, (time.perf_counter() - started) * 1000
            )

    # ------------------------------------------------------------------ payloads

    def _status(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "client_id": self.mqtt.client_id,
            "server_version": _server_version(),
            "timestamp": p.utc_timestamp(),
        }

    def _model_name(self) -> str | None:
        return getattr(self.chat_model, "model_name", None) if self.chat_model is not None else None

    def _startup_payload(self) -> dict[str, Any]:
        return {
            "timestamp": p.utc_timestamp(),
            "event": "server_startup",
            "server_version": _server_version(),
            "llm": {
                "status": self.llm_status,
                "model": self._model_name(),
                "load_time_ms": self._load_time_ms,
                "hardware": self.hardware,
            },
            "degraded": self.degraded_reason is not None,
            "degraded_reason": self.degraded_reason,
            "startup_phases_ms": self.startup_phases,
        }

    def _metrics_payload(self, request: p.Request, state: dict[str, Any], started: float) -> dict[str, Any]:
        m = state.get("metrics") or {}
        source = state.get("response_source")
        from_model = source == "llm"

        def model_field(key: str, digits: int = 1) -> Any:
            value = m.get(key) if from_model else None
            return round(value, digits) if isinstance(value, float) else value

        return {
            "llm_status": self.llm_status,
            "model_name": m.get("model_name") if from_model else None,
            "inference_time_ms": model_field("inference_time_ms"),
            "tokens_generated": model_field("output_tokens"),
            "tokens_per_second": model_field("tokens_per_second", 2),
            "time_to_first_token_ms": model_field("time_to_first_token_ms"),
            "context_length": model_field("input_tokens"),
            "cached_prompt_tokens": model_field("cached_tokens"),
            "n_ctx": getattr(self.chat_model, "n_ctx", None) if from_model else None,
            "temperature": getattr(self.chat_model, "temperature", None) if from_model else None,
            "hardware_acceleration": self.hardware if from_model else None,
            "source": source,
            "fallback_reason": state.get("fallback_reason"),
            "finish_reason": state.get("finish_reason"),
            "intent": state.get("intent"),
            "total_time_ms": round((time.monotonic() - request.received) * 1000, 1),
            "queue_time_ms": round((started - request.received) * 1000, 1),
            "device_id": request.device_id,
            "task_id": request.task_id,
            "timestamp": p.utc_timestamp(),
        }

    def health_payload(self) -> dict[str, Any]:
        s = self.stats
        return {
            "timestamp": p.utc_timestamp(),
            "system": {
                "uptime_seconds": round(time.monotonic() - s.started, 1),
                "status": "degraded" if self.degraded_reason else "healthy",
                "memory_usage_mb": round(_rss_mb(), 1),
            },
            "mqtt_service": {
                "status": "connected" if self._connected.is_set() else "disconnected",
                "message_count": s.messages_in + s.messages_out,
                "error_count": s.errors,
            },
            "ai_services": {
                "llm": {
                    "status": self.llm_status,
                    "model": self._model_name(),
                    "hardware": self.hardware,
                    "degraded": self.degraded_reason is not None,
                    "degraded_reason": self.degraded_reason,
                    "queue_depth": self._scheduler.depth,
                    "in_progress": len(self._running),
                    "requests_total": s.requests_total,
                    "failures_total": s.failures_total,
                    "avg_tokens_per_second": s.avg_tokens_per_second,
                    "prompt_state_cache": _cache_stats(self.chat_model),
                    "prefills": s.prefills,
                    "prefill_tokens": s.prefill_tokens,
                }
            },
        }

    async def _health_loop(self) -> None:
        while True:
            await self.publish(p.HEALTH_TOPIC, self.health_payload())
            await asyncio.sleep(self.settings.health_interval_seconds)


def new_task_id(prefix: str = "ask") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
