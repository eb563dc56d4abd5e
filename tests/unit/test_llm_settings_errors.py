"""describe_settings_error finds the env prefix from the settings class itself (llm knows no upper layer)."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from llm.settings import describe_settings_error


class RobotArmSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARM_")

    speed: int = Field(default=1, ge=1, le=10)


def invalid(monkeypatch: pytest.MonkeyPatch) -> ValidationError:
    monkeypatch.setenv("ARM_SPEED", "99")
    with pytest.raises(ValidationError) as info:
        RobotArmSettings()
    return info.value


def test_the_prefix_comes_from_the_settings_class_named_by_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    message = describe_settings_error(invalid(monkeypatch))
    assert message.startswith("invalid settings:\n  ARM_SPEED='99': ")


def test_the_settings_class_can_be_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "ARM_SPEED='99'" in describe_settings_error(invalid(monkeypatch), RobotArmSettings)


def test_other_exceptions_are_their_message() -> None:
    assert describe_settings_error(RuntimeError("disk full")) == "disk full"


class VaultSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_")

    api_key: str = Field(default="", min_length=32)


def test_a_rejected_secret_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_API_KEY", "hunter2")
    with pytest.raises(ValidationError) as info:
        VaultSettings()
    message = describe_settings_error(info.value)
    assert "VAULT_API_KEY='***'" in message and "hunter2" not in message


def test_a_rejected_url_is_shown_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from naila_graph.settings import NailaSettings

    monkeypatch.setenv("NAILA_MEMORY_URL", "mysql://naila:hunter2@db.local/memory?password=hunter2&ssl=1")
    with pytest.raises(ValidationError) as info:
        NailaSettings()
    message = describe_settings_error(info.value)
    assert "hunter2" not in message
    assert "NAILA_MEMORY_URL='mysql://naila:***@db.local/memory?password=***&ssl=1'" in message
    assert "must start with sqlite:/// or postgresql://" in message
