"""One load level of `voxmesh bench load`: K sessions at once through the stack, and what it cost.

Clients run in child processes; meanwhile every process's CPU and memory and the work queues' pending
entries and lag are sampled; the services' /metrics are scraped before and after for the bus hop
histograms, the stage histograms and the drop counters.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError

from clients.bench import hops
from clients.bench.autoscale import gateway_replicas, worker_replicas
from clients.bench.loadstack import LoadStack
from clients.bench.metrics import HistogramTotals, parse_histograms
from clients.bench.procstat import MACHINE, Timeline
from clients.bench.stats import summarize
from shared import keys

SAMPLE_EVERY_S = 0.5
SCRAPE_EVERY = 2  # samples: the services' /metrics once a second
QUEUES = {"asr": (keys.ASR_DISPATCH, keys.ASR_GROUP), "llm": (keys.LLM_REQUESTS, keys.LLM_GROUP),
          "tts": (keys.TTS_REQUESTS, keys.TTS_GROUP)}  # fmt: skip
# Stage histograms per service: the mean of each over a level says which service slowed down.
STAGE_METRICS = {
    "asr": "voxmesh_asr_final_latency_seconds",
    "llm": "voxmesh_llm_first_phrase_seconds",
    "tts": "voxmesh_tts_first_byte_seconds",
}
_REFUSED = 'voxmesh_gateway_client_errors_total{reason="rate_limited"}'
_DROPPED = "voxmesh_messages_dropped_total"
_NOT_A_DROP = {"stale_turn"}  # work of a turn the user talked over: dropped by design


@dataclass
class Scraped:
    """Every replica's /metrics at one moment, added up: bus hop buckets, counters, stage totals."""

    buckets: hops.Buckets = field(default_factory=dict)
    counters: hops.Counters = field(default_factory=dict)
    stages: dict[str, HistogramTotals] = field(default_factory=dict)  # by service
    missing: list[str] = field(default_factory=list)


async def scrape(client: httpx.AsyncClient, stack: LoadStack) -> Scraped:
    """Scrape every replica of the stack."""
    total = Scraped()
    names = list(stack.metrics_urls)
    texts = await asyncio.gather(
        *(client.get(url) for url in stack.metrics_urls.values()), return_exceptions=True
    )
    for name, response in zip(names, texts, strict=True):
        if isinstance(response, BaseException) or response.status_code != 200:
            total.missing.append(name)
            continue
        hops.add(total.buckets, hops.parse_buckets(response.text))
        for key, value in hops.parse_counters(response.text, [_DROPPED, _REFUSED.split("{")[0]]).items():
            total.counters[key] = total.counters.get(key, 0.0) + value
        service = name.rsplit("-", 1)[0]
        metric = STAGE_METRICS.get(service)
        found = parse_histograms(response.text).get(metric) if metric else None
        if found is not None:
            old = total.stages.get(service, HistogramTotals(0.0, 0.0))
            total.stages[service] = HistogramTotals(old.count + found.count, old.total + found.total)
    return total


@dataclass
class QueueSamples:
    """(time, value) samples of each work queue group's pending entries and lag over the level."""

    pending: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    lag: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    def means(self, start: float, end: float) -> tuple[dict[str, float], dict[str, float]]:
        """Mean pending entries and lag per queue between `start` and `end` (all samples if none fell in)."""

        def mean(samples: list[tuple[float, int]]) -> float:
            inside = [v for t, v in samples if start <= t <= end] or [v for _, v in samples]
            return sum(inside) / len(inside) if inside else 0.0

        return (
            {s: mean(v) for s, v in self.pending.items()},
            {s: mean(v) for s, v in self.lag.items()},
        )


async def sample_queues(redis: Redis, into: QueueSamples, at: float) -> None:
    """One sample of every queue (lag needs Redis 7; missing on 6.2)."""
    for service, (stream, group) in QUEUES.items():
        try:
            groups: Any = await redis.xinfo_groups(stream)
        except RedisError:
            continue
        for info in groups:
            if info.get("name") in (group, group.encode()):
                into.pending.setdefault(service, []).append((at, int(info.get("pending") or 0)))
                if info.get("lag") is not None:
                    into.lag.setdefault(service, []).append((at, int(info["lag"])))


