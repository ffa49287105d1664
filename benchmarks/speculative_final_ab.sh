#!/bin/bash
# Speculative final on vs off, back to back (alternating, 8 questions each): `voxmesh talk` latency and
# the ASR metric end of speech -> transcript. Run from the repository root: bash benchmarks/speculative_final_ab.sh
cd "$(dirname "$0")/.."
for mode in true false true false; do
  VOXMESH_ASR_SPECULATIVE_FINAL=$mode .venv/bin/voxmesh up --port 18200 > "${TMPDIR:-/tmp}/spec_up.log" 2>&1 &
  UP=$!
  for i in $(seq 1 120); do grep -q "voxmesh is ready" "${TMPDIR:-/tmp}/spec_up.log" && break; sleep 1; done
  echo "=== speculative_final=$mode"
  .venv/bin/python benchmarks/talk_latency.py --runs 8 --url ws://127.0.0.1:18200/v1/realtime 2>&1 | tail -4
  curl -s http://127.0.0.1:18201/metrics | grep -E "^voxmesh_asr_final_latency_seconds_(sum|count)|^voxmesh_asr_speculative"
  kill -TERM $UP; wait $UP
done
