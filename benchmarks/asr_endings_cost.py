"""What the near misses cost a decode: `transcribe` vs `transcribe_endings` on the same audio, paired.

Each head of the latency bench's pause set (clients/bench/pauses.py), spoken by the repeatable piper voice
(tests/speech.py) plus the 150 ms of silence SpeechPaused carries, is decoded both ways, twice, the order
alternating. Whisper tiny.en, one thread.

    .venv/bin/python benchmarks/asr_endings_cost.py
"""

from __future__ import annotations

import asyncio
import statistics
import time

from clients.bench.pauses import PAUSED_QUESTIONS
from services.asr.engine import FasterWhisperRecognizer
from services.asr.turn_model import SAMPLE_RATE
from tests.speech import silence, synthesize_speech


def p50_p95(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.1f} ms, p95 {statistics.quantiles(values, n=20)[18]:.1f} ms"


async def main() -> None:
    recognizer = FasterWhisperRecognizer.load(cpu_threads=1)
    heads = [synthesize_speech(head, SAMPLE_RATE) + silence(150, SAMPLE_RATE) for head, _ in PAUSED_QUESTIONS]
    times: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(2):
        for index, pcm in enumerate(heads):
            for endings in (False, True) if (index + repeat) % 2 else (True, False):
                start = time.perf_counter()
                if endings:
                    await recognizer.transcribe_endings(pcm)
                else:
                    await recognizer.transcribe(pcm)
                times[endings].append(1000 * (time.perf_counter() - start))
    recognizer.close()
    print(f"{len(times[False])} paired decodes")
    print(f"transcribe:         {p50_p95(times[False])}")
    print(f"transcribe_endings: {p50_p95(times[True])}")


if __name__ == "__main__":
    asyncio.run(main())
