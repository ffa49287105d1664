"""How long piper takes for a first sentence, by onnxruntime thread count and spinning.

Each configuration in its own process (onnxruntime reads its thread options when the session is made):

    .venv/bin/python benchmarks/tts_threads.py 1 2          # the voice as the TTS service loads it
    .venv/bin/python benchmarks/tts_threads.py 2 --spin     # onnxruntime's default: threads spin
    sh -c 'while :; do :; done' & .venv/bin/python benchmarks/tts_threads.py 1 2; kill %1   # one core busy

Prints the median and the slowest of 16 first sentences (four short answers, four times each).
"""

from __future__ import annotations

import argparse
import statistics
import time

import onnxruntime

from services.tts.engine import PiperSynthesizer

ANSWERS = (
    "The capital of France is Paris.",
    "There are seven days in a week.",
    "The sky is blue on a clear day.",
    "An elephant is a big animal in Africa.",
)


def first_sentence_ms(threads: int, spin: bool, runs: int = 16) -> list[float]:
    """Times to piper's first sentence with `threads` intra-op threads."""
    if spin:  # undo the engine's setting: onnxruntime's default lets idle threads spin
        original = onnxruntime.SessionOptions

        class Spinning(original):  # type: ignore[misc,valid-type]
            def add_session_config_entry(self, key: str, value: str) -> None:
                if key != "session.intra_op.allow_spinning":
                    super().add_session_config_entry(key, value)

        onnxruntime.SessionOptions = Spinning
    synthesizer = PiperSynthesizer.load(threads=threads)
    timings = []
    for index in range(runs):
        start = time.perf_counter()
        next(iter(synthesizer.voice.synthesize(ANSWERS[index % len(ANSWERS)])))
        timings.append((time.perf_counter() - start) * 1000)
    synthesizer.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("threads", type=int, nargs="+")
    parser.add_argument("--spin", action="store_true", help="let onnxruntime's threads spin (its default)")
    args = parser.parse_args()
    for threads in args.threads:
        timings = first_sentence_ms(threads, args.spin)
        print(
            f"{threads} thread(s), spinning {'on' if args.spin else 'off'}: first sentence p50"
            f" {statistics.median(timings):.0f} ms, slowest {max(timings):.0f} ms"
        )


if __name__ == "__main__":
    main()
