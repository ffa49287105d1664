"""`voxmesh bench load`: sweeps of K concurrent sessions, the knee, and the same sweep with two replicas of
the service that limited the first one."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clients.bench.latency import sigterm_interrupts
from clients.bench.loadlevel import Level, finite, run_level
from clients.bench.loadstack import SERVICES, Engines, LoadStack
from clients.bench.procstat import sample
from clients.bench.questions import synthesize
from clients.bench.report import command_line, load_average, machine
from shared.bus import connect

DEFAULT_SWEEPS = {"fake": (10, 25, 50, 100, 150, 200), "real": (1, 2, 3, 4)}
DEFAULT_TURNS = {"fake": 3, "real": 2}
HOP_P99_LIMIT_MS = 10.0
LATENCY_FACTOR = 1.5
_SETTLE_S = 2.0  # between levels: sessions closed, queues drained


@dataclass
class Sweep:
    """One stack configuration swept over K."""

    replicas: dict[str, int]
    levels: list[Level] = field(default_factory=list)
    knee: int | None = None  # the most sessions that met the targets
    broke_at: int | None = None
    broke_because: str = ""
    error: str = ""  # why the sweep stopped early, if it did

    @property
    def label(self) -> str:
        """`1 replica each`, or which service runs more."""
        more = [f"{service} ×{n}" for service, n in self.replicas.items() if n > 1]
        return ", ".join(more) if more else "1 replica each"


@dataclass
class LoadRun:
    """Everything `voxmesh bench load` produced."""

    command: str
    engines: Engines
    turns: int
    fake_delays: dict[str, float]
    sweeps: list[Sweep] = field(default_factory=list)
    scaled: str | None = None  # the service given two replicas in the second sweep
    scaled_because: str = ""
    date: str = field(default_factory=lambda: datetime.date.today().isoformat())
    machine: str = field(default_factory=machine)
    load_average: str = ""


def breaks(level: Level, engines: Engines, baseline_p95: float | None) -> str:
    """Why a level misses the targets ("" when it meets them)."""
    reasons = []
    if not level.all_answered:
        reasons.append(f"{level.unanswered} questions unanswered")
    if engines == "fake":
        # While every session runs: a session's start is a one-off, and is shown apart (whole-level p99).
        hop = level.steady_hop_p99_ms if finite(level.steady_hop_p99_ms) else level.hop_p99_ms
        if not finite(hop) or (hop or 0.0) > HOP_P99_LIMIT_MS:
            reasons.append(f"bus hop p99 {hop or float('nan'):.1f} ms > {HOP_P99_LIMIT_MS:g} ms")
        if level.dropped:
            reasons.append(f"{level.dropped} frames dropped")
    if baseline_p95 is not None and finite(level.v2v_p95_ms):
        limit = LATENCY_FACTOR * baseline_p95
        if (level.v2v_p95_ms or 0.0) >= limit:
            reasons.append(
                f"voice-to-voice p95 {level.v2v_p95_ms:.0f} ms ≥ {LATENCY_FACTOR:g}× {baseline_p95:.0f}"
            )
    return "; ".join(reasons)


def find_knee(sweep: Sweep, engines: Engines) -> None:
    """The largest K before the first level that breaks; the baseline is the smallest K's p95."""
    if not sweep.levels:
        return
    baseline = sweep.levels[0].v2v_p95_ms
    for level in sweep.levels:
        reason = breaks(level, engines, baseline)
        if reason:
            sweep.broke_at, sweep.broke_because = level.sessions, reason
            return
        sweep.knee = level.sessions


def bottleneck(sweep: Sweep, engines: Engines) -> tuple[str, str]:
    """The service to scale: with fake engines the busiest replica (a Python process tops out at one
    core); with real ones the service whose stage slowed down most from the smallest K."""
    level = next((lv for lv in sweep.levels if lv.sessions == sweep.broke_at), sweep.levels[-1])
    if engines == "real":
        first = sweep.levels[0].stage_mean_ms
        growth = {s: ms - first.get(s, ms) for s, ms in level.stage_mean_ms.items()}
        if growth:
            service = max(growth, key=lambda s: growth[s])
            return service, f"its stage grew most by K={level.sessions} (+{growth[service]:.0f} ms mean)"
    busiest = {n: c for n, c in level.cpu_cores.items() if n.rsplit("-", 1)[0] in SERVICES}
    name = max(busiest, key=lambda n: busiest[n]) if busiest else "gateway-1"
    cores = busiest.get(name, 0.0)
    return name.rsplit("-", 1)[0], f"busiest process at K={level.sessions} ({cores:.2f} cores)"


def _write_questions(folder: Path) -> list[str]:
    paths = []
    for index, question in enumerate(synthesize()):
        path = folder / f"q{index}.pcm"
        path.write_bytes(question.pcm)
        paths.append(str(path))
    return paths


