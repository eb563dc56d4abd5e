"""What every command module shares: the error type, exit codes and stdout/stderr helpers (a leaf)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

AddCommon = Callable[[argparse.ArgumentParser], None]


class CLIError(Exception):
    """A runtime failure to report on stderr (exit code 1) without a traceback."""


def eprint(*parts: Any, end: str = "\n") -> None:
    print(*parts, file=sys.stderr, flush=True, end=end)


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def check_port(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        raise CLIError(f"--broker-port must be between 1 and 65535 (got {value})")
    return value


def command_group(sub: Any, common: AddCommon, name: str, help: str) -> Any:
    """``naila NAME ACTION``: a command whose actions are added with :func:`action`."""
    parser = sub.add_parser(name, help=help)
    common(parser)
    actions = parser.add_subparsers(dest=f"{name}_command", metavar="ACTION")
    actions.required = True
    return actions


def action(
    actions: Any, common: AddCommon, name: str, help: str, handler: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """One action of a :func:`command_group` (or a plain command, given the top-level ``sub``)."""
    parser: argparse.ArgumentParser = actions.add_parser(name, help=help)
    common(parser)
    parser.set_defaults(handler=handler)
    return parser
