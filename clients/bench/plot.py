"""A PNG of where the time goes (medians per stage) and of end of speech → first audio per turn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from clients.bench.report import Run
from clients.bench.results import TurnResult
from clients.bench.stats import stage_values

# (part, colour); each part of a turn's first audio, in the order the turn spends it.
_PARTS = (
    ("silence wait (end of turn)", "#9aa5b1"),
    ("transcript after end of turn", "#4c78a8"),
    ("LLM to first phrase", "#f58518"),
    ("TTS to first byte", "#54a24b"),
    ("hops, gateway, rest", "#e45756"),
)


def _parts(turn: TurnResult) -> list[float] | None:
    """A successful turn's first audio split into `_PARTS`, in ms; None if a stage is missing."""
    s = turn.stages_ms
    needed = ("endpoint", "asr_final", "llm_first_phrase", "tts_first_byte", "first_audio")
    if not turn.ok or any(key not in s for key in needed):
        return None
    rest = s["first_audio"] - s["asr_final"] - s["llm_first_phrase"] - s["tts_first_byte"]
    transcript = s["asr_final"] - s["endpoint"]
    return [s["endpoint"], max(0.0, transcript), s["llm_first_phrase"], s["tts_first_byte"], max(0.0, rest)]


def _median_parts(turns: Sequence[TurnResult]) -> list[float] | None:
    rows = [parts for turn in turns if (parts := _parts(turn)) is not None]
    return None if not rows else [float(v) for v in np.median(np.asarray(rows), axis=0)]


def _stacked(axis: Axes, rows: list[tuple[str, list[float]]]) -> None:
    names = [name for name, _ in rows]
    left = np.zeros(len(rows))
    for index, (part, colour) in enumerate(_PARTS):
        widths = np.asarray([parts[index] for _, parts in rows])
        bars = axis.barh(names, widths, left=left, color=colour, label=part, height=0.55)
        labels = [f"{w:.0f}" if w >= 60 else "" for w in widths]
        axis.bar_label(bars, labels=labels, label_type="center", fontsize=8, color="white")
        left += widths
    for y, total in enumerate(left):
        axis.text(total + 8, y, f"{total:.0f} ms", va="center", fontsize=9)
    axis.invert_yaxis()
    axis.set_xlim(0, max(left) * 1.18)
    axis.set_xlabel("ms from the end of speech (median of each part)")
    axis.set_title("Where the time goes", fontsize=11)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=8, frameon=False)


def _boxes(axis: Axes, run: Run) -> None:
    series = [
        ("mesh\n(client)", stage_values(run.mesh, "first_audio")),
        ("mesh\n(gateway)", stage_values(run.mesh, "gateway_first_audio")),
        ("mesh,\nbusy cores", stage_values(run.busy, "first_audio")),
        ("in-process", stage_values(run.local, "first_audio")),
        ("in-process,\nsized\nwindow", stage_values(run.local, "first_audio_short_window")),
    ]
    series = [(name, values) for name, values in series if values]
    axis.boxplot([values for _, values in series], whis=(5, 95), widths=0.5, showfliers=False)
    axis.set_xticks(range(1, len(series) + 1), [name for name, _ in series], fontsize=8)
    for position, (_, values) in enumerate(series, start=1):
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
        axis.scatter(position + jitter, values, s=12, color="#333333", alpha=0.7, zorder=3)
    axis.set_ylim(bottom=0)
    axis.set_ylabel("ms")
    axis.set_title("End of speech → first audio, per turn", fontsize=11)
    axis.grid(axis="y", alpha=0.3)


def write_plot(run: Run, path: Path, title: str) -> None:
    """Write the two panels to `path` (PNG; a bare Figure renders with Agg, no display or pyplot)."""
    rows = [
        (name, parts)
        for name, turns in (("mesh", run.mesh), ("in-process", run.local))
        if (parts := _median_parts(turns)) is not None
    ]
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[3, 2])
    if rows:
        _stacked(left, rows)
    _boxes(right, run)
    figure.suptitle(title, fontsize=12)
    figure.savefig(path, dpi=100)