async def _sweep(
    args: argparse.Namespace, sweep: Sweep, questions: list[str], fake_env: dict[str, str]
) -> None:
    sizes: list[int] = args.sessions
    stack_of = LoadStack(
        args.engines,
        sweep.replicas,
        max_sessions=max(sizes) + 10,
        fake_env=fake_env,
        redis_url=args.redis_url,
    )
    with stack_of as stack:
        print(f"--- {sweep.label}: ready ({', '.join(p.name for p in stack.processes)})", flush=True)
        redis = connect(stack.redis_url or "")
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:
                # Memory per session is measured against the stack before any session: Python rarely gives
                # memory back, so the idle size after a level would hide what the next one adds.
                idle = {n: s.rss_bytes for n, pid in stack.pids().items() if (s := sample(pid))}
                for sessions in sizes:
                    try:
                        level = await run_level(
                            stack, redis, http, sessions=sessions, questions=questions, turns=args.turns,
                            stagger_s=args.stagger, timeout_s=args.timeout, client_procs=args.client_procs,
                            idle_rss=idle,
                        )  # fmt: skip
                    except RuntimeError as exc:  # a process died: keep what was measured so far
                        sweep.error = f"K={sessions}: {exc}"
                        print(f"sweep stopped: {sweep.error}", file=sys.stderr, flush=True)
                        break
                    sweep.levels.append(level)
                    print(_row(level), flush=True)
                    await asyncio.sleep(_SETTLE_S)
        finally:
            await redis.aclose()
    find_knee(sweep, args.engines)


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _row(level: Level) -> str:
    return (
        f"K={level.sessions:>4}: answered {level.questions_answered}/{level.questions_asked}, "
        f"voice-to-voice p50 {_fmt(level.v2v_p50_ms)} p95 {_fmt(level.v2v_p95_ms)} ms, "
        f"hop p50 {_fmt(level.hop_p50_ms, 2)} p99 {_fmt(level.hop_p99_ms, 2)} ms "
        f"(steady p99 {_fmt(level.steady_hop_p99_ms, 2)}), dropped {level.dropped}, "
        f"gaps {level.reply_gaps}, CPU {level.service_cpu_per_session_pct:.2f} %/session, "
        f"client lag p99 {level.client_lag_p99_ms:.0f} ms"
    )


async def run(args: argparse.Namespace, fake_env: dict[str, str]) -> LoadRun:
    """Every sweep the arguments ask for."""
    delays = {k.removeprefix("VOXMESH_FAKE_").lower(): float(v) for k, v in fake_env.items()}
    run_ = LoadRun(command_line(), args.engines, args.turns, delays if args.engines == "fake" else {})
    with tempfile.TemporaryDirectory(prefix="voxmesh-questions-") as folder:
        questions = _write_questions(Path(folder))
        first = Sweep({service: 1 for service in SERVICES})
        run_.sweeps.append(first)
        await _sweep(args, first, questions, fake_env)
        if args.scale != "none" and first.levels:
            service, why = bottleneck(first, args.engines)
            if args.scale != "auto":
                service, why = args.scale, "chosen on the command line"
            run_.scaled, run_.scaled_because = service, why
            second = Sweep({s: (args.replicas if s == service else 1) for s in SERVICES})
            run_.sweeps.append(second)
            await _sweep(args, second, questions, fake_env)
    run_.load_average = load_average()
    return run_


def run_load(args: argparse.Namespace) -> int:
    """`voxmesh bench load`; 0 when it ran (targets met or not), 1 on an error."""
    from clients.bench.loadreport import write_outputs

    args.sessions = args.sessions or list(DEFAULT_SWEEPS[args.engines])
    args.turns = args.turns or DEFAULT_TURNS[args.engines]
    if min(args.sessions) < 1 or args.turns < 1 or args.client_procs < 1 or args.replicas < 2:
        print("voxmesh bench load: error: sessions, turns, client procs >= 1; replicas >= 2", file=sys.stderr)
        return 2
    if args.scale not in ("auto", "none", *SERVICES):
        print(
            f"voxmesh bench load: error: --scale: auto, none or one of {', '.join(SERVICES)}", file=sys.stderr
        )
        return 2
    fake_env: dict[str, Any] = {
        f"VOXMESH_FAKE_{name.upper()}": str(value)
        for name, value in (
            ("asr_ms", args.fake_asr_ms),
            ("llm_first_ms", args.fake_llm_first_ms),
            ("llm_token_ms", args.fake_llm_token_ms),
            ("tts_first_ms", args.fake_tts_first_ms),
        )  # fmt: skip
    }
    try:
        with sigterm_interrupts():
            result = asyncio.run(run(args, fake_env))
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"voxmesh bench load: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    write_outputs(result, args)
    return 0
