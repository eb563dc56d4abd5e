"""``naila llm-server``: a local llama.cpp server (OpenAI-compatible, continuous batching) for ``LLM_BACKEND=openai``.

llama.cpp's own C++ server, embedded in the ``xllamacpp`` wheel (prebuilt, no compile; extra ``server``).
That package has no command line of its own; this is it. ``--parallel N`` slots answer N requests at once
(continuous batching); each slot gets ``LLM_CONTEXT_SIZE`` tokens of context, so a prompt that fits the
in-process model fits one slot. The base URL goes to stdout once the server answers; logs go to stderr.
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from typing import Any

from naila_graph.cli.errors import AddCommon, CLIError, eprint

DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
EXTRA_HINT = "pip install 'naila-graph[server]'"


def register(sub: Any, common: AddCommon) -> None:
    parser = sub.add_parser(
        "llm-server", help="start a local llama.cpp server (OpenAI-compatible) for LLM_BACKEND=openai"
    )
    common(parser)
    parser.add_argument("--model", help="bundle name or GGUF path (default: LLM_MODEL_PATH or the default bundle)")
    parser.add_argument("--parallel", type=int, default=1, help="requests answered at once (slots; default 1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.set_defaults(handler=cmd_llm_server)


def cmd_llm_server(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise CLIError(f"--port must be between 1 and 65535 (got {args.port})")
    if not 1 <= args.parallel <= 256:
        raise CLIError(f"--parallel must be between 1 and 256 (got {args.parallel})")
    try:
        import xllamacpp
    except ImportError as exc:
        raise CLIError(f"`naila llm-server` needs the optional extra: {EXTRA_HINT} ({exc})") from None

    from llm.bundles import resolve_model_path
    from llm.settings import LLMSettings

    settings = LLMSettings()
    path = resolve_model_path(args.model or settings.model_path)  # a bundle is fetched when missing
    _check_port_free(args.host, args.port)
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_parallel = args.parallel
    params.n_ctx = settings.context_size * args.parallel  # llama.cpp splits n_ctx evenly between the slots
    params.n_batch = settings.batch_size
    params.port = args.port
    params.hostnames = [args.host]
    if settings.threads:
        params.cpuparams.n_threads = settings.threads
        params.cpuparams_batch.n_threads = settings.threads
    if settings.gpu_layers != "auto":
        params.n_gpu_layers = int(settings.gpu_layers)
    params.verbosity = 3 if args.debug or args.log_level in ("DEBUG", "INFO") else 1  # 1: errors only
    eprint(f"naila llm-server: loading {path} ({args.parallel} slot(s) of {settings.context_size} tokens) ...")

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise CLIError(f"the llama.cpp server did not start ({exc}); its log above says why") from None
        url = f"http://{_url_host(args.host)}:{args.port}/v1"
        print(url, flush=True)
        eprint(f"naila llm-server: ready at {url} (LLM_BACKEND=openai LLM_BASE_URL={url}); Ctrl-C stops it")
        while not stop.wait(0.5):
            pass
        eprint("naila llm-server: stopping")
        del server  # the server stops and frees the model when its object goes
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _check_port_free(host: str, port: int) -> None:
    """A clear message for the common failure (llama.cpp's own is one line in its log)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise CLIError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port") from None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: this machine answers on loopback
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
