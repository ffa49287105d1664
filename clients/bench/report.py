"""The benchmark's results as a markdown table and summary, as JSON, and as a section of a doc."""

from __future__ import annotations

import datetime
import json
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clients.bench.pauses import PauseResult
from clients.bench.results import STAGES, TurnResult
from clients.bench.stats import Ratios, Summary, ratios, summarize, summarize_stage


def machine() -> str:
    """CPUs this process may use (as `nproc` counts them) and the CPU model."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{len(os.sched_getaffinity(0))} CPUs (nproc), {model}"


def command_line() -> str:
    """The command line as typed, for the record."""
    program = sys.argv[0]
    if os.path.basename(program) == "voxmesh":
        program = os.path.relpath(program) if os.path.isabs(program) else program
    else:
        program = "voxmesh"
    return shlex.join([program, *sys.argv[1:]])


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


@dataclass
class Run:
    """Everything one `voxmesh bench latency` produced, and how it was run."""

    command: str
    url: str
    runs: int
    busy_cores: int
    questions: list[str]
    mesh: list[TurnResult] = field(default_factory=list)
    local: list[TurnResult] = field(default_factory=list)
    busy: list[TurnResult] = field(default_factory=list)  # the mesh turns asked again with busy cores
    pauses: list[PauseResult] = field(default_factory=list)  # the pause set, if asked
    date: str = field(default_factory=lambda: datetime.date.today().isoformat())
    machine: str = field(default_factory=machine)
    load_average: str = ""  # taken at the end
    transport: str = "websocket"  # what the mesh turns ran over: websocket | webrtc
    webrtc: list[TurnResult] = field(default_factory=list)  # with --transport both: the turns over WebRTC

    def ratios(self) -> Ratios:
        """Mesh over in-process, end of speech → first audio."""
        return ratios(summarize_stage(self.mesh, "first_audio"), summarize_stage(self.local, "first_audio"))

    def busy_ratios(self) -> Ratios:
        """Mesh with busy cores over the same run's idle mesh, end of speech → first audio."""
        return ratios(summarize_stage(self.busy, "first_audio"), summarize_stage(self.mesh, "first_audio"))

    def short_window_ratios(self) -> Ratios:
        """Mesh over the in-process chain with the same (sized-window) Whisper as the mesh."""
        local = summarize_stage(self.local, "first_audio_short_window")
        return ratios(summarize_stage(self.mesh, "first_audio"), local)


def format_ms(summary: Summary | None, attribute: str) -> str:
    """A percentile as whole milliseconds, "–" when not measured."""
    return "–" if summary is None else f"{getattr(summary, attribute):.0f} ms"


def format_ratio(value: float | None) -> str:
    """A ratio to two decimals, "–" when it cannot be computed."""
    return "–" if value is None else f"{value:.2f}"


