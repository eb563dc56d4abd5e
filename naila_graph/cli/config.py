"""``naila config show``: the effective settings, secrets masked."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from naila_graph.cli.errors import AddCommon, action, command_group

_SECRET_WORDS = ("PASSWORD", "API_KEY", "SECRET", "TOKEN")


def register(sub: Any, common: AddCommon) -> None:
    actions = command_group(sub, common, "config", "settings")
    action(actions, common, "show", "print the effective settings (secrets masked)", cmd_config_show)


def cmd_config_show(args: argparse.Namespace) -> int:
    from llm.settings import LLMSettings
    from naila_graph.settings import settings_as_env

    values: dict[str, Any] = {}
    for name, value in LLMSettings().model_dump().items():
        values[f"LLM_{name.upper()}"] = value
    values.update(settings_as_env())
    for key in sorted(os.environ):
        if key.startswith(("LANGSMITH_", "LANGCHAIN_")):
            values[key] = os.environ[key]
    from llm.settings import mask_secrets

    for key, value in values.items():
        if any(word in key for word in _SECRET_WORDS) and value:
            values[key] = "********"
        elif isinstance(value, str) and "://" in value:  # NAILA_MEMORY_URL, NAILA_QUEUE_URL: user:password@host
            values[key] = mask_secrets(value)
    print(json.dumps(values, indent=2, default=str))
    return 0
