#!/usr/bin/env bash
# Set up on first use, then run a naila command, e.g.  scripts/run.sh chat "Hello, who are you?"
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/naila "$@"
