"""The performance suite behind ``naila bench``: every benchmark of ``evals/``, one table.

Parts (each measured side by side within its own run: order alternated, repeated, median and spread):

1. ``ChatLlamaCpp`` vs raw ``llama_cpp.Llama`` (and langchain-community's ChatLlamaCpp when installed):
   generation tok/s ratio, added time to first token (``evals/bench_llm.py``);
2. interleaved devices: returning ÷ never-left TTFT with the prompt-state cache, without it, and raw
   (``evals/bench_interleaved.py``);
3. graph + memory + MQTT overhead beyond model time and first-sentence latency on a real broker, and the
   graph alone with a fake model (``evals/bench_server.py``);
4. RSS growth over many turns on the tiny generated model: the leak check (``evals/bench_memory.py``);
5. generation tok/s as a fraction of the memory-bandwidth ceiling (``evals/bench_roofline.py``);
6. the CPU knob sweep behind the defaults (``evals/bench_knobs.py``).

    python -m evals.bench_suite [--model NAME|PATH] [--quick] [--parts 1,2,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

Rows = list[tuple[str, ...]]

PART_NAMES = {
    1: "ours vs raw",
    2: "interleaved devices",
    3: "graph + MQTT",
    4: "memory (leak check)",
    5: "bandwidth ceiling",
    6: "knob sweep",
}


def _eprint(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def _part_1(model: str | None, quick: bool) -> Rows:
    from evals.bench_llm import run_benchmark

    repeats, max_tokens = (3, 48) if quick else (7, 128)
    return list(run_benchmark(model, repeats, max_tokens))


def _part_2(model: str | None, quick: bool) -> Rows:
    from evals.bench_interleaved import run as run_benchmark

    rows = run_benchmark(model, repeats=1 if quick else 3, turns=3 if quick else 6)
    header, body = rows[0], rows[1:]
    variants = header[1:-1]
    flat: Rows = [("metric", "median (min..max)", "target")]
    for row in body:
        metric, values, target = row[0], row[1:-1], row[-1]
        for variant, value in zip(variants, values, strict=True):
            if value != "-":
                flat.append((f"{metric} [{variant}]", value, target if variant == "cache" else ""))
    return flat


def _part_3(model: str | None, quick: bool) -> Rows:
    from evals.bench_server import run_benchmark

    devices, turns, graph_turns = (2, 3, 100) if quick else (2, 6, 300)
    return list(run_benchmark(model, devices, turns, graph_turns))


def _part_4(model: str | None, quick: bool) -> Rows:
    from evals.bench_memory import run_benchmark

    return list(run_benchmark(turns=300 if quick else 1000, warmup=50 if quick else 100))


def _part_5(model: str | None, quick: bool) -> Rows:
    from evals.bench_roofline import run_benchmark

    return list(run_benchmark(model, *((3, 48, 512) if quick else (6, 96, 1024))))


def _part_6(model: str | None, quick: bool) -> Rows:
    from evals.bench_knobs import run_benchmark

    return list(run_benchmark(model, *((2, 32) if quick else (5, 64))))


PARTS: dict[int, Callable[[str | None, bool], Rows]] = {
    1: _part_1,
    2: _part_2,
    3: _part_3,
    4: _part_4,
    5: _part_5,
    6: _part_6,
}


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
            raise ValueError(f"--parts takes numbers 1-6 such as 1,3-5; got {item!r}") from None
        if not (1 <= start <= end <= 6):
            raise ValueError(f"--parts takes numbers 1-6 such as 1,3-5; got {item!r}")
        chosen.extend(n for n in range(start, end + 1) if n not in chosen)
    if not chosen:
        raise ValueError("--parts names no part; use numbers 1-6 such as 1,3-5")
    return sorted(chosen)


def run_part_isolated(number: int, model: str | None, quick: bool) -> Rows:
    """One part in a process of its own, so no part inherits another's threads, memory or caches (an
    earlier part's llama.cpp threads slow a later one's: see ChatLlamaCpp._start_generation)."""
    command = [sys.executable, "-m", "evals.bench_suite", "--run-part", str(number)]
    if model:
        command += ["--model", model]
    if quick:
        command.append("--quick")
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)  # stderr: progress
    if result.returncode != 0:
        raise RuntimeError(f"part {number} ({PART_NAMES[number]}) failed with exit code {result.returncode}")
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
        name = f"{number} {PART_NAMES[number]}"
        _eprint(f"== part {name} ==")
        started = time.perf_counter()
        rows = runner(number, model, quick)
        for row in rows[1:]:  # each part's own header is replaced by the suite's
            metric, value, target = (*row, "", "")[:3]
            table.append((name, metric, value, target))
        _eprint(f"== part {name}: {time.perf_counter() - started:.0f} s ==")
    return table


def print_table(rows: Rows) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    previous = None
    for j, row in enumerate(rows):
        cells = list(row)
        if j and cells[0] == previous:
            cells[0] = ""  # the part name once per group
        else:
            previous = cells[0]
        print(" | ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip())
        if j == 0:
            print("-+-".join("-" * w for w in widths))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="bundle name or GGUF path (default: the default bundle)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and turns in every part (a few minutes)")
    parser.add_argument("--parts", default="1-6", help="which parts to run, e.g. 1,3-5 (default: all six)")


def run_from_args(args: argparse.Namespace) -> int:
    try:
        parts = parse_parts(args.parts)
    except ValueError as exc:
        _eprint(f"naila bench: {exc}")
        return 2
    print_table(run_suite(args.model, args.quick, parts))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--run-part", type=int, choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_part:  # the child process of run_part_isolated: rows as JSON on stdout
        print(json.dumps(PARTS[args.run_part](args.model, args.quick)))
        return 0
    return run_from_args(args)


if __name__ == "__main__":
    sys.exit(main())
