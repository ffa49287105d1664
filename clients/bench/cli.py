"""`voxmesh bench`: the command line of the benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from clients.talk import DEFAULT_URL, add_token_argument

LATENCY_DESCRIPTION = """\
Time from the end of speech to the first reply audio, stage by stage, over N turns asked one at a time
(each in a fresh session) through a running mesh, and optionally through the same engines in this one
process. Each WAV is cut where its speech ends (by energy), then the talk client keeps sending silence
as an open microphone does. Stages come from the services' /metrics, scraped before and after each
turn (`voxmesh up --port P` puts the gateway on P, ASR on P+1, LLM on P+2, TTS on P+3 and the gateway's
/metrics on P+4). A gateway beyond loopback wants a session token: --token (mint one that outlives the
run: `voxmesh token --ttl 3600`)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare `voxmesh bench` and its benchmarks."""
    benchmarks = parser.add_subparsers(dest="benchmark", required=True)
    latency = benchmarks.add_parser(
        "latency",
        help="end of speech → first reply audio, per stage, mesh vs in-process",
        description=LATENCY_DESCRIPTION,
    )
    latency.add_argument(
        "wav_dir",
        type=Path,
        nargs="?",
        metavar="WAV_DIR",
        help="folder of question WAVs (default: a few questions spoken by the bundled piper voice)",
    )
    latency.add_argument("--runs", type=int, default=10, metavar="N", help="turns to ask (default 10)")
    target = latency.add_mutually_exclusive_group()
    target.add_argument("--url", default=DEFAULT_URL, help=f"gateway to measure (default {DEFAULT_URL})")
    target.add_argument(
        "--start", type=int, metavar="PORT", help="run `voxmesh up --port PORT` for the benchmark"
    )
    add_token_argument(latency)
    latency.add_argument(
        "--in-process",
        action="store_true",
        help="also run each turn through the same engines in this process (no Redis, no sockets)",
    )
    latency.add_argument(
        "--busy-cores", type=int, default=0, metavar="K", help="keep K cores busy with spin loops meanwhile"
    )
    latency.add_argument(
        "--pauses",
        action="store_true",
        help="also speak 24 questions with a 600 ms mid-sentence pause: how many stay one turn",
    )
    latency.add_argument("--json", type=Path, metavar="OUT.json", help="write every per-turn value")
    latency.add_argument("--plot", type=Path, metavar="OUT.png", help="plot the stages (matplotlib)")
    latency.add_argument("--doc", type=Path, metavar="FILE.md", help="append the results as a section")
    latency.add_argument(
        "--timeout", type=float, default=60.0, help="seconds for a reply before the turn fails (default 60)"
    )


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark with parsed arguments; returns the process exit code."""
    from clients.bench.latency import run_latency

    return run_latency(args)
