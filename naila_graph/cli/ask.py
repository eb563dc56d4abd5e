"""``naila ask``: send a text task to the server over MQTT and print the streamed answer."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from naila_graph.cli.errors import AddCommon, CLIError, check_port, eprint

REPLACED_NOTICE = "[the model failed; instead:]"


def register(sub: Any, common: AddCommon) -> None:
    ask = sub.add_parser("ask", help="send a text task to the server; prints the streamed answer")
    common(ask)
    ask.add_argument("text", help="what to say")
    ask.add_argument("--device", default="cli", help="device id (default: cli)")
    ask.add_argument("--conversation", help="conversation id (default: the device's own thread)")
    ask.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the final answer")
    ask.add_argument("--broker-port", type=int, default=None, help="broker port (default MQTT_BROKER_PORT)")
    ask.set_defaults(handler=cmd_ask)


def cmd_ask(args: argparse.Namespace) -> int:
    if not args.text.strip():
        print("naila: error: nothing to say (the message is empty)", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        raise CLIError(f"--timeout must be positive (got {args.timeout})")
    check_port(args.broker_port)
    return asyncio.run(_ask(args))


async def _ask(args: argparse.Namespace) -> int:
    import aiomqtt

    from naila_graph import protocol as p
    from naila_graph.settings import MQTTSettings

    mqtt = MQTTSettings()
    port = args.broker_port or mqtt.broker_port
    task_id = p.new_task_id("ask")
    task: dict[str, Any] = {
        "task_id": task_id,
        "timestamp": p.utc_timestamp(),
        "device_id": args.device,
        "input_type": "text",
        "transcription": args.text,
    }
    if args.conversation:
        task["conversation_id"] = args.conversation
    topics = [p.stream_topic(args.device), p.error_topic(args.device), p.COMMAND_TOPIC]
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
    from naila_graph.protocol import COMMAND_TOPIC

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
                if str(message.topic) == COMMAND_TOPIC:  # the robot actions of this answer, on stderr
                    eprint("[command] " + json.dumps(data, ensure_ascii=False))
                    continue
                if "error" in data:
                    print(
                        f"naila: error: the server answered {data.get('error')}: {data.get('message')}", file=sys.stderr
                    )
                    return 1
                text = str(data.get("text", ""))
                if data.get("replaced") and started:
                    eprint("\n" + REPLACED_NOTICE)
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
