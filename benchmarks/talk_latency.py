"""Time to first reply audio over N sequential `talk()` runs against a running gateway.

    python benchmarks/talk_latency.py QUESTION.wav --runs 10 [--url ws://HOST:PORT/v1/realtime]

Without a WAV, one is synthesized with the bundled piper voice (tests/speech.py). The WAV must end where
the speech ends: first_audio_ms counts from the last frame of the file, so trailing silence makes it
look faster than it is (negative when the reply starts before the file ends).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
import tempfile
from pathlib import Path

import numpy as np

# Run as a script, so the repository root (for `clients` and `tests.speech`) is not on the path by itself.
_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

from clients.talk import DEFAULT_URL, TalkError, TalkResult, talk  # noqa: E402

DEFAULT_QUESTION = "What is the capital of France?"


def _synthesize(directory: Path) -> Path:
    """Speak the default question into a WAV (needs the piper voice the tests use)."""
    try:
        from tests.speech import speech_wav
    except ImportError as exc:
        raise SystemExit(f"no WAV given and tests.speech is unavailable ({exc}); pass a WAV file") from None
    return speech_wav(directory / "question.wav", DEFAULT_QUESTION)


def _stats(values: list[float]) -> dict[str, float]:
    array = np.asarray(values)
    return {
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "min": float(array.min()),
        "max": float(array.max()),
    }


def _line(name: str, stats: dict[str, float]) -> str:
    return f"{name:<15}" + "  ".join(f"{key} {value:8.1f} ms" for key, value in stats.items())


async def _bench(wav: Path, url: str, runs: int, timeout_s: float) -> list[TalkResult]:
    """Run talk() `runs` times one after another; a failed run is reported and left out."""
    results: list[TalkResult] = []
    for index in range(1, runs + 1):
        try:
            result = await talk(wav, url=url, timeout_s=timeout_s)
        except TalkError as exc:
            print(f"run {index:>3}: FAILED: {exc}")
            continue
        first = "-" if result.first_audio_ms is None else f"{result.first_audio_ms:.1f}"
        total = "-" if result.total_ms is None else f"{result.total_ms:.1f}"
        print(f"run {index:>3}: first_audio_ms {first:>8}  total_ms {total:>8}")
        results.append(result)
    return results


def _report(results: list[TalkResult], runs: int, url: str) -> None:
    firsts = [r.first_audio_ms for r in results if r.first_audio_ms is not None]
    totals = [r.total_ms for r in results if r.total_ms is not None]
    if not firsts:
        print("no run returned reply audio")
        return
    first, total = _stats(firsts), _stats(totals)
    print()
    print(_line("first_audio_ms", first))
    print(_line("total_ms", total))
    if first["min"] < 0:
        print("warning: negative first_audio_ms: the WAV ends in silence, trim it where the speech ends")
    print()
    print("| date | url | runs ok | first audio p50 | p95 | min | max | total p50 | p95 |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {datetime.date.today()} | {url} | {len(results)}/{runs} "
        f"| {first['p50']:.0f} ms | {first['p95']:.0f} ms | {first['min']:.0f} ms | {first['max']:.0f} ms "
        f"| {total['p50']:.0f} ms | {total['p95']:.0f} ms |"
    )


def main() -> int:
    """Parse arguments, run the benchmark, print the per-run lines, the summary and a markdown row."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("wav", type=Path, nargs="?", help=f"question WAV (default: {DEFAULT_QUESTION!r})")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--timeout", type=float, default=60.0, help="per run, in seconds")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    with tempfile.TemporaryDirectory() as scratch:
        wav = args.wav or _synthesize(Path(scratch))
        try:
            results = asyncio.run(_bench(wav, args.url, args.runs, args.timeout))
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    _report(results, args.runs, args.url)
    return 0 if len(results) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
