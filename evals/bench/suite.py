"""The performance suite behind ``naila bench``: every benchmark of ``evals/bench/``, one table.

Parts (each measured side by side within its own run: order alternated, repeated, median and spread):

1. ``ChatLlamaCpp`` vs raw ``llama_cpp.Llama`` (and langchain-community's ChatLlamaCpp when installed):
   generation tok/s ratio, added time to first token (``evals/bench/llm.py``);
2. interleaved devices: returning ÷ never-left TTFT with the prompt-state cache, without it, and raw
   (``evals/bench/interleaved.py``);
3. graph + memory + MQTT overhead beyond model time and first-sentence latency on a real broker, and the
   graph alone with a fake model (``evals/bench/server.py``);
4. RSS growth over many turns on the tiny generated model: the leak check (``evals/bench/memory.py``);
5. generation tok/s as a fraction of the memory-bandwidth ceiling (``evals/bench/roofline.py``);
6. the CPU knob sweep behind the defaults (``evals/bench/knobs.py``);
7. generation tok/s with a competing CPU load ÷ idle, per thread count and wait policy
   (``evals/bench/contention.py``);
8. cold start: launch of ``naila serve`` to online and to its first answer (``evals/bench/coldstart.py``);
9. the reliability table: load and faults against a real broker and server (``evals/bench/reliability.py``);
10. grammar-constrained decoding: constrained ÷ unconstrained tok/s, tools bound without a call ÷ no
    tools (``evals/bench/grammar.py``).

Every part module declares ``PART`` (``evals.bench.common.Part``): its command line and, for the suite,
the same measurement with ``--quick`` or with the defaults.

    python -m evals.bench.suite [--model NAME|PATH] [--quick] [--parts 1,2,...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from evals.bench.common import Part, Rows, eprint, print_table

# part number -> (name in the table, module that declares PART)
PARTS: dict[int, tuple[str, str]] = {
    1: ("ours vs raw", "evals.bench.llm"),
    2: ("interleaved devices", "evals.bench.interleaved"),
    3: ("graph + MQTT", "evals.bench.server"),
    4: ("memory (leak check)", "evals.bench.memory"),
    5: ("bandwidth ceiling", "evals.bench.roofline"),
    6: ("knob sweep", "evals.bench.knobs"),
    7: ("under contention", "evals.bench.contention"),
    8: ("cold start", "evals.bench.coldstart"),
    9: ("reliability", "evals.bench.reliability"),
    10: ("constrained decoding", "evals.bench.grammar"),
}
LAST = max(PARTS)
ACCEPTED = f"numbers 1-{LAST} such as 1,3-5"


def parse_parts(text: str) -> list[int]:
    """``"1,3-5"`` → ``[1, 3, 4, 5]``; a clear error for anything else."""
    chosen: list[int] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        low, _, high = item.partition("-")
        try:
            start, end = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"--parts takes {ACCEPTED}; got {item!r}") from None
        if not (1 <= start <= end <= LAST):
            raise ValueError(f"--parts takes {ACCEPTED}; got {item!r}")
        chosen.extend(n for n in range(start, end + 1) if n not in chosen)
    if not chosen:
        raise ValueError(f"--parts names no part; use {ACCEPTED}")
    return sorted(chosen)


def run_part_here(number: int, model: str | None, quick: bool) -> Rows:
    """Part ``number`` in this process."""
    part: Part = importlib.import_module(PARTS[number][1]).PART
    return part.rows(model, quick)


def run_part_isolated(number: int, model: str | None, quick: bool) -> Rows:
    """One part in a process of its own, so no part inherits another's threads, memory or caches (an
    earlier part's llama.cpp threads slow a later one's: see llm.generation.start_in_thread)."""
    command = [sys.executable, "-m", "evals.bench.suite", "--run-part", str(number)]
    if model:
        command += ["--model", model]
    if quick:
        command.append("--quick")
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)  # stderr: progress
    if result.returncode != 0:
        raise RuntimeError(f"part {number} ({PARTS[number][0]}) failed with exit code {result.returncode}")
    return [tuple(row) for row in json.loads(result.stdout)]


def run_suite(
    model: str | None,
    quick: bool,
    parts: Sequence[int],
    runner: Callable[[int, str | None, bool], Rows] = run_part_isolated,
) -> Rows:
    """Run the chosen parts in order and return one table: part | metric | value | target."""
    table: Rows = [("part", "metric", "median (min..max)", "target / note")]
    for number in parts:
        name = f"{number} {PARTS[number][0]}"
        eprint(f"== part {name} ==")
        started = time.perf_counter()
        rows = runner(number, model, quick)
        for row in rows[1:]:  # each part's own header is replaced by the suite's
            metric, value, target = (*row, "", "")[:3]
            table.append((name, metric, value, target))
        eprint(f"== part {name}: {time.perf_counter() - started:.0f} s ==")
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``naila bench`` (and of this module's command line)."""
    parser.add_argument("--model", help="bundle name or GGUF path (default: the default bundle)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and turns in every part (a few minutes)")
    parser.add_argument("--parts", default=f"1-{LAST}", help=f"which parts to run, e.g. 1,3-5 (default: all {LAST})")


def run_from_args(args: argparse.Namespace) -> int:
    """Run ``naila bench`` with parsed :func:`add_arguments` options; the exit code (2: bad --parts)."""
    try:
        parts = parse_parts(args.parts)
    except ValueError as exc:
        eprint(f"naila bench: {exc}")
        return 2
    print_table(run_suite(args.model, args.quick, parts), group_first_column=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    add_arguments(parser)
    parser.add_argument("--run-part", type=int, choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_part:  # the child process of run_part_isolated: rows as JSON on stdout
        print(json.dumps(run_part_here(args.run_part, args.model, args.quick)))
        return 0
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
