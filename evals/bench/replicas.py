"""Benchmark: one ``naila serve`` with the model in process vs three replicas sharing an LLM server (issue #15).

Setup A is today's single machine: one ``naila serve``, ``LLM_BACKEND=llamacpp`` (the model in process, one
answer at a time). Setup B is the scale-out: ``naila llm-server --parallel 4`` (llama.cpp's own server,
continuous batching) and three ``naila serve`` replicas with ``LLM_BACKEND=openai`` and ``NAILA_QUEUE_URL``
(one Postgres queue, memory in Postgres). Both run at once, each behind a mosquitto of its own, so neither
is restarted between rounds; in every round ``--devices`` robots ask at once (each device its own question),
first setup A then B, the next round B then A. For each setup: publish → first stream sentence p50/p95, and
answers per minute (answers ÷ the wall time of that setup's rounds).

PostgreSQL: a fresh database on ``NAILA_BENCH_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end. Needs the extras ``server`` and
``postgres``.

    python -m evals.bench.replicas [--model NAME|PATH] [--rounds N] [--devices N] [--slots N] [--replicas N]
                                   [--max-tokens N] [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from evals.bench.common import Option, Part, Rows, _free_port, eprint, local_broker, percentile, robot

OPTIONS = {
    "rounds": Option(6, quick=2, minimum=1, help="rounds; setups alternate their order"),
    "devices": Option(4, minimum=1, help="devices asking at once in each round"),
    "slots": Option(4, minimum=1, help="parallel slots of the LLM server"),
    "replicas": Option(3, minimum=1, help="naila serve replicas sharing the LLM server"),
    "max_tokens": Option(64, quick=24, minimum=4, help="LLM_MAX_TOKENS of every server"),
}
QUESTIONS = [
    "What is a good first telescope target tonight?",
    "How long should bread dough rise?",
    "Give me one tip to focus at work.",
    "Why is the sky blue?",
    "What should I cook with rice and eggs?",
    "How do plants drink water?",
    "Tell me a fun fact about octopuses.",
    "How far away is the moon?",
]
READY = "server ready"
START_TIMEOUT_S = 300.0


def _postgres_server() -> str:
    return os.environ.get("NAILA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def _database() -> Iterator[str]:
    """A new database for the replicas' queue and memory, dropped afterwards."""
    from urllib.parse import urlsplit

    import psycopg
    from psycopg import sql

    server = _postgres_server()
    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL unreachable at NAILA_BENCH_POSTGRES_URL={server}: {exc}") from None
    name = f"naila_bench_{uuid.uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlsplit(server)._replace(path=f"/{name}").geturl()
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


def _naila(args: list[str], env: dict[str, str], log: Path, *, stdout: int | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "naila_graph.cli", *args],
        env={**os.environ, **env},
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=log.open("wb"),
    )


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        if READY in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"a server did not start (exit {proc.poll()}); its log {log}:\n{log.read_text()[-3000:]}")


def _llm_server_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    """The base URL ``naila llm-server`` prints on stdout once it answers."""
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    if not selector.select(timeout=START_TIMEOUT_S) or proc.poll() is not None:
        raise SystemExit(f"naila llm-server did not start; its log {log}:\n{log.read_text()[-3000:]}")
    return proc.stdout.readline().decode().strip()


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _serve_env(port: int, data: Path, max_tokens: int) -> dict[str, str]:
    return {
        "MQTT_BROKER_HOST": "127.0.0.1",
        "MQTT_BROKER_PORT": str(port),
        "NAILA_DATA_DIR": str(data),
        "LLM_MAX_TOKENS": str(max_tokens),
        "LLM_TEMPERATURE": "0",
        "NAILA_QUEUE_LIMIT": "1000",
        "NAILA_QUEUE_PER_DEVICE": "100",
    }


