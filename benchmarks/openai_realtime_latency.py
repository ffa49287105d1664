"""Time to first reply audio through OpenAI's Realtime protocol (the unmodified `openai` SDK) vs. voxmesh's
native protocol (`voxmesh talk`), in the same run on the same stack.

    python benchmarks/openai_realtime_latency.py [--runs 10] [--port 8000 | --start PORT]

Each run asks the same spoken question once per path, in fresh sessions, alternating which path goes first
so drift in the machine's load hits both alike. Both figures are from the end of the question's speech (the
last audio chunk sent: the audio is cut where the speech ends) to the first reply audio received: native
`first_audio_ms`; OpenAI the first `response.output_audio.delta`. Audio goes in 20 ms chunks in real time
either way (native: 16 kHz binary frames; OpenAI: 24 kHz base64 in JSON, resampled by the gateway).
`--start PORT` runs `voxmesh up --port PORT` for the benchmark and stops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

# Run as a script, so the repository root (for `clients` and `tests.speech`) is not on the path by itself.
_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

from clients.bench.report import machine  # noqa: E402
from clients.bench.stack import voxmesh_up  # noqa: E402
from clients.talk import converse  # noqa: E402

QUESTION = "What is the capital of France?"
RATE = 24_000
CHUNK_MS = 20
LEAD_SILENCE_MS = 300


async def _native(wav: Path, port: int, timeout_s: float) -> float:
    conversation = await converse([wav], url=f"ws://127.0.0.1:{port}/v1/realtime", timeout_s=timeout_s)
    first = conversation.turns[0].first_audio_ms
    if first is None:
        raise RuntimeError("the native question got no reply audio")
    return first


async def _openai(pcm: bytes, port: int, timeout_s: float) -> float:
    from openai import AsyncOpenAI

    sdk = AsyncOpenAI(api_key="voxmesh", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    chunk_bytes = RATE * 2 * CHUNK_MS // 1000
    speech_end: list[float] = []

    async def microphone(connection: object) -> None:
        append = connection.input_audio_buffer.append  # type: ignore[attr-defined]
        start, sent = time.monotonic(), 0
        silence = bytes(chunk_bytes)
        while True:
            at = sent * chunk_bytes
            chunk = pcm[at : at + chunk_bytes] if at < len(pcm) else silence
            await append(audio=base64.b64encode(chunk).decode())
            sent += 1
            if at < len(pcm) <= at + chunk_bytes:
                speech_end.append(time.monotonic())
            await asyncio.sleep(max(0.0, start + sent * CHUNK_MS / 1000 - time.monotonic()))

    async with sdk.realtime.connect(model="gpt-realtime") as connection:
        mic = asyncio.create_task(microphone(connection))
        try:
            async with asyncio.timeout(timeout_s):
                async for event in connection:
                    if event.type == "response.output_audio.delta" and speech_end:
                        return (time.monotonic() - speech_end[0]) * 1000
                    if event.type == "error":
                        raise RuntimeError(f"error event: {event.error.code}")
        finally:
            mic.cancel()
            await asyncio.gather(mic, return_exceptions=True)
            await sdk.close()
    raise RuntimeError("the connection closed before any reply audio")


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
    }


async def _bench(port: int, runs: int, timeout_s: float) -> dict[str, object]:
    from tests.speech import silence, speech_wav, synthesize_speech

    pcm24 = silence(LEAD_SILENCE_MS, RATE) + synthesize_speech(QUESTION, RATE)
    results: dict[str, list[float]] = {"native": [], "openai": []}
    with tempfile.TemporaryDirectory() as folder:
        wav = speech_wav(Path(folder) / "question.wav", QUESTION, lead_silence_ms=LEAD_SILENCE_MS)
        for index in range(runs):
            order = ("native", "openai") if index % 2 == 0 else ("openai", "native")
            for mode in order:
                value = await (
                    _native(wav, port, timeout_s) if mode == "native" else _openai(pcm24, port, timeout_s)
                )
                results[mode].append(value)
                print(f"run {index + 1:>2}/{runs} {mode:>6}: {value:6.0f} ms", flush=True)
    summary = {mode: _stats(values) for mode, values in results.items()}
    diffs = [o - n for n, o in zip(results["native"], results["openai"], strict=True)]
    return {
        "question": QUESTION,
        "runs": runs,
        "machine": machine(),
        "first_audio": summary,
        "openai_minus_native_median_ms": round(statistics.median(diffs), 1),
        "raw_ms": results,
    }


def main() -> None:
    """Run the benchmark and print its JSON result."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--port", type=int, default=8000, help="a running gateway's port")
    parser.add_argument(
        "--start", type=int, metavar="PORT", help="run `voxmesh up --port PORT` for the bench"
    )
    parser.add_argument("--timeout", type=float, default=90.0)
    args = parser.parse_args()
    port = args.start or args.port
    with voxmesh_up(args.start) if args.start else nullcontext():
        result = asyncio.run(_bench(port, args.runs, args.timeout))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
