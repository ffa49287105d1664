"""`voxmesh bench load`'s pieces: hop quantiles from buckets, playback gaps, /proc sampling, the knee,
the autoscalers' answer (against the manifests), the fake engines and the report."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from clients.bench import autoscale, hops
from clients.bench.fakes import FakeGenerator, FakeRecognizer, FakeSettings, FakeSynthesizer
from clients.bench.loadclient import underruns
from clients.bench.loadlevel import Level, _client_specs, _window
from clients.bench.loadreport import doc_section, summary, to_json
from clients.bench.loadsweep import LoadRun, Sweep, bottleneck, breaks, find_knee
from clients.bench.procstat import Timeline, sample
from clients.talk.turns import TraceEntry
from services.llm.engine import ChatMessage
from services.llm.phrases import PhraseChunker
from tests.deploy_support import manifests_of_kind

pytestmark = pytest.mark.unit


# ---- bus hops from histogram buckets


def test_quantiles_interpolate_within_buckets_as_prometheus_does() -> None:
    cumulative = {0.001: 50.0, 0.005: 100.0, math.inf: 100.0}
    assert hops.quantile(0.5, cumulative) == pytest.approx(0.001)
    assert hops.quantile(0.99, cumulative) == pytest.approx(0.001 + 0.004 * 49 / 50)
    assert hops.quantile(0.99, {0.001: 0.0, math.inf: 0.0}) is None
    assert hops.quantile(0.99, {0.001: 10.0, math.inf: 20.0}) == pytest.approx(0.001), (
        "in +Inf: its lower bound"
    )
    assert hops.count(cumulative) == 100


def test_buckets_and_counters_are_parsed_added_and_subtracted() -> None:
    registry = CollectorRegistry()
    bus = Histogram("voxmesh_bus_delivery_seconds", "h", ["stream"], buckets=(0.001, 0.01), registry=registry)
    dropped = Counter("voxmesh_messages_dropped_total", "c", ["reason"], registry=registry)
    bus.labels(stream="audio_in").observe(0.0005)
    before = hops.parse_buckets(generate_latest(registry).decode())
    for seconds in (0.0005, 0.002, 0.02):
        bus.labels(stream="audio_in").observe(seconds)
    bus.labels(stream="session_out").observe(0.002)
    dropped.labels(reason="stale_turn").inc(3)
    text = generate_latest(registry).decode()
    delta: hops.Buckets = {}
    hops.add(delta, hops.parse_buckets(text))
    hops.add(delta, before, -1.0)
    assert delta["audio_in"] == {0.001: 1.0, 0.01: 2.0, math.inf: 3.0}
    assert hops.count(hops.merged(delta)) == 4
    assert hops.count(hops.merged(delta, ["session_out"])) == 1
    counters = hops.parse_counters(text, ["voxmesh_messages_dropped_total"])
    assert counters == {'voxmesh_messages_dropped_total{reason="stale_turn"}': 3.0}


# ---- the client's view


def _entry(at: float, kind: str, turn: int | None, **data: Any) -> TraceEntry:
    return TraceEntry(at, "in", kind, turn, data)


def test_reply_gaps_are_counted_from_when_the_audio_arrived() -> None:
    second = 16000 * 2  # one second of 16 kHz audio
    smooth = [_entry(0.0, "audio.start", 1, sample_rate=16000), _entry(0.0, "audio", 1, bytes=second),
              _entry(0.5, "audio", 1, bytes=second), _entry(0.6, "audio.end", 1)]  # fmt: skip
    assert underruns(smooth) == 0
    gap = [_entry(0.0, "audio", 2, bytes=second // 10), _entry(0.5, "audio", 2, bytes=second),
           _entry(2.0, "audio", 2, bytes=second), _entry(2.1, "audio.end", 2)]  # fmt: skip
    assert underruns(gap) == 2
    assert underruns([_entry(0.0, "audio", None, bytes=second)]) == 0, "stale audio is not played"


def test_sessions_spread_over_gateways_processes_and_the_start_window() -> None:
    specs = _client_specs(["ws://a", "ws://b"], sessions=5, procs=2, stagger_s=5.0)
    assert [len(spec) for spec in specs] == [3, 2]
    flat = sorted((s["start_after_s"], s["url"]) for spec in specs for s in spec)
    assert flat == [(0.0, "ws://a"), (1.0, "ws://b"), (2.0, "ws://a"), (3.0, "ws://b"), (4.0, "ws://a")]
    assert len(_client_specs(["ws://a"], sessions=1, procs=4, stagger_s=1.0)) == 1
    assert _window([{"started_at": 0.0, "ended_at": 10.0}, {"started_at": 2.0, "ended_at": 9.0}]) == (
        2.0,
        9.0,
    )
    assert _window([{"started_at": 0.0, "ended_at": 1.0}, {"started_at": 5.0, "ended_at": 9.0}]) == (0.0, 9.0)


def test_cpu_and_memory_of_a_process_from_proc() -> None:
    found = sample(os.getpid())
    assert found is not None and found.cpu_s > 0 and found.rss_bytes > 10 * 2**20
    timeline = Timeline()
    timeline.add(time.time(), {"me": os.getpid()})
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    timeline.add(time.time(), {"me": os.getpid(), "gone": 2**22 + 7})
    cores = timeline.cpu_cores(0.0, time.time())
    assert 0.3 < cores["me"] <= 1.5 and "gone" not in cores and cores["machine"] >= cores["me"] * 0.9
    assert timeline.peak_rss(0.0, time.time())["me"] >= found.rss_bytes // 2


# ---- the knee, the bottleneck, the autoscalers


def _level(k: int, p95: float, hop_p99: float = 2.0, dropped: int = 0, answered: int | None = None,
           cpu: dict[str, float] | None = None, stages: dict[str, float] | None = None) -> Level:  # fmt: skip
    return Level(
        sessions=k, window_s=10.0, questions_asked=k,
        questions_answered=k if answered is None else answered, failed_sessions=0, errors=[],
        v2v_p50_ms=p95 * 0.8, v2v_p95_ms=p95, hop_p50_ms=0.5, hop_p99_ms=hop_p99 * 3, hop_count=100,
        hop_p99_by_stream_ms={}, steady_hop_p50_ms=0.5, steady_hop_p99_ms=hop_p99,
        steady_hop_p99_by_stream_ms={}, frames_refused=dropped, messages_dropped=0, reply_gaps=0,
        cpu_cores=cpu or {"gateway-1": 0.1 * k, "asr-1": 0.05 * k}, rss_mb={},
        service_cpu_per_session_pct=1.0, service_mb_per_session=0.5, stage_mean_ms=stages or {},
        queue_pending={}, queue_lag={}, autoscaler_replicas={}, client_lag_p99_ms=1.0,
        client_lag_max_ms=2.0, others_cores=0.0,
    )  # fmt: skip


def test_the_knee_is_the_last_level_before_the_first_that_breaks() -> None:
    sweep = Sweep(
        {"gateway": 1}, [_level(10, 600), _level(50, 650), _level(100, 700, hop_p99=14.0), _level(150, 800)]
    )
    find_knee(sweep, "fake")
    assert (sweep.knee, sweep.broke_at) == (50, 100) and "bus hop p99 14.0 ms" in sweep.broke_because
    assert breaks(_level(5, 600, dropped=3), "fake", 600.0) == "3 frames dropped"
    assert "1 questions unanswered" in breaks(_level(5, 600, answered=4), "fake", 600.0)
    assert breaks(_level(5, 600, hop_p99=50.0), "real", 600.0) == "", "real engines: no hop target"
    assert breaks(_level(5, 600, hop_p99=4.0), "fake", 600.0) == "", "a whole-level 12 ms: session starts"
    real = Sweep({"llm": 1}, [_level(1, 1000), _level(2, 1400), _level(3, 1600)])
    find_knee(real, "real")
    assert (real.knee, real.broke_at) == (2, 3) and "≥ 1.5× 1000" in real.broke_because
    assert bottleneck(sweep, "fake") == ("gateway", "busiest process at K=100 (10.00 cores)")
    real.levels = [
        _level(1, 1000, stages={"asr": 300, "llm": 500}),
        _level(3, 1600, stages={"asr": 350, "llm": 900}),
    ]
    assert bottleneck(real, "real")[0] == "llm"


def test_autoscaler_answers_follow_the_manifests() -> None:
    hpa = manifests_of_kind("HorizontalPodAutoscaler")["gateway"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == autoscale.GATEWAY_REPLICAS
    [metric] = hpa["metrics"]
    assert int(metric["pods"]["target"]["averageValue"]) == autoscale.GATEWAY_SESSIONS_PER_POD
    for name, scaled in manifests_of_kind("ScaledObject").items():
        spec = scaled["spec"]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == autoscale.WORKER_REPLICAS
        found = {
            key: int(t["metadata"][key])
            for t in spec["triggers"]
            for key in ("pendingEntriesCount", "lagCount")
            if key in t["metadata"]
        }
        trigger = autoscale.TRIGGERS[name]
        assert found == {"pendingEntriesCount": trigger.pending_per_replica} | (
            {} if trigger.lag_per_replica is None else {"lagCount": trigger.lag_per_replica}
        )
    assert autoscale.gateway_replicas(150) == 2 and autoscale.gateway_replicas(450) == 5
    assert autoscale.worker_replicas("asr", pending=17, lag=None) == 3
    assert autoscale.worker_replicas("llm", pending=2, lag=3.5) == 4
    assert (
        autoscale.worker_replicas("tts", pending=0, lag=0) == 1
        and autoscale.worker_replicas("llm", 99, 0) == 10
    )


# ---- fake engines and the report


async def test_fake_engines_wait_and_answer() -> None:
    fakes = FakeSettings(asr_ms=1, llm_first_ms=1, llm_token_ms=0, tts_first_ms=1, tts_speed=1000)
    assert await FakeRecognizer(fakes).transcribe(b"") == fakes.transcript
    assert await FakeRecognizer(fakes).transcribe(b"", partial=True) == "What is the"
    deltas = [d async for d in FakeGenerator(fakes).stream([ChatMessage("user", "hi")])]
    chunker = PhraseChunker()
    phrases = [p for d in deltas for p in chunker.push(d)] + chunker.flush()
    assert " ".join(phrases) == fakes.reply
    chunks = [c async for c in FakeSynthesizer(fakes).stream("Paris.", 16000)]
    assert sum(len(c) for c in chunks) == 16000 * 2 * 6 * 60 // 1000 and len(chunks[0]) == 3200


def test_report_tables_json_and_doc_section(tmp_path: Path) -> None:
    run = LoadRun("voxmesh bench load", "fake", 3, {"asr_ms": 50.0})
    first = Sweep({"gateway": 1, "asr": 1}, [_level(10, 600), _level(100, 1000)])
    find_knee(first, "fake")
    run.sweeps = [first, Sweep({"gateway": 2, "asr": 1}, [_level(10, 600)])]
    run.scaled, run.scaled_because = "gateway", "busiest"
    text = summary(run)
    assert "**1 replica each**" in text and "**gateway ×2**" in text and "met up to **K = 10**" in text
    assert "| 100 | 100/100 | 800 ms | 1000 ms | 0.50 ms | 6.00 ms | 2.00 ms | 0 | 0 |" in text
    data = json.loads(to_json(run))
    assert [[lv["sessions"] for lv in sweep["levels"]] for sweep in data["sweeps"]] == [[10, 100], [10]]
    assert (
        data["sweeps"][0]["knee"] == 10 and data["sweeps"][0]["levels"][1]["sessions_per_gateway_core"] == 10
    )
    section = doc_section(run, "load.png")
    assert section.startswith("\n### ") and "![" in section and "```\nvoxmesh bench load\n```" in section
