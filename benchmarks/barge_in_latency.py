"""Time to first reply audio for a question asked alone vs. the same question spoken over a long reply.

    python benchmarks/barge_in_latency.py [--runs 10] [--url ws://HOST:PORT/v1/realtime | --start PORT]

Each run asks, in fresh sessions: (a) the question alone; (b) a question with a long answer, then the same
question BARGE_IN_MS after the long reply's first audio arrived (talking over it, as `voxmesh talk
--barge-in-ms` does). Both figures are first_audio_ms of the question: from the end of its speech to the
first byte of its reply. A barge-in is slower when the services are still busy with the interrupted reply.
`--start PORT` runs `voxmesh up --port PORT` for the benchmark and stops it after (SIGTERM).
The questions are synthesized with the bundled piper voice (tests/speech.py), cut where the speech ends.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

# Run as a script, so the repository root (for `clients` and `tests.speech`) is not on the path by itself.
_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

from clients.bench.report import machine  # noqa: E402
from clients.bench.stack import voxmesh_up  # noqa: E402
from clients.talk import DEFAULT_URL, TalkError, converse  # noqa: E402

LONG_QUESTION = "Tell me a long story about the moon."
QUESTION = "How many days are in a week?"


def _synthesize(directory: Path) -> tuple[Path, Path]:
    try:
        from tests.speech import speech_wav
    except ImportError as exc:
        raise SystemExit(
            f"tests.speech is unavailable ({exc}): run from a checkout with the dev extras"
        ) from None
    return speech_wav(directory / "long.wav", LONG_QUESTION), speech_wav(directory / "question.wav", QUESTION)


async def _alone(question: Path, url: str, timeout_s: float) -> float:
    conversation = await converse([question], url=url, timeout_s=timeout_s)
    first = conversation.turns[0].first_audio_ms
    if first is None:
        raise TalkError("the question got no reply audio")
    return first


async def _over_a_long_reply(
    long: Path, question: Path, url: str, barge_in_ms: float, timeout_s: float
) -> float:
    conversation = await converse([long, question], url=url, barge_in_ms=barge_in_ms, timeout_s=timeout_s)
    story, answer = conversation.turns
    if not story.interrupted:
        raise TalkError("the long reply ended before the barge-in: not a barge-in")
    if answer.first_audio_ms is None:
        raise TalkError("the question got no reply audio")
    return answer.first_audio_ms


async def _bench(
    args: argparse.Namespace, long: Path, question: Path
) -> tuple[list[float], list[float], int]:
    """Alternate (a) and (b) so that drift in machine load hits both alike; returns both series, failures."""
    alone: list[float] = []
    barged: list[float] = []
    failures = 0
    for index in range(1, args.runs + 1):
        line = f"run {index:>3}:"
        try:
            alone.append(await _alone(question, args.url, args.timeout))
            line += f" alone {alone[-1]:8.1f} ms"
        except TalkError as exc:
            failures += 1
            line += f" alone FAILED ({exc})"
        try:
            barged.append(await _over_a_long_reply(long, question, args.url, args.barge_in_ms, args.timeout))
            line += f"  barge-in {barged[-1]:8.1f} ms"
        except TalkError as exc:
            failures += 1
            line += f"  barge-in FAILED ({exc})"
        print(line, flush=True)
    return alone, barged, failures


def _percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def _cancel_stops(url: str) -> list[str]:
    """From the LLM and TTS services' /metrics (gateway port + 2 and + 3, as `voxmesh up` lays them out):
    how many jobs each cancel stopped and how long they took to stop, from the cancel being sent."""
    port = urlsplit(url).port or 8000
    lines = []
    for queue, offset in (("llm_requests", 2), ("tts_requests", 3)):
        try:
            text = httpx.get(f"http://127.0.0.1:{port + offset}/metrics", timeout=5).text
        except httpx.HTTPError as exc:
            lines.append(f"{queue}: metrics unavailable ({exc})")
            continue
        buckets: list[tuple[float, float]] = []
        total = count = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("queue") != queue or not sample.name.startswith("voxmesh_cancel_stop"):
                    continue
                if sample.name.endswith("_bucket"):
                    buckets.append((float(sample.labels["le"]), sample.value))
                elif sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_count"):
                    count = sample.value
        if not count:
            lines.append(f"{queue}: no job was running at a cancel")
            continue
        p95 = next(le for le, cumulative in sorted(buckets) if cumulative >= 0.95 * count)
        lines.append(
            f"{queue}: {count:.0f} jobs stopped by a cancel, mean {total / count * 1000:.0f} ms "
            f"from cancel sent to stopped, p95 <= {p95 * 1000:.0f} ms (histogram bucket)"
        )
    return lines


def _report(args: argparse.Namespace, alone: list[float], barged: list[float], failures: int) -> None:
    a50, a95 = _percentiles(alone)
    b50, b95 = _percentiles(barged)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print()
    print(f"command: {command}")
    print(f"machine: {machine()}; date: {datetime.date.today()}; load average at the end: {load}")
    print(
        f"runs: {args.runs} of each; failures: {failures}; barge-in {args.barge_in_ms:g} ms after first audio"
    )
    print()
    print("| case | runs ok | first audio p50 | p95 |")
    print("|---|---|---|---|")
    print(f"| (a) question alone, fresh session | {len(alone)}/{args.runs} | {a50:.0f} ms | {a95:.0f} ms |")
    print(f"| (b) same question barging in | {len(barged)}/{args.runs} | {b50:.0f} ms | {b95:.0f} ms |")
    print(f"| ratio (b)/(a) | | {b50 / a50:.2f} | {b95 / a95:.2f} |")
    print()
    for line in _cancel_stops(args.url):
        print(line)


@contextmanager
def _voxmesh_up(port: int | None) -> Iterator[str | None]:
    """With a port: `voxmesh up` on it for the duration, yielding its URL; without: nothing to start."""
    if port is None:
        yield None
        return
    with voxmesh_up(port) as url:
        yield url


def main() -> int:
    """Parse arguments, run both cases `--runs` times, print per-run lines and a markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10, help="repetitions of each case (default 10)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"gateway to measure (default {DEFAULT_URL})")
    parser.add_argument("--start", type=int, default=None, metavar="PORT", help="run `voxmesh up` on PORT")
    parser.add_argument("--barge-in-ms", type=float, default=500.0, help="after the long reply's first audio")
    parser.add_argument("--timeout", type=float, default=120.0, help="per question, in seconds")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory() as scratch, _voxmesh_up(args.start) as started_url:
        args.url = started_url or args.url
        long, question = _synthesize(Path(scratch))
        try:
            alone, barged, failures = asyncio.run(_bench(args, long, question))
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _report(args, alone, barged, failures)  # while the services still answer /metrics
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
