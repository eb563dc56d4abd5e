"""Settings of the orchestrator and the server (``NAILA_*`` and ``MQTT_*``; env + `.env`)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import platformdirs
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from llm.settings import mask_secrets


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("naila"))


class NailaSettings(BaseSettings):
    """Graph, memory and server behaviour (``NAILA_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="NAILA_", env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_default=True
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    memory_url: str | None = Field(default=None, description="sqlite:///path or postgresql://...")
    max_turns: int = Field(default=20, ge=1, le=1000, description="history turns in the prompt (1..1000)")
    memory_max_turns: int = Field(
        default=100, ge=1, le=100_000, description="turns stored per conversation, oldest dropped (1..100000)"
    )
    max_user_facts: int = Field(
        default=32,
        ge=0,
        le=1000,
        description="facts about the person kept per device, least recently told dropped first (0..1000; 0 = none)",
    )
    fact_extraction: Literal["patterns", "model"] = Field(
        default="patterns",
        description="patterns: facts about the person read by patterns; model: the loaded model reads them too",
    )
    max_input_chars: int = Field(default=4000, ge=16, le=1_000_000, description="input cut (16..1000000)")
    confidence_floor: float = Field(default=0.5, ge=0.0, le=1.0, description="STT confidence floor (0..1)")
    timezone: str | None = Field(default=None, description="IANA zone, e.g. Europe/Berlin; unset = local")
    system_prompt_file: Path | None = None
    health_interval_seconds: float = Field(default=30.0, gt=0, le=86_400)
    queue_limit: int = Field(default=32, ge=1, le=100_000)
    queue_per_device: int = Field(default=8, ge=1, le=100_000, description="waiting requests per device (1..100000)")
    shutdown_grace_seconds: float = Field(default=5.0, ge=0, le=3600)
    stale_request_seconds: float = Field(default=60.0, gt=0, le=86_400)
    queue_url: str | None = Field(
        default=None,
        description="unset: in-process queue; postgresql://...: a request queue shared by several replicas",
    )
    replica_id: str | None = Field(default=None, max_length=128, description="this replica's name; unset: host-pid")
    robot_tools: Literal["auto", "commands", "off"] = Field(
        default="commands",
        description="auto: the model may call the robot tools in any turn; commands: only clear commands act; off",
    )

    @field_validator("timezone", "memory_url", "queue_url", "replica_id", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value

    @field_validator("memory_url")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError(f"must start with sqlite:/// or postgresql:// (got {mask_secrets(repr(value))})")
        return value

    @field_validator("queue_url")
    @classmethod
    def _postgres_queue(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"must start with postgresql:// (got {mask_secrets(repr(value))})")
        return "postgresql://" + value.removeprefix("postgres://") if value.startswith("postgres://") else value

    @model_validator(mode="after")
    def _replicas_share_memory(self) -> NailaSettings:
        if self.queue_url and self.memory_url and self.memory_url.startswith("sqlite:"):
            raise ValueError(
                "NAILA_QUEUE_URL is set (several replicas) but NAILA_MEMORY_URL is a SQLite file, which each"
                " replica would keep apart: set NAILA_MEMORY_URL=postgresql://... (or unset it to keep the"
                " memory in the queue's database)"
            )
        return self

    @model_validator(mode="after")
    def _memory_holds_the_prompt(self) -> NailaSettings:
        if self.memory_max_turns < self.max_turns:
            raise ValueError(
                f"NAILA_MEMORY_MAX_TURNS ({self.memory_max_turns}) must be at least NAILA_MAX_TURNS"
                f" ({self.max_turns}): the prompt's history comes from the stored turns"
            )
        return self

    def zone(self) -> ZoneInfo | None:
        return ZoneInfo(self.timezone) if self.timezone else None

    def resolved_memory_url(self) -> str:
        return self.memory_url or self.queue_url or f"sqlite:///{self.data_dir / 'memory.sqlite'}"

    @property
    def prompt_states_dir(self) -> Path:
        """Where the primed persona's prompt state is kept across restarts (llm/disk_states.py)."""
        return self.data_dir / "prompt-states"


class MQTTSettings(BaseSettings):
    """Broker connection (``MQTT_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="MQTT_", env_file=".env", env_file_encoding="utf-8", extra="ignore", validate_default=True
    )

    broker_host: str = "localhost"
    broker_port: int = Field(default=1883, ge=1, le=65535, description="TCP port (1..65535)")
    client_id: str = Field(default="naila-ai-server", min_length=1, max_length=128)
    username: str | None = None
    password: str | None = None
    keepalive: int = Field(default=60, ge=1, le=65535)
    qos: Literal[0, 1, 2] = 1
    clean_session: bool = False
    protocol: Literal["5", "3.1.1"] = "5"
    session_expiry_seconds: int = Field(default=300, ge=0, le=4_294_967_295)
    max_payload_bytes: int = Field(default=65536, ge=256, le=268_435_455)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: Any) -> Any:
        text = str(value).strip()
        return {"5.0": "5", "311": "3.1.1", "3": "3.1.1"}.get(text, text)

    @field_validator("tls_ca", "tls_cert", "tls_key", "username", "password", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tls_ca", "tls_cert", "tls_key")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        path = value.expanduser()
        if not path.is_file():
            raise ValueError(f"{path} is not a file (a PEM file is expected)")
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise ValueError(f"{path} cannot be read: {exc.strerror}") from None
        return path

    @model_validator(mode="after")
    def _key_goes_with_a_cert(self) -> MQTTSettings:
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("MQTT_TLS_KEY is set without MQTT_TLS_CERT: set the client certificate as well")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of the broker connection (None without TLS); a clear error for unusable files."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.tls_ca) if self.tls_ca else None)
        except ssl.SSLError as exc:
            raise ValueError(f"MQTT_TLS_CA={self.tls_ca}: not a usable CA certificate file ({exc})") from None
        if self.tls_cert is not None:
            try:
                context.load_cert_chain(str(self.tls_cert), str(self.tls_key) if self.tls_key else None)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"MQTT_TLS_CERT={self.tls_cert} / MQTT_TLS_KEY={self.tls_key}: not a usable certificate and"
                    f" key ({exc})"
                ) from None
        return context


def settings_as_env() -> dict[str, Any]:
    """Effective NAILA_* and MQTT_* settings keyed by their variable names."""
    out: dict[str, Any] = {}
    for prefix, cls in (("NAILA_", NailaSettings), ("MQTT_", MQTTSettings)):
        for name, value in cls().model_dump().items():
            out[f"{prefix}{name.upper()}"] = value
    return out
