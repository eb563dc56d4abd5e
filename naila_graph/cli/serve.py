"""``naila serve``: the MQTT AI server until SIGINT/SIGTERM.

A restarted server keeps robots waiting (issue 12, defect 8), so the model's weights start loading in a
thread as soon as the model is built, and the rest of the server's code is imported while they load
(llama.cpp releases the GIL while it reads and prepares them). The server's own load then finds them
loaded, or waits for the load under way (``ChatLlamaCpp.load`` is idempotent and locked); a load that
fails is left to the server's load, which fails the same way and goes to degraded mode as before.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from naila_graph.cli.errors import AddCommon, check_port

logger = logging.getLogger("naila.server")


def register(sub: Any, common: AddCommon) -> None:
    serve = sub.add_parser("serve", help="run the MQTT AI server (settings from env/.env)")
    common(serve)
    serve.add_argument(
        "--embedded-broker", action="store_true", help="start a pure-Python MQTT 3.1.1 broker on 127.0.0.1 and use it"
    )
    serve.add_argument("--broker-port", type=int, default=None, help="broker port (default MQTT_BROKER_PORT)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from naila_graph.settings import MQTTSettings, NailaSettings

    if logging.getLogger().level > logging.INFO and not args.log_level:
        logging.getLogger("naila").setLevel(logging.INFO)  # a server shows its lifecycle by default
    settings = NailaSettings()
    mqtt = MQTTSettings()
    if settings.queue_url is not None:  # one of several replicas: every log line says which
        settings = settings.model_copy(update={"replica_id": settings.replica_id or _default_replica_id()})
        _name_replica_in_logs(str(settings.replica_id))
    port = check_port(args.broker_port)
    updates: dict[str, Any] = {}
    if port is not None:
        updates["broker_port"] = port
    broker = None
    if args.embedded_broker:
        from naila_graph.embedded_broker import EmbeddedBroker

        updates.update(broker_host="127.0.0.1", protocol="3.1.1")
        broker = EmbeddedBroker(host="127.0.0.1", port=port or mqtt.broker_port)
        broker.start()
        logger.info("embedded MQTT 3.1.1 broker listening on 127.0.0.1:%d", broker.port)
    mqtt = mqtt.model_copy(update=updates)
    try:
        with _loading_model(settings.system_prompt_file, settings.prompt_states_dir, settings.robot_tools) as model:
            return asyncio.run(_serve(settings, mqtt, model))
    finally:
        if broker is not None:
            broker.stop()


def _default_replica_id() -> str:
    """NAILA_REPLICA_ID's default (:func:`naila_graph.replicas.default_replica_id`, without importing psycopg)."""
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


def _name_replica_in_logs(replica_id: str) -> None:
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s [{replica_id}]: %(message)s"))


@contextlib.contextmanager
def _loading_model(persona_file: Path | None, state_dir: Path, robot_tools: Any = "auto") -> Iterator[Any]:
    """The chat model of the ``LLM_*`` settings (the one the server would build), its weights loading in a
    thread while the caller goes on, then the persona's prompt state put back from disk when an earlier
    run left it there (:mod:`llm.disk_states`); on the way out the thread has ended and the weights are
    freed (the server frees them itself once it has taken the model, this covers a start that failed)."""
    from llm import load_chat_model
    from llm.disk_states import restore_from_disk  # noqa: F401  (imported here, not in the thread, which
    from nodes.generate_response import tools_in_prompt  # noqa: F401  runs while this thread imports
    from prompts.persona import load_persona  # noqa: F401  the server)

    model = load_chat_model()
    thread = threading.Thread(
        target=_preload, args=(model, persona_file, state_dir, robot_tools), name="model preload", daemon=True
    )
    thread.start()
    try:
        yield model
    finally:
        thread.join()
        if model.is_loaded:
            model.unload()


def _preload(model: Any, persona_file: Path | None, state_dir: Path, robot_tools: Any) -> None:
    try:
        model.load()
    except Exception:  # the server's own load raises it again and reports it
        return
    try:  # before the server starts, so the first request finds the persona evaluated
        from langchain_core.messages import SystemMessage

        from nodes.generate_response import tools_in_prompt
        from prompts.persona import load_persona

        persona = SystemMessage(load_persona(persona_file))
        tools = tools_in_prompt(robot_tools, model)  # as the server's turns will render them
        restored = model.restore_prefix_from_disk([persona], state_dir, tools=tools)
        if restored:
            logger.info("restored the persona's prompt state from disk: %d tokens", restored)
    except Exception as exc:  # an optimisation: priming evaluates the persona as before
        logger.warning("the persona state on disk could not be used: %s", exc)


async def _serve(settings: Any, mqtt: Any, chat_model: Any = None) -> int:
    from naila_graph.server import NailaServer

    server = NailaServer(settings, mqtt, chat_model=chat_model)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_stop, signal.Signals(sig).name)
    try:
        async with server:
            reason = await server.wait_for_stop()
            logger.info("received %s", reason)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 1 if reason == "queue_database_lost" else 0  # a replica cut off its queue: its supervisor restarts it
