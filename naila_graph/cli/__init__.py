"""The ``naila`` command line. stdout carries only answers or requested data; the rest goes to stderr.

One module per command (chat, serve, ask, models, memory, config, llm-server); the layer above (``evals``) adds
``eval`` and ``bench`` through one explicit hook: the ``naila.commands`` entry point group, whose entries
are ``register(sub, common)`` functions (pyproject.toml).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

from naila_graph.cli import ask, chat, config, llm_server, memory, models, serve
from naila_graph.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CLIError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "CLIError", "build_parser", "main"]

COMMAND_HOOK = "naila.commands"
_OWN_COMMANDS = (chat, serve, ask, models, memory, config, llm_server)


def _version() -> str:
    try:
        return metadata.version("naila-graph")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level on stderr (default WARNING)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="naila", description="NAILA's language brain.")
    parser.add_argument("--version", action="version", version=f"naila {_version()}")
    _common(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in _OWN_COMMANDS:
        module.register(sub, _common)
    for entry in sorted(metadata.entry_points(group=COMMAND_HOOK), key=lambda e: e.name):
        entry.load()(sub, _common)
    return parser


def _configure_logging(level: str | None, debug: bool) -> None:
    name = "DEBUG" if debug else (level or "WARNING")
    logging.basicConfig(
        level=getattr(logging, name),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    from naila_graph.packages import ForeignPackageError, check_own_packages

    try:
        check_own_packages()
    except ForeignPackageError as exc:
        print(f"naila: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.debug)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout left (e.g. `| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        from llm.errors import LLMError
        from llm.settings import describe_settings_error

        if isinstance(exc, CLIError | LLMError):
            message = str(exc)
        elif type(exc).__name__ == "ValidationError":
            message = describe_settings_error(exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
        print(f"naila: error: {message}", file=sys.stderr)
        return EXIT_FAILURE
