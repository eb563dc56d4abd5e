"""A turn's events as MQTT messages: the stream, the response, the error and the metrics topics
(../shared/PROTOCOL.md). The server hands each answer's events to one :class:`TurnPublisher`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from naila_graph import protocol as p
from naila_graph import telemetry
from naila_graph.turn import Cancelled, Failed, Final, Metrics, Sentence, TurnEvent

if TYPE_CHECKING:
    from naila_graph.server import NailaServer

logger = logging.getLogger("naila.server")


class _RequestLog(logging.LoggerAdapter):
    """Prefixes ``device=… task=…`` so the log can be grepped per robot and per request."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"device={extra['device_id']} task={extra['task_id']} {msg}", kwargs


def request_log(request: p.Request) -> _RequestLog:
    return _RequestLog(logger, {"device_id": request.device_id, "task_id": request.task_id})


class TurnPublisher:
    """Maps one turn's events to MQTT topics (the stream, the response, errors and metrics)."""

    def __init__(self, server: NailaServer, request: p.Request) -> None:
        self.server = server
        self.request = request
        self.topic = p.stream_topic(request.device_id)
        self.seq = 0
        self.stream_lost = False  # a stream message was given up (broker away too long)
        self.log = request_log(request)

    def _stream(self, text: str, *, final: bool, replaced: bool = False) -> dict[str, Any]:
        payload = p.stream_payload(self.request.task_id, self.seq, text, final=final, replaced=replaced)
        self.seq += 1
        return payload

    async def handle(self, event: TurnEvent) -> None:
        server, request = self.server, self.request
        if isinstance(event, Sentence):
            if not await server.publish(self.topic, self._stream(event.text, final=False)):
                self.stream_lost = True
        elif isinstance(event, Final):
            if event.state.get("commands"):  # the actions first: the confirmation says they are under way
                await server.publish(p.COMMAND_TOPIC, p.command_payload(request, event.state))
                self.log.info("actions for %s: %s", request.device_id, "; ".join(event.state.get("actions") or []))
            # A robot that missed a sentence must not speak a stream with a hole: it gets the whole answer.
            tail, replaced = (event.text, True) if self.stream_lost else (event.tail, event.replaced)
            # Both go out at once (in this order); their acknowledgements are awaited together.
            await asyncio.gather(
                server.publish(self.topic, self._stream(tail, final=True, replaced=replaced)),
                server.publish(p.RESPONSE_TOPIC, p.response_payload(request, event.state)),
            )
            server.mark_answered(request.device_id, event.text)
        elif isinstance(event, Metrics):
            await self._metrics(event)
        elif isinstance(event, Cancelled):
            await self._cancelled(event)
        elif isinstance(event, Failed):
            await self._failed(event)

    async def _metrics(self, event: Metrics) -> None:
        server, state = self.server, event.state
        metrics = telemetry.metrics_payload(
            self.request, state, server.model, started=event.started, timeline_ms=event.timeline_ms
        )
        await server.publish(p.METRICS_TOPIC, metrics)
        if state.get("fallback_reason") and state.get("response_source") == "pattern":
            server.stats.failures_total += 1
        server.stats.record_tps(metrics.get("tokens_per_second"))
        self.log.info(
            "answered %s for %s: source=%s intent=%s fallback=%s %s",
            self.request.task_id,
            self.request.device_id,
            state.get("response_source"),
            state.get("intent"),
            state.get("fallback_reason"),
            f"{metrics['tokens_per_second']} tok/s" if metrics.get("tokens_per_second") else "",
        )

    async def _cancelled(self, event: Cancelled) -> None:
        reason = self.server.cancel_reason(self.request.device_id)
        if event.answered:
            self.log.warning("answer %s was sent but storing the turn was cancelled (%s)", self.request.task_id, reason)
            return
        self.log.info("answer %s cancelled (%s)", self.request.task_id, reason or "cancelled")
        await self.server.publish(self.topic, self._stream("", final=True))
        await self.server.publish(p.RESPONSE_TOPIC, p.response_payload(self.request, event.state))

    async def _failed(self, event: Failed) -> None:
        self.server.stats.failures_total += 1
        error = event.error
        if event.answered:  # one final answer per request: it is out, only memory failed
            self.log.error("answer %s was sent but the turn could not be stored", self.request.task_id, exc_info=error)
            return
        self.log.error("answer %s failed", self.request.task_id, exc_info=error)
        await self.server.publish_error(
            self.request.device_id, self.request.task_id, "internal_error", f"the answer failed: {type(error).__name__}"
        )
