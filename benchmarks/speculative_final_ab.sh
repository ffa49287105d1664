#!/bin/bash
# ASR options A/B, back to back on one machine: `voxmesh bench latency` through a fresh `voxmesh up` per block,
# alternating. Default: the speculative final on/off. Run from the repository root:
#   bash benchmarks/speculative_final_ab.sh [VARIABLE VALUE_A VALUE_B]
# e.g. bash benchmarks/speculative_final_ab.sh VOXMESH_ASR_PARTIAL_INTERVAL_MS 400 0
#      bash benchmarks/speculative_final_ab.sh VOXMESH_LLM_FIRST_PHRASE_YIELD_MS 2000 0
# RUNS (default 8) turns per block; BENCH_ARGS more options for each block, e.g. BENCH_ARGS="--busy-cores 1".
cd "$(dirname "$0")/.." || exit 1
var=${1:-VOXMESH_ASR_SPECULATIVE_FINAL}
a=${2:-true}
b=${3:-false}
for value in "$a" "$b" "$a" "$b"; do
  echo "=== $var=$value"
  # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
  env "$var=$value" .venv/bin/voxmesh bench latency --runs "${RUNS:-8}" --start 18200 ${BENCH_ARGS:-} \
    | grep -E "first audio at the client|final transcript \||first LLM token|first phrase|first TTS byte|failures|turns:"
done
