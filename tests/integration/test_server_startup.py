"""Start-up order (issue #12, defect 8): the server goes online before it primes the persona, and a
request that comes while the persona is being primed is answered without waiting for it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from llm import ChatLlamaCpp
from naila_graph import protocol as p
from naila_graph.server import NailaServer
from naila_graph.settings import MQTTSettings, NailaSettings
from tests.support.mqtt import robot

pytestmark = pytest.mark.broker


class _SlowPrimer(ChatLlamaCpp):
    """The tiny model, whose priming (a prefill of the persona alone) waits until the test lets it go."""

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self.__dict__["priming"] = asyncio.Event()
        self.__dict__["release"] = asyncio.Event()

    async def aprefill(
        self,
        messages: Sequence[BaseMessage],
        *,
        should_stop: Callable[[], bool] | None = None,
        conversation: str | None = None,
        next_role: Any = None,
        tools: Sequence[Any] | None = None,
    ) -> int:
        if conversation is None and len(messages) == 1:  # the persona, at start-up
            self.__dict__["priming"].set()
            await self.__dict__["release"].wait()
        return await super().aprefill(
            messages, should_stop=should_stop, conversation=conversation, next_role=next_role, tools=tools
        )


async def test_the_server_is_online_and_answers_before_the_persona_is_primed(
    mosquitto: Any, tmp_path: Path, tiny_model: str
) -> None:
    model = _SlowPrimer(model_path=tiny_model, n_ctx=2048, max_tokens=16, temperature=0.0, seed=1)
    settings = NailaSettings(data_dir=tmp_path, memory_url=f"sqlite:///{tmp_path / 'memory.sqlite'}")
    mqtt = MQTTSettings(
        broker_host=mosquitto.host, broker_port=mosquitto.port, client_id=f"naila-test-{uuid.uuid4().hex[:8]}"
    )
    async with robot(mosquitto.host, mosquitto.port) as bot, NailaServer(settings, mqtt, chat_model=model) as srv:
        await asyncio.wait_for(model.__dict__["priming"].wait(), 10)  # priming began after start-up ...
        await bot.wait_for(lambda: bot.on(p.STARTUP_TOPIC), what="startup message")  # ... and we are online
        assert "prime prompt cache" not in srv.startup_phases
        answer = await bot.answer(await bot.task("robot_s", "hello there"), within=30)
        assert not model.__dict__["release"].is_set()  # answered while the persona was still waiting
        model.__dict__["release"].set()
    assert answer["response"]["source"] == "llm"
