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
        "--transport",
        choices=("websocket", "webrtc", "both"),
        default="websocket",
        help="what the mesh turns run over; `both` asks each question over the WebSocket, then over WebRTC"
        " (default websocket)",
    )
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
        help="also speak 48 questions with a 600 ms mid-sentence pause: how many stay one turn",
    )
    latency.add_argument("--json", type=Path, metavar="OUT.json", help="write every per-turn value")
    latency.add_argument("--plot", type=Path, metavar="OUT.png", help="plot the stages (matplotlib)")
    latency.add_argument("--doc", type=Path, metavar="FILE.md", help="append the results as a section")
    latency.add_argument(
        "--timeout", type=float, default=60.0, help="seconds for a reply before the turn fails (default 60)"
    )
    _add_load(benchmarks)


LOAD_DESCRIPTION = """\
K concurrent real-time sessions (the talk client: 20 ms frames on a real-time clock, a modelled
loudspeaker) through the real gateway, for each K of a sweep, against a stack this command starts on
loopback: Redis, the gateway, and ASR, LLM and TTS workers, either the real services (--engines real)
or their real loops with fake engines that only wait (--engines fake: the mesh itself). Reports
voice-to-voice p50/p95 (end of speech to the first reply audio at the client), bus hop p50/p99 (every
service's voxmesh_bus_delivery_seconds), dropped frames, reply playback gaps, CPU and memory per
process and per session, and the replicas the autoscalers (HPA, KEDA) would ask for; finds the knee,
then runs the same sweep with two replicas of the service that limited it."""


def _sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers, got {text!r}") from None


def _add_load(benchmarks: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = benchmarks.add_parser(
        "load",
        help="K concurrent sessions: the knee, and what a second replica buys",
        description=LOAD_DESCRIPTION,
    )
    load.add_argument("--engines", choices=("fake", "real"), default="fake", help="default: fake")
    load.add_argument(
        "--sessions",
        type=_sizes,
        metavar="K,K,...",
        help="the sweep (default fake 10,25,50,100,150,200; real 1,2,3,4)",
    )
    load.add_argument("--turns", type=int, metavar="N", help="questions per session (default fake 3, real 2)")
    load.add_argument(
        "--stagger",
        type=float,
        default=4.0,
        metavar="S",
        help="sessions start spread over S seconds (default 4)",
    )
    load.add_argument(
        "--scale",
        default="auto",
        metavar="auto|none|SERVICE",
        help="the second sweep: two replicas of the limiting service (auto), of SERVICE, or none",
    )
    load.add_argument("--replicas", type=int, default=2, metavar="N", help="replicas in the second sweep")
    load.add_argument(
        "--client-procs",
        type=int,
        default=2,
        metavar="N",
        help="client processes sharing the sessions (default 2)",
    )
    load.add_argument("--timeout", type=float, default=60.0, help="seconds for each reply (default 60)")
    load.add_argument(
        "--redis-url",
        metavar="URL",
        help="an existing Redis (redis+cluster:// for a cluster) instead of one started for the run",
    )
    load.add_argument("--fake-asr-ms", type=float, default=50.0, help="fake transcription time (default 50)")
    load.add_argument("--fake-llm-first-ms", type=float, default=150.0, help="fake first token (default 150)")
    load.add_argument("--fake-llm-token-ms", type=float, default=20.0, help="fake time per word (default 20)")
    load.add_argument("--fake-tts-first-ms", type=float, default=60.0, help="fake first audio (default 60)")
    load.add_argument("--json", type=Path, metavar="OUT.json", help="write every level's figures")
    load.add_argument("--plot", type=Path, metavar="OUT.png", help="plot the sweeps (matplotlib)")
    load.add_argument("--doc", type=Path, metavar="FILE.md", help="append the results as a section")


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark with parsed arguments; returns the process exit code."""
    if args.benchmark == "load":
        from clients.bench.loadsweep import run_load

        return run_load(args)
    from clients.bench.latency import run_latency

    return run_latency(args)
