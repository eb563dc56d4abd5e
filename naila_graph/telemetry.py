"""What the server tells about itself: counters, and the startup, health, status and metrics payloads
(../shared/PROTOCOL.md). Pure functions of the server's state; nothing here publishes."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import psutil

from llm.capabilities import LocalModel
from naila_graph import protocol as p
from naila_graph.turn import PrefillStats, TurnRequest


@dataclass
class ServerStats(PrefillStats):
    """Counters since the server started (prefill counters are kept by the turn layer)."""

    started: float = field(default_factory=time.monotonic)
    messages_in: int = 0
    messages_out: int = 0
    errors: int = 0
    requests_total: int = 0
    recovered_total: int = 0  # requests a previous process took but did not answer, answered by this one
    failures_total: int = 0
    llm_answers: int = 0
    tokens_per_second_sum: float = 0.0

    def record_tps(self, tps: float | None) -> None:
        if tps:
            self.llm_answers += 1
            self.tokens_per_second_sum += tps

    @property
    def avg_tokens_per_second(self) -> float | None:
        return round(self.tokens_per_second_sum / self.llm_answers, 2) if self.llm_answers else None

    @property
    def uptime_seconds(self) -> float:
        return round(time.monotonic() - self.started, 1)


@dataclass
class ModelStatus:
    """What the server knows of its model, for the payloads."""

    model: Any = None
    status: str = "unloaded"  # unloaded | loaded | error
    hardware: str = "cpu"
    degraded_reason: str | None = None
    load_time_ms: float | None = None

    @property
    def name(self) -> str | None:
        model = self.model
        if model is None:
            return None
        return model.model_name if isinstance(model, LocalModel) else getattr(model, "model_name", None)


def server_version() -> str:
    try:
        return metadata.version("naila-graph")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def rss_mb() -> float:
    """Resident memory of this process in MB."""
    return psutil.Process().memory_info().rss / 1e6


def status_payload(status: str, client_id: str) -> dict[str, Any]:
    return {
        "status": status,
        "client_id": client_id,
        "server_version": server_version(),
        "timestamp": p.utc_timestamp(),
    }


def startup_payload(model: ModelStatus, phases_ms: dict[str, float]) -> dict[str, Any]:
    return {
        "timestamp": p.utc_timestamp(),
        "event": "server_startup",
        "server_version": server_version(),
        "llm": {
            "status": model.status,
            "model": model.name,
            "load_time_ms": model.load_time_ms,
            "hardware": model.hardware,
        },
        "degraded": model.degraded_reason is not None,
        "degraded_reason": model.degraded_reason,
        "startup_phases_ms": phases_ms,
    }


def shutdown_payload(reason: str, stats: ServerStats) -> dict[str, Any]:
    return {
        "timestamp": p.utc_timestamp(),
        "event": "server_shutdown",
        "reason": reason,
        "uptime_seconds": stats.uptime_seconds,
    }


def cache_stats(model: Any) -> dict[str, Any] | None:
    if not isinstance(model, LocalModel):
        return None
    return dataclasses.asdict(model.state_cache_stats)


def backend_info(model: Any) -> dict[str, Any] | None:
    """What a model served by another process says about it (``LLM_BACKEND=openai``: URL, context per slot,
    how tokens are counted), as last learned (no I/O); None for a model in this process."""
    info = getattr(model, "backend_info", None)
    return dict(info) if isinstance(info, dict) else None


def health_payload(
    stats: ServerStats,
    model: ModelStatus,
    *,
    connected: bool,
    queue_depth: int,
    in_progress: int,
    memory: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``memory``: the memory database's health (``MemoryHealth.as_dict()``); degraded memory makes the
    system degraded too."""
    memory = memory or {"degraded": False}
    return {
        "timestamp": p.utc_timestamp(),
        "system": {
            "uptime_seconds": stats.uptime_seconds,
            "status": "degraded" if model.degraded_reason or memory.get("degraded") else "healthy",
            "memory_usage_mb": round(rss_mb(), 1),
        },
        "mqtt_service": {
            "status": "connected" if connected else "disconnected",
            "message_count": stats.messages_in + stats.messages_out,
            "error_count": stats.errors,
            "recovered_requests": stats.recovered_total,
        },
        "memory_service": memory,
        "ai_services": {
            "llm": {
                "status": model.status,
                "model": model.name,
                "hardware": model.hardware,
                "degraded": model.degraded_reason is not None,
                "degraded_reason": model.degraded_reason,
                "queue_depth": queue_depth,
                "in_progress": in_progress,
                "requests_total": stats.requests_total,
                "failures_total": stats.failures_total,
                "avg_tokens_per_second": stats.avg_tokens_per_second,
                "prompt_state_cache": cache_stats(model.model),
                "backend": backend_info(model.model),
                "prefills": stats.prefills,
                "prefill_tokens": stats.prefill_tokens,
            }
        },
    }


def metrics_payload(
    request: p.Request | TurnRequest,
    state: dict[str, Any],
    model: ModelStatus,
    *,
    started: float,
    timeline_ms: dict[str, float],
) -> dict[str, Any]:
    """Per-inference metrics of one answered turn; the model's figures only when the model answered."""
    m = state.get("metrics") or {}
    source = state.get("response_source")
    from_model = source == "llm"
    local = model.model if from_model and isinstance(model.model, LocalModel) else None

    def model_field(key: str, digits: int = 1) -> Any:
        value = m.get(key) if from_model else None
        return round(value, digits) if isinstance(value, float) else value

    return {
        "llm_status": model.status,
        "model_name": m.get("model_name") if from_model else None,
        "inference_time_ms": model_field("inference_time_ms"),
        "tokens_generated": model_field("output_tokens"),
        "tokens_per_second": model_field("tokens_per_second", 2),
        "time_to_first_token_ms": model_field("time_to_first_token_ms"),
        "context_length": model_field("input_tokens"),
        "cached_prompt_tokens": model_field("cached_tokens"),
        "n_ctx": local.n_ctx if local is not None else None,
        "temperature": local.temperature if local is not None else None,
        "hardware_acceleration": model.hardware if from_model else None,
        "source": source,
        "fallback_reason": state.get("fallback_reason"),
        "finish_reason": state.get("finish_reason"),
        "intent": state.get("intent"),
        "guards": list(m.get("guards") or []),  # answer guards that fired (nodes/guards.py)
        "actions": list(state.get("actions") or []),  # robot actions taken (nodes/act.py)
        "total_time_ms": round((time.monotonic() - request.received) * 1000, 1),
        "queue_time_ms": round((started - request.received) * 1000, 1),
        "device_id": request.device_id,
        "task_id": request.task_id,
        "timestamp": p.utc_timestamp(),
        "timeline_ms": timeline_ms,
    }
