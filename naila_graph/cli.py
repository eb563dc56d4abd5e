"""The ``naila`` command line. stdout carries only answers or requested data; the rest goes to stderr."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib import metadata

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CLIError(Exception):
    """A runtime failure to report on stderr (exit code 1) without a traceback."""


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

    from naila_graph import commands

    commands.register(sub, _common)
    return parser


def _configure_logging(level: str | None, debug: bool) -> None:
    name = "DEBUG" if debug else (level or "WARNING")
    logging.basicConfig(
        level=getattr(logging, name),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level, args.debug)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
