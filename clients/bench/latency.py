"""`voxmesh bench latency`: ask the questions, collect every turn, write the table, JSON, plot, doc."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import FrameType

import httpx

from clients.bench.load import busy_cores
from clients.bench.mesh import MeshBench
from clients.bench.pauses import ask_paused, synthesize_paused
from clients.bench.questions import Question, load_folder, synthesize
from clients.bench.report import Run, command_line, doc_section, load_average, summary, to_json
from clients.bench.results import TurnResult
from clients.bench.stack import voxmesh_up


def _describe(turn: TurnResult) -> str:
    if not turn.ok:
        return f"{turn.mode} FAILED ({turn.error})"
    return f"{turn.mode} {turn.stages_ms['first_audio']:6.0f} ms (heard {turn.transcript!r})"


_SPIN_UP_S = 0.5  # busy loops run this long before a loaded turn starts


async def _pauses(run: Run, paused: list[Question], timeout_s: float, token: str | None) -> None:
    """Speak each question of the pause set through the mesh, one at a time."""
    for index, question in enumerate(paused):
        result = await ask_paused(question, run.url, timeout_s, token)
        run.pauses.append(result)
        outcome = result.error or f"{result.turns} turn(s), {result.first_audio_ms:.0f} ms"
        print(f"pause {index + 1:>2}/{len(paused)}: {outcome} (heard {result.transcript!r})", flush=True)


async def _bench(
    run: Run, questions: list[Question], in_process: bool, timeout_s: float, token: str | None, both: bool
) -> None:
    """Ask each turn through the mesh, then (`both`) the same question over WebRTC, then in process, then
    (with busy cores) through the mesh again with the cores kept busy: drift in the machine's load hits
    every mode alike."""
    local = None
    if in_process:
        from clients.bench.inprocess import InProcessBench

        print("loading the engines in this process...", flush=True)
        local = await InProcessBench.load()
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            mesh = MeshBench(run.url, client, timeout_s, token, webrtc=run.transport == "webrtc")
            rtc = MeshBench(run.url, client, timeout_s, token, webrtc=True) if both else None
            for index in range(run.runs):
                question = questions[index % len(questions)]
                run.mesh.append(await mesh.ask(index, question.name, question.pcm))
                line = f"turn {index + 1:>3}/{run.runs}: {_describe(run.mesh[-1])}"
                if rtc is not None:
                    # Not the question just asked: the LLM's prompt cache would skip its evaluation.
                    other = _other(questions, index, 2)
                    over_rtc = await rtc.ask(index, other.name, other.pcm)
                    over_rtc.mode = "mesh-webrtc"
                    run.webrtc.append(over_rtc)
                    line += f"; {_describe(over_rtc)}"
                if local is not None:
                    run.local.append(await local.ask(index, question.name, question.pcm))
                    line += f"; {_describe(run.local[-1])}"
                if run.busy_cores:
                    # Not the question just asked: the LLM's prompt cache would skip its evaluation.
                    other = _other(questions, index, 3 if rtc is not None else 2)
                    with busy_cores(run.busy_cores):
                        await asyncio.sleep(_SPIN_UP_S)
                        loaded = await mesh.ask(index, other.name, other.pcm)
                    loaded.mode = "mesh-busy"
                    run.busy.append(loaded)
                    line += f"; {_describe(loaded)}"
                print(line, flush=True)
    finally:
        if local is not None:
            await local.aclose()


def _other(questions: list[Question], index: int, offset: int) -> Question:
    """The question `offset` places on from turn `index`'s, where there are enough to differ."""
    count = len(questions)
    return questions[(index + offset) % count] if count > offset else questions[index % count]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so SIGTERM, too, stops the stack and the busy loops on the way out


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the block, so stacks and busy loops stop on the way out."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _title(run: Run) -> str:
    load = (
        "idle" if run.busy_cores == 0 else f"idle and {run.busy_cores} busy core{'s' * (run.busy_cores > 1)}"
    )
    return f"{run.date}: {run.runs} turns, {load}"


def _write_outputs(run: Run, args: argparse.Namespace) -> None:
    if args.json is not None:
        args.json.write_text(to_json(run) + "\n")
        print(f"per-turn values: {args.json}")
    if args.plot is not None:
        try:
            from clients.bench.plot import write_plot
        except ImportError as exc:  # matplotlib comes with the dev extra only
            print(f"voxmesh bench latency: no plot: {exc}", file=sys.stderr)
        else:
            write_plot(run, args.plot, f"voxmesh bench latency, {_title(run)} ({run.machine})")
            print(f"plot: {args.plot}")
    if args.doc is not None:
        plot = None if args.plot is None else os.path.relpath(args.plot, args.doc.parent)
        with args.doc.open("a") as doc:
            doc.write(doc_section(run, _title(run), plot))
        print(f"appended to {args.doc}")


def run_latency(args: argparse.Namespace) -> int:
    """`voxmesh bench latency`; 0 when every turn got its reply, 1 otherwise."""
    if args.runs < 1 or args.busy_cores < 0:
        print("voxmesh bench latency: error: --runs must be >= 1, --busy-cores >= 0", file=sys.stderr)
        return 2
    try:
        with sigterm_interrupts():
            wav_dir: Path | None = args.wav_dir
            questions = load_folder(wav_dir) if wav_dir is not None else synthesize()
            stack = voxmesh_up(args.start) if args.start is not None else nullcontext(args.url)
            with stack as url:
                run = Run(command_line(), url, args.runs, args.busy_cores, [q.name for q in questions])
                run.transport = "webrtc" if args.transport == "webrtc" else "websocket"
                both = args.transport == "both"
                asyncio.run(_bench(run, questions, args.in_process, args.timeout, args.token, both))
                if args.pauses:
                    asyncio.run(_pauses(run, synthesize_paused(), args.timeout, args.token))
                run.load_average = load_average()
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"voxmesh bench latency: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print()
    print(summary(run))
    print()
    _write_outputs(run, args)
    return 0 if all(turn.ok for turn in (*run.mesh, *run.local, *run.busy, *run.webrtc)) else 1
