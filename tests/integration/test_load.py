"""Concurrent sessions through the mesh for a while: nothing lost or reordered, streams bounded, no live work
taken over, and no entry left pending afterwards.

Real processes on a real Redis (`voxmesh bench load`'s stack: Redis, the gateway, and the real ASR, LLM
and TTS service loops with fake engines, clients.bench.fakes), real-time talk clients in child processes
(clients.bench.loadcheck). `make test` runs a short one; the issue's run, 50 sessions for 60 s, is

    VOXMESH_LOAD_SESSIONS=50 VOXMESH_LOAD_SECONDS=60 .venv/bin/pytest -m load -s

(`-s` prints the figures; docs/reliability.md has them).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.bench import hops
from clients.bench.loadcheck import RedisSamples, SessionCheck, pending_entries, totals, turns_for
from clients.bench.loadstack import LoadStack
from clients.bench.questions import synthesize
from shared.bus import SESSION_STREAM_MAXLEN, WORK_QUEUE_MAXLEN, connect

pytestmark = [pytest.mark.integration, pytest.mark.load]

SESSIONS = int(os.environ.get("VOXMESH_LOAD_SESSIONS", "8"))
SECONDS = float(os.environ.get("VOXMESH_LOAD_SECONDS", "15"))
ASR_REPLICAS = int(os.environ.get("VOXMESH_LOAD_ASR_REPLICAS", "2"))
"""One fake-engine ASR replica carries about 20 sessions on this 2-core machine (docs/benchmarks.md)."""
CLIENT_PROCESSES = 2
STAGGER_S = 4.0
SAMPLE_EVERY_S = 0.5
DRAIN_S = 15.0
# Approximate trimming (MAXLEN ~) lets a stream run over its bound by up to one radix-tree node.
NODE_ENTRIES = 100
COUNTED = ("voxmesh_entries_taken_over_total", "voxmesh_messages_dropped_total",
           "voxmesh_gateway_client_errors_total")  # fmt: skip


async def _client(spec: dict[str, Any]) -> list[dict[str, Any]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.bench.loadcheck",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, _ = await process.communicate(json.dumps(spec).encode())
    finally:
        if process.returncode is None:  # cancelled: the clients go with the test
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"load client exited with {process.returncode}"
    result: list[dict[str, Any]] = json.loads(out)
    return result


async def _counters(stack: LoadStack) -> dict[str, float]:
    found: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=5.0) as http:
        for url in stack.metrics_urls.values():
            for key, value in hops.parse_counters((await http.get(url)).text, COUNTED).items():
                found[key] = found.get(key, 0.0) + value
    return found


async def _run(stack: LoadStack, questions: list[bytes]) -> dict[str, Any]:
    assert stack.redis_url is not None
    redis = connect(stack.redis_url)
    samples = RedisSamples()
    turns = turns_for(SECONDS)
    specs: list[dict[str, Any]] = [
        {"sessions": [], "questions": [q.hex() for q in questions], "turns": turns, "timeout_s": 60.0}
        for _ in range(CLIENT_PROCESSES)
    ]
    for index in range(SESSIONS):
        start = {"url": stack.gateway_urls[0], "start_after_s": STAGGER_S * index / SESSIONS}
        specs[index % CLIENT_PROCESSES]["sessions"].append(start)
    started = time.monotonic()
    clients = asyncio.gather(*(_client(spec) for spec in specs if spec["sessions"]))
    try:
        while not clients.done():
            await samples.sample(redis)
            await asyncio.wait([clients], timeout=SAMPLE_EVERY_S)
        checks = [check for output in clients.result() for check in output]
        ran_s = time.monotonic() - started
        drained_at = time.monotonic()
        while any((pending := await pending_entries(redis)).values()):
            if time.monotonic() - drained_at > DRAIN_S:
                break
            await asyncio.sleep(0.2)
        drain_s = time.monotonic() - drained_at
    finally:
        if not clients.done():  # sampling failed: stop the clients before the stack goes
            clients.cancel()
            await asyncio.gather(clients, return_exceptions=True)
        await redis.aclose()
    stack.check_alive()
    return {
        "sessions": SESSIONS, "turns_per_session": turns, "seconds": round(ran_s, 1),
        "asr_replicas": ASR_REPLICAS, **totals([SessionCheck(**c) for c in checks]),
        "max_stream_length": samples.max_length, "max_pending_idle_ms": samples.max_pending_idle_ms,
        "pending_peak": samples.pending_peak, "pending_after": pending, "drained_in_s": round(drain_s, 1),
        "counters": await _counters(stack),
    }  # fmt: skip


def test_concurrent_sessions_lose_and_reorder_nothing(tmp_path: Path) -> None:
    questions = [question.pcm for question in synthesize()]
    log_level = os.environ.get("VOXMESH_LOAD_LOG_LEVEL", "warning")
    with LoadStack("fake", {"asr": ASR_REPLICAS}, max_sessions=SESSIONS, log_level=log_level) as stack:
        report = asyncio.run(_run(stack, questions))
    (tmp_path / "load.json").write_text(json.dumps(report, indent=2))
    if path := os.environ.get("VOXMESH_LOAD_REPORT"):
        Path(path).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))

    assert report["failed_sessions"] == 0, report["errors"]
    assert report["answered"] == report["asked"] == SESSIONS * report["turns_per_session"]
    assert report["replies_intact"] == report["answered"], "a reply's audio lost or reordered frames"
    assert report["audio_bytes"] == report["audio_bytes_expected"] > 0
    assert report["repeated_phrases"] == 0 and report["rate_limited"] == 0
    counters = report["counters"]
    assert not any(v for k, v in counters.items() if "taken_over" in k), "live work was taken over"
    dropped = {k: v for k, v in counters.items() if "dropped" in k and "stale_turn" not in k and v}
    assert dropped == {}, "messages dropped"
    assert not counters.get('voxmesh_gateway_client_errors_total{reason="rate_limited"}'), "frames refused"
    assert report["pending_after"] == {"asr": 0, "llm": 0, "tts": 0}, "entries left pending"
    lengths = report["max_stream_length"]
    for kind in ("audio", "out"):
        assert lengths.get(kind, 0) <= SESSION_STREAM_MAXLEN + NODE_ENTRIES, lengths
    assert max(lengths.values()) <= WORK_QUEUE_MAXLEN + NODE_ENTRIES, lengths