def table(mesh: Sequence[TurnResult], local: Sequence[TurnResult], run_ratios: Ratios) -> str:
    """Markdown: one row per stage, p50/p95 over the successful turns of each mode, then the ratio."""
    lines = [
        "| stage | metric (mesh / in-process) | mesh p50 | p95 | in-process p50 | p95 |",
        "|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        m, s = summarize_stage(mesh, stage.key), summarize_stage(local, stage.key)
        if m is None and s is None:
            continue
        cells = [format_ms(m, "p50"), format_ms(m, "p95"), format_ms(s, "p50"), format_ms(s, "p95")]
        lines.append(f"| {stage.label} | {stage.source} | {' | '.join(cells)} |")
    lines.append(
        f"| ratio mesh / in-process, first audio | | {format_ratio(run_ratios.p50)} "
        f"| {format_ratio(run_ratios.p95)} | | |"
    )
    return "\n".join(lines)


def busy_table(run: Run) -> str:
    """Markdown: each mesh stage idle and with busy cores, p50/p95, and the first-audio ratio."""
    lines = [
        f"| stage | idle p50 | p95 | {run.busy_cores} busy p50 | p95 | busy / idle p50 | p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        idle, busy = summarize_stage(run.mesh, stage.key), summarize_stage(run.busy, stage.key)
        if idle is None or busy is None:
            continue
        cells = [
            format_ms(idle, "p50"),
            format_ms(idle, "p95"),
            format_ms(busy, "p50"),
            format_ms(busy, "p95"),
        ]
        ratio = ratios(busy, idle)
        lines.append(
            f"| {stage.label} | {' | '.join(cells)} | {format_ratio(ratio.p50)} | {format_ratio(ratio.p95)} |"
        )
    return "\n".join(lines)


def transport_table(run: Run) -> str:
    """Markdown: each mesh stage over the WebSocket and over WebRTC, p50/p95, and the ratio."""
    lines = [
        "| stage | WebSocket p50 | p95 | WebRTC p50 | p95 | WebRTC / WebSocket p50 | p95 |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        ws, rtc = summarize_stage(run.mesh, stage.key), summarize_stage(run.webrtc, stage.key)
        if ws is None or rtc is None:
            continue
        cells = [format_ms(ws, "p50"), format_ms(ws, "p95"), format_ms(rtc, "p50"), format_ms(rtc, "p95")]
        ratio = ratios(rtc, ws)
        lines.append(
            f"| {stage.label} | {' | '.join(cells)} | {format_ratio(ratio.p50)} | {format_ratio(ratio.p95)} |"
        )
    return "\n".join(lines)


def _outcome(name: str, turns: Sequence[TurnResult], runs: int) -> str:
    ok = sum(turn.ok for turn in turns)
    return f"{name} {ok}/{runs} ok"


def failures(run: Run) -> list[str]:
    """One line per failed turn."""
    return [
        f"{turn.mode} turn {turn.index + 1} ({turn.question!r}): {turn.error}"
        for turn in (*run.mesh, *run.local, *run.busy, *run.webrtc)
        if not turn.ok
    ]


def flag_counts(turns: Sequence[TurnResult]) -> list[str]:
    """Each distinct flag with how many turns raised it."""
    counts: dict[str, int] = {}
    for turn in turns:
        for flag in turn.flags:
            counts[flag] = counts.get(flag, 0) + 1
    return [f"{flag} ({count} of {len(turns)} turns)" for flag, count in sorted(counts.items())]


def pause_summary(pauses: Sequence[PauseResult]) -> str:
    """The pause set in one paragraph: the share kept as one turn, its latency, what went wrong."""
    kept = [result for result in pauses if result.one_turn]
    latency = summarize(r.first_audio_ms for r in kept if r.first_audio_ms is not None)
    split = [f"{r.question!r} ({r.error or f'{r.turns} turns'})" for r in pauses if not r.one_turn]
    text = (
        f"Pause set (a 600 ms pause in mid-sentence, halves spoken apart): {len(kept)}/{len(pauses)} "
        f"({100 * len(kept) / len(pauses):.0f} %) kept as one turn"
    )
    if latency is not None:
        text += f"; their first audio p50 {latency.p50:.0f} ms, p95 {latency.p95:.0f} ms"
    return text + ("." if not split else "; not kept: " + "; ".join(split) + ".")


def count_totals(turns: Sequence[TurnResult]) -> dict[str, int]:
    """Each counter summed over the turns, in first-seen order."""
    totals: dict[str, int] = {}
    for turn in turns:
        for key, value in turn.counts.items():
            totals[key] = totals.get(key, 0) + value
    return totals


def summary(run: Run) -> str:
    """The markdown report: context, the table, outcomes, ratios, failures and flags."""
    outcomes = [_outcome("mesh" if run.transport == "websocket" else "mesh over WebRTC", run.mesh, run.runs)]
    if run.webrtc:
        outcomes.append(_outcome("mesh over WebRTC", run.webrtc, run.runs))
    if run.local:
        outcomes.append(_outcome("in-process", run.local, run.runs))
    if run.busy:
        outcomes.append(_outcome(f"mesh with {run.busy_cores} busy", run.busy, run.runs))
    same = run.short_window_ratios()
    lines = [
        f"Machine: {run.machine}; {run.date}; load average (1, 5, 15 min) at the end: {run.load_average}; "
        f"busy cores: {run.busy_cores}.",
        "",
        table(run.mesh, run.local, run.ratios()),
        "",
        f"Runs: {run.runs} turns over {len(run.questions)} questions ({'; '.join(outcomes)}).",
    ]
    if run.transport == "webrtc":
        lines[0] += " Mesh turns over WebRTC (`--transport webrtc`)."
    if run.webrtc:
        lines[3:3] = [
            "",
            "The same questions through the mesh over WebRTC, each right after its WebSocket turn "
            "(Opus both ways, the gateway's track paced in real time; first audio is the first reply "
            "sound off the remote track, after the client's jitter buffer and decoder):",
            "",
            transport_table(run),
        ]
    if run.busy:
        lines[3:3] = [
            "",
            f"The same questions through the mesh with {run.busy_cores} core(s) kept busy by a shell loop "
            "(started before, stopped after each turn; each asked two turns later than its idle turn, so no "
            "turn repeats the question just asked and the LLM's prompt cache cannot skip its prompt):",
            "",
            busy_table(run),
        ]
    if same.p50 is not None:
        lines.append(
            f"Mesh / in-process chain with the same sized-window Whisper: p50 {format_ratio(same.p50)}, "
            f"p95 {format_ratio(same.p95)}."
        )
    if totals := count_totals(run.mesh):
        lines.append(
            "Counted over the mesh turns: "
            + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in totals.items())
            + "."
        )
    if run.pauses:
        lines.append(pause_summary(run.pauses))
    failed = failures(run)
    lines.append("Failures: " + ("none." if not failed else "; ".join(failed) + "."))
    if flags := flag_counts(run.mesh):
        lines.append("Flagged mesh values: " + "; ".join(flags) + ".")
    return "\n".join(lines)


def doc_section(run: Run, title: str, plot: str | None = None) -> str:
    """A section to append to a markdown doc: heading, the exact command, the report, the plot if any."""
    image = "" if plot is None else f"\n![{title}: stages and first audio per turn]({plot})\n"
    return f"\n### {title}\n\n```\n{run.command}\n```\n\n{summary(run)}\n{image}"


def _stats(turns: Sequence[TurnResult], key: str) -> dict[str, float] | None:
    found = summarize_stage(turns, key)
    return None if found is None else asdict(found)


def to_json(run: Run) -> str:
    """Every per-turn value, with the run's context and summary."""
    stages = {
        stage.key: {"mesh": _stats(run.mesh, stage.key), "in_process": _stats(run.local, stage.key)}
        for stage in STAGES
    }
    over_webrtc = {stage.key: _stats(run.webrtc, stage.key) for stage in STAGES} if run.webrtc else None
    data = {
        "command": run.command,
        "date": run.date,
        "machine": run.machine,
        "load_average": run.load_average,
        "busy_cores": run.busy_cores,
        "url": run.url,
        "runs": run.runs,
        "questions": run.questions,
        "summary": stages,
        "ratio_first_audio": asdict(run.ratios()),
        "ratio_first_audio_short_window": asdict(run.short_window_ratios()),
        "ratio_first_audio_busy_over_idle": asdict(run.busy_ratios()),
        "counts": count_totals(run.mesh),
        "pauses": [asdict(result) for result in run.pauses],
        "failures": failures(run),
        "transport": run.transport,
        "summary_webrtc": over_webrtc,
        "turns": [turn.to_json() for turn in (*run.mesh, *run.local, *run.busy, *run.webrtc)],
    }
    return json.dumps(data, indent=2, ensure_ascii=False)