@dataclass
class Level:
    """What one level measured (times in ms, CPU in cores, memory in MB)."""

    sessions: int
    window_s: float
    questions_asked: int
    questions_answered: int
    failed_sessions: int
    errors: list[str]
    v2v_p50_ms: float | None
    v2v_p95_ms: float | None
    hop_p50_ms: float | None
    hop_p99_ms: float | None
    hop_count: int
    hop_p99_by_stream_ms: dict[str, float | None]
    steady_hop_p50_ms: float | None  # only while every session was running (no session starting)
    steady_hop_p99_ms: float | None
    steady_hop_p99_by_stream_ms: dict[str, float | None]
    frames_refused: int
    messages_dropped: int
    reply_gaps: int
    cpu_cores: dict[str, float]
    rss_mb: dict[str, float]
    service_cpu_per_session_pct: float
    service_mb_per_session: float
    stage_mean_ms: dict[str, float]
    queue_pending: dict[str, float]
    queue_lag: dict[str, float]
    autoscaler_replicas: dict[str, int]
    client_lag_p99_ms: float
    client_lag_max_ms: float
    others_cores: float  # CPU the machine spent on processes outside the benchmark meanwhile
    v2v_ms: list[float] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        """Input frames refused plus bus messages dropped (stale turns aside)."""
        return self.frames_refused + self.messages_dropped

    @property
    def unanswered(self) -> int:
        """Questions that got no reply."""
        return self.questions_asked - self.questions_answered

    @property
    def all_answered(self) -> bool:
        """Every question of every session got its reply."""
        return self.failed_sessions == 0 and self.questions_answered == self.questions_asked

    @property
    def sessions_per_gateway_core(self) -> float | None:
        """K over the CPU the gateways used: the sessions one fully busy gateway core would carry at this
        per-session cost (None when the gateways' CPU was not measured)."""
        cores = sum(v for name, v in self.cpu_cores.items() if name.startswith("gateway-"))
        return self.sessions / cores if cores > 0 else None

    def to_json(self) -> dict[str, Any]:
        """Every field, plus the derived ones."""
        derived = {"sessions_per_gateway_core": self.sessions_per_gateway_core}
        return {**asdict(self), "dropped": self.dropped, "all_answered": self.all_answered, **derived}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _client_specs(urls: list[str], sessions: int, procs: int, stagger_s: float) -> list[list[dict[str, Any]]]:
    """Sessions spread evenly over the start window and round-robin over gateways and client processes."""
    specs: list[list[dict[str, Any]]] = [[] for _ in range(max(1, min(procs, sessions)))]
    for index in range(sessions):
        start = stagger_s * index / sessions
        specs[index % len(specs)].append({"url": urls[index % len(urls)], "start_after_s": start})
    return specs


