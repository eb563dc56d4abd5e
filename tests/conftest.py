"""Shared fixtures. Tests never touch the user's data dir, .env or a LangSmith account."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto, find_mosquitto
from tests.support.models import real_model_path, tiny_model_path

_ISOLATED_PREFIXES = ("LLM_", "NAILA_", "MQTT_", "LANGSMITH_", "LANGCHAIN_")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    models_dir = os.environ.get("NAILA_MODELS_DIR")  # keep the shared bundle cache
    for key in list(os.environ):
        if key.startswith(_ISOLATED_PREFIXES):
            monkeypatch.delenv(key)
    if models_dir:
        monkeypatch.setenv("NAILA_MODELS_DIR", models_dir)
    monkeypatch.setenv("NAILA_DATA_DIR", str(tmp_path / "naila-data"))
    monkeypatch.setenv("LANGSMITH_TRACING", "false")
    yield


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """Tiny Llama-3 GGUF whose greedy output never ends the turn (always has text)."""
    return tiny_model_path("never")


@pytest.fixture(scope="session")
def tiny_model_eot() -> str:
    """Tiny Llama-3 GGUF whose first greedy token is always end-of-turn."""
    return tiny_model_path("always")


@pytest.fixture(scope="session")
def tiny_chatml_model() -> str:
    return tiny_model_path("never", template="chatml")


@pytest.fixture(scope="session")
def real_model() -> str:
    return real_model_path()


@pytest.fixture(scope="session")
def embedding_model_dir() -> Path:
    """The real all-MiniLM-L6-v2 files (fetched by scripts/setup.sh --test; fetched here when missing)."""
    from evals.embeddings import fetch_embedding_model

    return fetch_embedding_model()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running mosquitto of this test's own on a free loopback port (stop()/start() keep the port)."""
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(
            "the broker tests need mosquitto, which is not installed: run `scripts/setup.sh --test` "
            "(it installs mosquitto with apt)",
            pytrace=False,
        )
    with Mosquitto(binary=binary, workdir=tmp_path / "mosquitto") as broker:
        yield broker
