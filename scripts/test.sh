#!/usr/bin/env bash
# Set up on first use (venv, test deps, mosquitto, model bundle), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
