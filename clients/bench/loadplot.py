"""A PNG of a load sweep: voice-to-voice and bus hop percentiles, CPU and drops, against K."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from clients.bench.loadreport import by_service
from clients.bench.loadsweep import HOP_P99_LIMIT_MS, LoadRun, Sweep

_STYLES = ("-", "--")


def _ks(sweep: Sweep) -> list[int]:
    return [level.sessions for level in sweep.levels]


def _values(values: list[float | None]) -> list[float]:
    """Unmeasured points as NaN: matplotlib leaves a gap."""
    return [math.nan if value is None else value for value in values]


def _lines(axis: Axes, run: LoadRun, series: tuple[tuple[str, str, str], ...]) -> None:
    """One line per (Level attribute, marker, name) and per sweep (solid: the first, dashed: the second)."""
    for style, sweep in zip(_STYLES, run.sweeps, strict=False):
        for attribute, marker, name in series:
            values = _values([getattr(level, attribute) for level in sweep.levels])
            axis.plot(_ks(sweep), values, style, marker=marker, label=f"{name}, {sweep.label}")


def _latency(axis: Axes, run: LoadRun) -> None:
    _lines(axis, run, (("v2v_p50_ms", "o", "p50"), ("v2v_p95_ms", "^", "p95")))
    for style, sweep in zip(_STYLES, run.sweeps, strict=False):
        if sweep.knee is not None:
            axis.axvline(sweep.knee, linestyle=style, color="#999999", linewidth=1)
    axis.set_title("Voice-to-voice (end of speech → first reply audio)", fontsize=10)
    axis.set_ylabel("ms")
    axis.set_ylim(bottom=0)


def _hops(axis: Axes, run: LoadRun) -> None:
    series = (
        ("hop_p50_ms", "o", "p50"),
        ("hop_p99_ms", "^", "p99"),
        ("steady_hop_p99_ms", "s", "p99 all running"),
    )
    _lines(axis, run, series)
    axis.axhline(HOP_P99_LIMIT_MS, color="#d62728", linewidth=1, label=f"{HOP_P99_LIMIT_MS:g} ms target")
    axis.set_yscale("log")
    axis.set_title("Bus hop (send → receipt, every stream)", fontsize=10)
    axis.set_ylabel("ms")


def _cpu(axis: Axes, run: LoadRun) -> None:
    sweep = run.sweeps[0]
    ks = _ks(sweep)
    services = sorted({s for lv in sweep.levels for s in by_service(lv.cpu_cores)})
    for service in services:
        axis.plot(
            ks, [by_service(lv.cpu_cores).get(service, 0.0) for lv in sweep.levels], marker="o", label=service
        )
    axis.set_title(f"CPU by process kind ({sweep.label})", fontsize=10)
    axis.set_ylabel("cores")
    axis.set_ylim(bottom=0)


def _drops(axis: Axes, run: LoadRun) -> None:
    series = (
        ("dropped", "o", "dropped frames"),
        ("reply_gaps", "x", "reply gaps"),
        ("unanswered", "s", "unanswered"),
    )
    _lines(axis, run, series)
    axis.set_title("Drops, playback gaps, unanswered questions", fontsize=10)
    axis.set_ylim(bottom=0)


def write_plot(run: LoadRun, path: Path) -> None:
    """Four panels against K, both sweeps when there are two (a bare Figure renders with Agg)."""
    figure = Figure(figsize=(12, 8), layout="constrained")
    axes = figure.subplots(2, 2)
    for draw, axis in zip((_latency, _hops, _cpu, _drops), axes.flat, strict=True):
        draw(axis, run)
        axis.set_xlabel("concurrent sessions (K)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"voxmesh bench load, {run.engines} engines, {run.date} ({run.machine})", fontsize=11)
    figure.savefig(path, dpi=100)
