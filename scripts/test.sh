#!/usr/bin/env bash
# Set up on first use (venv, test deps, mosquitto, model bundle), check lint, formatting and types,
# then run the test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test

# Static checks first: they take seconds, the suite minutes.
check() {  # check WHAT HINT COMMAND...
  local what="$1" hint="$2"; shift 2
  if ! "$@"; then
    echo "[test] $what failed (\`$*\`): $hint, then run scripts/test.sh again" >&2
    exit 1
  fi
}
check "ruff lint" "fix the findings above" .venv/bin/python -m ruff check .
check "ruff format check" "run .venv/bin/python -m ruff format ." .venv/bin/python -m ruff format --check .
check "mypy" "fix the type errors above" .venv/bin/python -m mypy

exec .venv/bin/python -m pytest "$@"
