"""`voxmesh bench load`'s results: markdown tables, JSON, the plot and a section of a doc."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from clients.bench.loadlevel import Level
from clients.bench.loadsweep import HOP_P99_LIMIT_MS, LATENCY_FACTOR, LoadRun, Sweep

_SERVICES = ("gateway", "asr", "llm", "tts", "redis", "client")


def _fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def by_service(values: dict[str, float]) -> dict[str, float]:
    """Replica values (`asr-1`, `asr-2`) added up per service."""
    total: dict[str, float] = {}
    for name, value in values.items():
        service = name.rsplit("-", 1)[0] if name != "redis" else name
        total[service] = total.get(service, 0.0) + value
    return total


def _cores(level: Level) -> str:
    cores = by_service(level.cpu_cores)
    return " / ".join(_fmt(cores.get(service), 2) for service in _SERVICES)


def _replicas(level: Level) -> str:
    return " / ".join(str(level.autoscaler_replicas.get(s, "–")) for s in ("gateway", "asr", "llm", "tts"))


def table(sweep: Sweep) -> str:
    """One row per K."""
    lines = [
        "| K | answered | voice-to-voice p50 | p95 | bus hop p50 | p99 | p99 all running | dropped frames "
        "| reply gaps "
        "| CPU cores gateway / asr / llm / tts / redis / clients | sessions per gateway core "
        "| services' CPU per session | MB per session | client lag p99 | other load "
        "| autoscalers' replicas gw / asr / llm / tts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in sweep.levels:
        lines.append(
            f"| {lv.sessions} | {lv.questions_answered}/{lv.questions_asked} | {_fmt(lv.v2v_p50_ms)} ms "
            f"| {_fmt(lv.v2v_p95_ms)} ms | {_fmt(lv.hop_p50_ms, 2)} ms | {_fmt(lv.hop_p99_ms, 2)} ms "
            f"| {_fmt(lv.steady_hop_p99_ms, 2)} ms "
            f"| {lv.dropped} | {lv.reply_gaps} | {_cores(lv)} | {_fmt(lv.sessions_per_gateway_core)} "
            f"| {lv.service_cpu_per_session_pct:.1f} % "
            f"| {lv.service_mb_per_session:.2f} | {lv.client_lag_p99_ms:.0f} ms "
            f"| {lv.others_cores:.2f} cores | {_replicas(lv)} |"
        )
    return "\n".join(lines)


def knee_line(run: LoadRun, sweep: Sweep) -> str:
    """Where the sweep broke, and why."""
    target = (
        f"bus hop p99 ≤ {HOP_P99_LIMIT_MS:g} ms while every session runs, no dropped frames, "
        f"every question answered, voice-to-voice p95 under {LATENCY_FACTOR:g}× the smallest K's"
        if run.engines == "fake"
        else f"every question answered and voice-to-voice p95 under {LATENCY_FACTOR:g}× the smallest K's"
    )
    met = "none of the levels" if sweep.knee is None else f"up to **K = {sweep.knee}**"
    broke = (
        f"; it broke at K = {sweep.broke_at} ({sweep.broke_because})"
        if sweep.broke_at is not None
        else "; no level broke"
    )
    at_knee = next((lv for lv in sweep.levels if lv.sessions == sweep.knee), None)
    per_core = None if at_knee is None else at_knee.sessions_per_gateway_core
    cost = (
        ""
        if per_core is None
        else f" At K = {sweep.knee} one gateway core would carry ~{per_core:.0f} sessions."
    )
    return f"{sweep.label}: targets ({target}) met {met}{broke}.{cost}"


def summary(run: LoadRun) -> str:
    """The whole run in markdown."""
    delays = ", ".join(f"{k} {v:g} ms" for k, v in run.fake_delays.items())
    lines = [
        f"Machine: {run.machine}; {run.date}; load average at the end: {run.load_average}. Engines: "
        f"{run.engines}{f' ({delays})' if delays else ''}; each session asks {run.turns} "
        f"question{'s' * (run.turns != 1)} in a row, "
        "each once the previous reply has played out.",
    ]
    for index, sweep in enumerate(run.sweeps):
        if index == 1 and run.scaled is not None:
            lines += ["", f"The same sweep with more replicas of **{run.scaled}** ({run.scaled_because}):"]
        lines += ["", f"**{sweep.label}**", "", table(sweep), "", knee_line(run, sweep)]
        if sweep.error:
            lines.append(f"The sweep stopped early: {sweep.error}.")
    return "\n".join(lines)


def to_json(run: LoadRun) -> str:
    """Every level of every sweep, with the run's context."""
    data = {
        **{k: v for k, v in asdict(run).items() if k != "sweeps"},
        "sweeps": [
            {
                "label": sweep.label,
                "replicas": sweep.replicas,
                "knee": sweep.knee,
                "broke_at": sweep.broke_at,
                "broke_because": sweep.broke_because,
                "error": sweep.error,
                "levels": [level.to_json() for level in sweep.levels],
            }
            for sweep in run.sweeps
        ],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)


def doc_section(run: LoadRun, plot: str | None) -> str:
    """A section to append to a markdown doc."""
    title = (
        f"{run.date}: {run.engines} engines, K = {', '.join(str(lv.sessions) for lv in run.sweeps[0].levels)}"
    )
    image = "" if plot is None else f"\n![{title}]({plot})\n"
    return f"\n### {title}\n\n```\n{run.command}\n```\n\n{summary(run)}\n{image}"


def write_outputs(run: LoadRun, args: argparse.Namespace) -> None:
    """Print the summary; write the JSON, the plot and the doc section when asked."""
    print()
    print(summary(run))
    print()
    if args.json is not None:
        args.json.write_text(to_json(run) + "\n")
        print(f"results: {args.json}")
    if args.plot is not None:
        try:
            from clients.bench.loadplot import write_plot
        except ImportError as exc:  # matplotlib comes with the dev extra only
            print(f"voxmesh bench load: no plot: {exc}", file=sys.stderr)
        else:
            write_plot(run, args.plot)
            print(f"plot: {args.plot}")
    if args.doc is not None:
        plot = None if args.plot is None else os.path.relpath(args.plot, args.doc.parent)
        with args.doc.open("a") as doc:
            doc.write(doc_section(run, plot))
        print(f"appended to {args.doc}")
