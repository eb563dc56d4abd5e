"""The server over TLS: a mosquitto with a TLS listener that requires client certificates (mutual TLS).

Robots stay on the broker's plain listener; the server knows only the TLS port, so every answer it gives
went through TLS. Certificates come from a throw-away CA made with the openssl tool (tests/support/tls.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from llm import ChatLlamaCpp
from naila_graph.server import NailaServer
from naila_graph.settings import MQTTSettings, NailaSettings
from tests.support.broker import Mosquitto, find_mosquitto, free_port, port_accepts_connections
from tests.support.mqtt import robot
from tests.support.tls import Certificates, make_certificates

pytestmark = pytest.mark.broker


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


@pytest.fixture
def tls_broker(tmp_path: Path, certs: Certificates) -> Iterator[tuple[Mosquitto, int]]:
    binary = find_mosquitto()
    if binary is None:
        pytest.fail("the broker tests need mosquitto: run `scripts/setup.sh --test`", pytrace=False)
    tls_port = free_port()
    extra = [
        f"listener {tls_port} 127.0.0.1",
        f"cafile {certs.ca}",
        f"certfile {certs.server_cert}",
        f"keyfile {certs.server_key}",
        "require_certificate true",
    ]
    with Mosquitto(binary=binary, workdir=tmp_path / "mosquitto", extra_config=extra) as broker:
        for _ in range(200):
            if port_accepts_connections(broker.host, tls_port):
                break
        yield broker, tls_port


def _server(tmp_path: Path, mqtt: MQTTSettings, model_path: str) -> NailaServer:
    settings = NailaSettings(
        data_dir=tmp_path, memory_url=f"sqlite:///{tmp_path / 'memory.sqlite'}", health_interval_seconds=3600
    )
    model = ChatLlamaCpp(model_path=model_path, n_ctx=1024, max_tokens=12, temperature=0.0, seed=1)
    return NailaServer(settings, mqtt, chat_model=model)


def _tls_settings(port: int, ca: Path, certs: Certificates, **extra: Any) -> MQTTSettings:
    return MQTTSettings(
        broker_host="127.0.0.1",
        broker_port=port,
        client_id=f"naila-tls-{uuid.uuid4().hex[:8]}",
        tls_ca=ca,
        tls_cert=certs.client_cert,
        tls_key=certs.client_key,
        **extra,
    )


async def test_server_answers_over_mutual_tls(
    tls_broker: tuple[Mosquitto, int], certs: Certificates, tmp_path: Path, tiny_model: str
) -> None:
    broker, tls_port = tls_broker
    server = _server(tmp_path, _tls_settings(tls_port, certs.ca, certs), tiny_model)
    async with robot(broker.host, broker.port) as bot, server:
        answer = await bot.answer(await bot.task("robot_tls", "hello over tls"))
    assert answer["response"]["source"] == "llm" and answer["response"]["text"]
    assert f"on port {tls_port}" in broker.log_text()  # the server's connection came in on the TLS listener


async def test_a_broker_signed_by_an_untrusted_ca_is_refused_with_the_reason(
    tls_broker: tuple[Mosquitto, int],
    certs: Certificates,
    tmp_path: Path,
    tiny_model: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, tls_port = tls_broker
    server = _server(tmp_path, _tls_settings(tls_port, certs.other_ca, certs), tiny_model)
    caplog.set_level(logging.WARNING, logger="naila")
    starting = asyncio.create_task(server.__aenter__())
    for _ in range(200):
        if "CERTIFICATE_VERIFY_FAILED" in caplog.text or starting.done():
            break
        await asyncio.sleep(0.05)
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text, caplog.text
    assert not starting.done()  # still trying (backoff), not serving without TLS
    server.request_stop()
    with pytest.raises(RuntimeError, match="stopped before the broker could be reached"):
        await asyncio.wait_for(starting, timeout=30)


def test_tls_settings_name_what_is_wrong(tmp_path: Path, certs: Certificates) -> None:
    with pytest.raises(ValidationError, match="is not a file"):
        MQTTSettings(tls_ca=tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="MQTT_TLS_KEY is set without MQTT_TLS_CERT"):
        MQTTSettings(tls_ca=certs.ca, tls_key=certs.client_key)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"MQTT_TLS_CA=.*not a usable CA certificate"):
        MQTTSettings(tls_ca=garbage).tls_context()
    with pytest.raises(ValueError, match=r"MQTT_TLS_CERT=.*not a usable certificate and key"):
        MQTTSettings(tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.server_key).tls_context()
    assert MQTTSettings(tls_ca="  ").tls_context() is None  # blank = unset: no TLS
    assert MQTTSettings(tls_ca=certs.ca).tls_context() is not None
