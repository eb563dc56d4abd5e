"""``naila serve`` (the MQTT AI server) and ``naila ask`` (a text task from the command line)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

logger = logging.getLogger("naila.server")


def register(sub: Any, common: Any) -> None:
    serve = sub.add_parser("serve", help="run the MQTT AI server (settings from env/.env)")
    common(serve)
    serve.add_argument(
        "--embedded-broker", action="store_true", help="start a pure-Python MQTT 3.1.1 broker on 127.0.0.1 and use it"
    )
    serve.add_argument("--broker-port", type=int, default=None, help="broker port (default MQTT_BROKER_PORT)")
    serve.set_defaults(handler=cmd_serve)

    ask = sub.add_parser("ask", help="send a text task to the server; prints the streamed answer")
    common(ask)
    ask.add_argument("text", help="what to say")
    ask.add_argument("--device", default="cli", help="device id (default: cli)")
    ask.add_argument("--conversation", help="conversation id (default: the device's own thread)")
    ask.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the final answer")
    ask.add_argument("--broker-port", type=int, default=None, help="broker port (default MQTT_BROKER_PORT)")
    ask.set_defaults(handler=cmd_ask)


def _port(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        from naila_graph.cli import CLIError

        raise CLIError(f"--broker-port must be between 1 and 65535 (got {value})")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    from naila_graph.settings import MQTTSettings, NailaSettings

    if logging.getLogger().level > logging.INFO and not args.log_level:
        logging.getLogger("naila").setLevel(logging.INFO)  # a server shows its lifecycle by default
    settings = NailaSettings()
    mqtt = MQTTSettings()
    port = _port(args.broker_port)
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
        return asyncio.run(_serve(settings, mqtt))
    finally:
        if broker is not None:
            broker.stop()


async def _serve(settings: Any, mqtt: Any) -> int:
    from naila_graph.server import NailaServer

    server = NailaServer(settings, mqtt)
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
    return 0


def cmd_ask(args: argparse.Namespace) -> int:
    from naila_graph.cli import CLIError

    if not args.text.strip():
        print("naila: error: nothing to say (the message is empty)", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        raise CLIError(f"--timeout must be positive (got {args.timeout})")
    _port(args.broker_port)
    return asyncio.run(_ask(args))


async def _ask(args: argparse.Namespace) -> int:
    import aiomqtt

    from naila_graph import protocol as p
    from naila_graph.server import new_task_id
    from naila_graph.settings import MQTTSettings

    mqtt = MQTTSettings()
    port = args.broker_port or mqtt.broker_port
    task_id = new_task_id("ask")
    task: dict[str, Any] = {
        "task_id": task_id,
        "timestamp": p.utc_timestamp(),
        "device_id": args.device,
        "input_type": "text",
        "transcription": args.text,
    }
    if args.conversation:
        task["conversation_id"] = args.conversation
    topics = [p.stream_topic(args.device), p.error_topic(args.device)]
    deadline = time.monotonic() + args.timeout
    try:
        async with aiomqtt.Client(
            mqtt.broker_host,
            port,
            identifier=f"naila-ask-{task_id[4:]}",
            username=mqtt.username,
            password=mqtt.password,
            protocol=aiomqtt.ProtocolVersion.V311,
            timeout=10,
            tls_context=mqtt.tls_context(),
        ) as client:
            for topic in topics:
                await client.subscribe(topic, qos=1)
            await client.publish(p.TASK_TOPIC, p.encode(task), qos=1)
            return await _print_answer(client, task_id, deadline, args.timeout)
    except aiomqtt.MqttError as exc:
        print(f"naila: error: cannot reach the broker at {mqtt.broker_host}:{port} ({exc})", file=sys.stderr)
        return 1


async def _print_answer(client: Any, task_id: str, deadline: float, limit: float) -> int:
    started = False
    try:
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + max(0.0, deadline - time.monotonic())):
            async for message in client.messages:
                try:
                    data = json.loads(message.payload)
                except (ValueError, TypeError):
                    continue
                if not isinstance(data, dict) or data.get("task_id") != task_id:
                    continue
                if "error" in data:
                    print(
                        f"naila: error: the server answered {data.get('error')}: {data.get('message')}", file=sys.stderr
                    )
                    return 1
                text = str(data.get("text", ""))
                if data.get("replaced") and started:
                    print("\n[the model failed; instead:]", file=sys.stderr)
                    sys.stdout.write("\n")
                if text:
                    sys.stdout.write((" " if started and not data.get("replaced") else "") + text)
                    sys.stdout.flush()
                    started = True
                if data.get("final"):
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                    return 0
    except TimeoutError:
        if started:
            sys.stdout.write("\n")
        print(f"naila: error: no final answer within {limit:g} s (is `naila serve` running?)", file=sys.stderr)
        return 1
    return 1
