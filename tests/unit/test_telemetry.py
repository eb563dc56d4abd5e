"""The server's health report (naila_graph/telemetry.py): memory outages show in it."""

from __future__ import annotations

import json
from pathlib import Path

from naila_graph.server import NailaServer
from naila_graph.settings import MQTTSettings, NailaSettings


def _server(tmp_path: Path) -> NailaServer:
    settings = NailaSettings(data_dir=tmp_path, memory_url=f"sqlite:///{tmp_path / 'memory.sqlite'}")
    return NailaServer(settings, MQTTSettings(), chat_model=None)


def test_health_reports_memory_healthy_by_default(tmp_path: Path) -> None:
    health = json.loads(json.dumps(_server(tmp_path).health_payload()))
    assert health["system"]["status"] == "healthy"
    assert health["memory_service"]["degraded"] is False


def test_a_memory_outage_makes_the_server_degraded_until_the_database_answers(tmp_path: Path) -> None:
    server = _server(tmp_path)
    server.memory_health.record_error("connection refused")
    health = server.health_payload()
    assert health["system"]["status"] == "degraded"
    assert health["memory_service"]["degraded"] is True
    assert health["memory_service"]["last_error"] == "connection refused"
    server.memory_health.record_ok()
    assert server.health_payload()["system"]["status"] == "healthy"


def test_the_metrics_of_a_turn_say_which_guards_fired_and_which_actions_were_taken() -> None:
    import time

    from naila_graph.telemetry import ModelStatus, metrics_payload
    from naila_graph.turn import TurnRequest

    request = TurnRequest(text="hi", device_id="desk_1", thread_id="desk_1", task_id="t-1")
    state = {
        "response_source": "llm",
        "actions": ["head pan=-30 tilt=0 speed=0.5"],
        "metrics": {"guards": ["identity"], "output_tokens": 7},
    }
    payload = metrics_payload(request, state, ModelStatus(status="loaded"), started=time.monotonic(), timeline_ms={})
    assert payload["guards"] == ["identity"] and payload["actions"] == ["head pan=-30 tilt=0 speed=0.5"]
    assert payload["tokens_generated"] == 7
    quiet = metrics_payload(
        request, {"response_source": "action"}, ModelStatus(), started=time.monotonic(), timeline_ms={}
    )
    assert quiet["guards"] == [] and quiet["actions"] == []