async def _run_client(spec: dict[str, Any], pids: dict[str, int], name: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.bench.loadclient",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    pids[name] = process.pid
    out, _ = await process.communicate(json.dumps(spec).encode())
    if process.returncode != 0:
        raise RuntimeError(f"load client {name} exited with code {process.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


async def run_level(
    stack: LoadStack,
    redis: Redis,
    http: httpx.AsyncClient,
    *,
    sessions: int,
    questions: list[str],
    turns: int,
    stagger_s: float,
    timeout_s: float,
    client_procs: int,
    idle_rss: dict[str, int],
) -> Level:
    """Run K sessions at once and measure the level."""
    before = await scrape(http, stack)
    pids = stack.pids()
    timeline, queues = Timeline(), QueueSamples()
    done = asyncio.Event()

    scrapes: list[tuple[float, Scraped]] = [(time.time(), before)]

    async def sampler() -> None:
        tick = 0
        while not done.is_set():
            now = time.time()
            timeline.add(now, pids)
            await sample_queues(redis, queues, now)
            if tick % SCRAPE_EVERY == 0:
                scrapes.append((time.time(), await scrape(http, stack)))
            tick += 1
            await asyncio.sleep(SAMPLE_EVERY_S)

    specs = _client_specs(stack.gateway_urls, sessions, client_procs, stagger_s)
    runs = [{"sessions": s, "questions": questions, "turns": turns, "timeout_s": timeout_s} for s in specs]
    sampling = asyncio.create_task(sampler())
    try:
        outputs = await asyncio.gather(*(_run_client(r, pids, f"client-{i + 1}") for i, r in enumerate(runs)))
    finally:
        done.set()
        await sampling
    timeline.add(time.time(), pids)
    stack.check_alive()
    after = await scrape(http, stack)
    scrapes.append((time.time(), after))
    return _measure(sessions, turns, outputs, scrapes, timeline, queues, idle_rss)


def _window(results: list[dict[str, Any]]) -> tuple[float, float]:
    """While every session was running (all started, none ended), or the whole level if never."""
    starts = [r["started_at"] for r in results]
    ends = [r["ended_at"] for r in results]
    start, end = max(starts), min(ends)
    return (start, end) if end - start >= 2 * SAMPLE_EVERY_S else (min(starts), max(ends))


def _hop_delta(before: Scraped, after: Scraped) -> hops.Buckets:
    delta: hops.Buckets = {}
    hops.add(delta, after.buckets)
    hops.add(delta, before.buckets, -1.0)
    return delta


def _measure(
    sessions: int,
    turns: int,
    outputs: list[dict[str, Any]],
    scrapes: list[tuple[float, Scraped]],
    timeline: Timeline,
    queues: QueueSamples,
    idle_rss: dict[str, int],
) -> Level:
    results = [r for output in outputs for r in output["sessions"]]
    start, end = _window(results)
    v2v = [ms for r in results for ms in r["first_audio_ms"] if ms is not None]
    summary = summarize(v2v)
    before, after = scrapes[0][1], scrapes[-1][1]
    delta = _hop_delta(before, after)
    everything = hops.merged(delta)
    # The steady part: the first scrape once every session was running to the last before one ended.
    first = next((sc for at, sc in scrapes if at >= start), after)
    last = next((sc for at, sc in reversed(scrapes) if at <= end), before)
    steady = _hop_delta(first, last) if first is not last else {}
    steady_all = hops.merged(steady)
    counters = {k: v - before.counters.get(k, 0.0) for k, v in after.counters.items()}
    dropped = sum(
        v for k, v in counters.items() if k.startswith(_DROPPED) and not any(r in k for r in _NOT_A_DROP)
    )
    cpu = timeline.cpu_cores(start, end)
    machine = cpu.pop(MACHINE, 0.0)
    rss = {k: v for k, v in timeline.peak_rss(start, end).items() if k != MACHINE}
    services = [name for name in cpu if not name.startswith("client")]
    pending, lag = queues.means(start, end)
    stage_mean: dict[str, float] = {}
    for service, totals in after.stages.items():
        old = before.stages.get(service, HistogramTotals(0.0, 0.0))
        if totals.count > old.count:
            stage_mean[service] = (totals.total - old.total) / (totals.count - old.count) * 1000.0
    replicas = {"gateway": gateway_replicas(sessions)}
    replicas |= {s: worker_replicas(s, pending.get(s, 0.0), lag.get(s)) for s in QUEUES}
    lags = [output["loop_lag_ms"] for output in outputs]
    grown = sum(max(0, rss.get(n, 0) - idle_rss.get(n, 0)) for n in services)
    return Level(
        sessions=sessions,
        window_s=round(end - start, 2),
        questions_asked=sessions * turns,
        questions_answered=sum(r["answered"] for r in results),
        failed_sessions=sum(1 for r in results if r["error"]),
        errors=sorted({r["error"] for r in results if r["error"]})[:5],
        v2v_p50_ms=None if summary is None else summary.p50,
        v2v_p95_ms=None if summary is None else summary.p95,
        hop_p50_ms=_ms(hops.quantile(0.5, everything)),
        hop_p99_ms=_ms(hops.quantile(0.99, everything)),
        hop_count=hops.count(everything),
        hop_p99_by_stream_ms={s: _ms(hops.quantile(0.99, b)) for s, b in sorted(delta.items())},
        steady_hop_p50_ms=_ms(hops.quantile(0.5, steady_all)),
        steady_hop_p99_ms=_ms(hops.quantile(0.99, steady_all)),
        steady_hop_p99_by_stream_ms={s: _ms(hops.quantile(0.99, b)) for s, b in sorted(steady.items())},
        frames_refused=round(counters.get(_REFUSED, 0.0)),
        messages_dropped=round(dropped),
        reply_gaps=sum(r["underruns"] for r in results),
        cpu_cores={k: round(v, 3) for k, v in sorted(cpu.items())},
        rss_mb={k: round(v / 2**20, 1) for k, v in sorted(rss.items())},
        service_cpu_per_session_pct=100.0 * sum(cpu[n] for n in services) / sessions,
        service_mb_per_session=grown / 2**20 / sessions,
        stage_mean_ms=stage_mean,
        queue_pending=pending,
        queue_lag=lag,
        autoscaler_replicas=replicas,
        client_lag_p99_ms=max((lag_["p99"] for lag_ in lags), default=0.0),
        client_lag_max_ms=max((lag_["max"] for lag_ in lags), default=0.0),
        others_cores=round(max(0.0, machine - sum(cpu.values())), 2),
        v2v_ms=v2v,
    )


def finite(value: float | None) -> bool:
    """A measured, finite number."""
    return value is not None and math.isfinite(value)