async def _round(port: int, devices: list[str], number: int) -> tuple[list[float], int, float]:
    """Every device asks once, all at once: (first-sentence latencies in ms, answers, wall seconds)."""
    async with robot(port, devices) as bot:
        started = time.perf_counter()
        asked = [
            bot.ask(device, QUESTIONS[(number + i) % len(QUESTIONS)] + f" ({number})")
            for i, device in enumerate(devices)
        ]
        done = await asyncio.gather(*asked)
        wall = time.perf_counter() - started
        firsts = [(bot.first[task] - sent) * 1000 for task, sent in done if task in bot.first]
        return firsts, len(done), wall


def run_benchmark(
    model_path: str | None = None,
    *,
    rounds: float = 6,
    devices: float = 4,
    slots: float = 4,
    replicas: float = 3,
    max_tokens: float = 64,
) -> Rows:
    from llm.bundles import resolve_model_path
    from llm.settings import LLMSettings

    model = str(resolve_model_path(model_path or LLMSettings().model_path))
    n_rounds, n_devices, n_replicas = int(rounds), int(devices), int(replicas)
    names = {"A": "1 replica, model in process", "B": f"{n_replicas} replicas, 1 LLM server ({int(slots)} slots)"}
    with (
        tempfile.TemporaryDirectory(prefix="naila-bench-replicas-") as tmp,
        local_broker() as (port_a, _),
        local_broker() as (port_b, _),
        _database() as queue_url,
        _processes() as procs,
    ):
        work = Path(tmp)
        eprint(f"starting: the LLM server ({int(slots)} slots), {n_replicas} replicas and 1 in-process server ...")
        llm_port = _free_port()
        server_log = work / "llm-server.log"
        llm = _naila(
            ["llm-server", "--model", model, "--parallel", str(int(slots)), "--port", str(llm_port)],
            {"LLM_MAX_TOKENS": str(int(max_tokens))},
            server_log,
            stdout=subprocess.PIPE,
        )
        procs.append(llm)
        url = _llm_server_url(llm, server_log)
        single_log = work / "single.log"
        single_env = {**_serve_env(port_a, work / "single", int(max_tokens)), "LLM_MODEL_PATH": model}
        waiting = [(_naila(["serve"], single_env, single_log), single_log)]
        for i in range(n_replicas):
            env = {
                **_serve_env(port_b, work / f"r{i}", int(max_tokens)),
                "LLM_BACKEND": "openai",
                "LLM_BASE_URL": url,
                "NAILA_QUEUE_URL": queue_url,
                "NAILA_REPLICA_ID": f"bench-r{i}",
                "MQTT_CLIENT_ID": f"naila-bench-r{i}",
            }
            log = work / f"replica-{i}.log"
            waiting.append((_naila(["serve"], env, log), log))
        procs.extend(proc for proc, _ in waiting)
        for proc, log in waiting:
            _wait_ready(proc, log)
        time.sleep(2.0)  # the ingest election and the persona priming settle
        firsts: dict[str, list[float]] = {"A": [], "B": []}
        answers = {"A": 0, "B": 0}
        wall = {"A": 0.0, "B": 0.0}
        ports = {"A": port_a, "B": port_b}
        for number in range(n_rounds):
            order = ("A", "B") if number % 2 == 0 else ("B", "A")
            for setup in order:
                devs = [f"bench_{setup.lower()}{d}" for d in range(n_devices)]
                got, count, seconds = asyncio.run(_round(ports[setup], devs, number))
                firsts[setup] += got
                answers[setup] += count
                wall[setup] += seconds
                eprint(f"round {number + 1}/{n_rounds} {names[setup]}: {count} answers in {seconds:.1f} s")
    rows: Rows = [("setup", "answers", "first sentence p50 ms", "p95 ms", "answers/min")]
    for setup in ("A", "B"):
        values = firsts[setup]
        rows.append(
            (
                names[setup],
                str(answers[setup]),
                f"{percentile(values, 0.5):.0f}" if values else "-",
                f"{percentile(values, 0.95):.0f}" if values else "-",
                f"{answers[setup] / wall[setup] * 60:.1f}" if wall[setup] else "-",
            )
        )
    return rows


PART = Part(__doc__, run_benchmark, OPTIONS)

if __name__ == "__main__":
    sys.exit(PART.main())
