"""Fake engines for `voxmesh bench load`: the real ASR, LLM and TTS service loops with engines that only
wait, so a load run measures the mesh itself (sockets, Redis, the loops, the voice-activity detector).

Run by the benchmark (and the crash and load tests) as their own worker processes,
`python -m clients.bench.fakes asr|llm|tts`; the services' entry points never load them. Delays come
from `VOXMESH_FAKE_*` (FakeSettings).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence

from pydantic_settings import BaseSettings, SettingsConfigDict

from services.asr.service import AsrService
from services.asr.settings import AsrSettings
from services.llm.engine import ChatMessage
from services.llm.service import LlmService
from services.llm.settings import LlmSettings
from services.tts.service import TtsService
from services.tts.settings import TtsSettings
from shared.audio import SAMPLE_WIDTH
from shared.runner import main_for


class FakeSettings(BaseSettings):
    """How long each fake engine takes, and what it says."""

    model_config = SettingsConfigDict(env_prefix="VOXMESH_FAKE_", extra="ignore")

    asr_ms: float = 50.0
    """Each transcription (final or partial) of an utterance."""
    transcript: str = "What is the capital of France?"
    llm_first_ms: float = 150.0
    """Reply request to the first token."""
    llm_token_ms: float = 20.0
    """Between two tokens (words) after that."""
    reply: str = "The capital of France is Paris. It lies on the Seine."
    tts_first_ms: float = 60.0
    """Phrase to its first audio chunk."""
    tts_speed: float = 10.0
    """Audio is made this many times faster than real time after the first chunk (piper on one core: ~10)."""
    tts_ms_per_char: float = 60.0
    """Speech length per character of text (the joe voice speaks ~15 characters a second)."""
    tts_chunk_ms: int = 100


class FakeRecognizer:
    """Hears the same words in every utterance after `asr_ms`."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings

    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        """The configured transcript (a partial gets its first half)."""
        await asyncio.sleep(self.settings.asr_ms / 1000)
        words = self.settings.transcript.split()
        return " ".join(words[: max(1, len(words) // 2)]) if partial else self.settings.transcript


class FakeGenerator:
    """Streams the configured reply word by word."""

    name = "fake"

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings

    async def stream(
        self, messages: Sequence[ChatMessage], *, options: object = None, usage: object = None
    ) -> AsyncIterator[str]:
        """The reply's words, the first after `llm_first_ms`, then one every `llm_token_ms` (generation
        options and usage accounting, when given, do not apply to a fake)."""
        await asyncio.sleep(self.settings.llm_first_ms / 1000)
        for index, word in enumerate(self.settings.reply.split()):
            if index:
                await asyncio.sleep(self.settings.llm_token_ms / 1000)
            yield word if index == 0 else f" {word}"

    async def aclose(self) -> None:
        """Nothing to release."""


class FakeSynthesizer:
    """Audio as long as the text would take to say, in chunks, faster than real time."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings

    async def stream(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """PCM chunks of `tts_chunk_ms`, the first after `tts_first_ms`."""
        s = self.settings
        await asyncio.sleep(s.tts_first_ms / 1000)
        for index, chunk in enumerate(fake_speech(text, sample_rate, s)):
            if index:
                await asyncio.sleep(s.tts_chunk_ms / 1000 / s.tts_speed)
            yield chunk


def fake_speech(text: str, sample_rate: int, settings: FakeSettings) -> list[bytes]:
    """The chunks the fake synthesizer makes of `text`: every sample of chunk i is i + 1, so a client can
    tell a lost, repeated or misplaced chunk (and a phrase of another length) from the reply it expects."""
    total_ms = max(settings.tts_chunk_ms, int(len(text) * settings.tts_ms_per_char))
    chunks = []
    for index, start in enumerate(range(0, total_ms, settings.tts_chunk_ms)):
        samples = sample_rate * min(settings.tts_chunk_ms, total_ms - start) // 1000
        chunks.append(((index + 1) % 32768).to_bytes(SAMPLE_WIDTH, "little", signed=True) * samples)
    return chunks


def main(argv: list[str] | None = None) -> None:
    """Run one service's real loop with its fake engine."""
    args = sys.argv[1:] if argv is None else argv
    fakes = FakeSettings()
    service = args[0] if args else ""
    if service == "asr":
        # The turn policy is a model (SmolLM2): off, so the fixed end-of-speech silence ends each turn.
        main_for(
            "asr", AsrSettings(turn_policy=False), lambda s, bus: AsrService(s, bus, FakeRecognizer(fakes))
        )
    elif service == "llm":
        main_for("llm", LlmSettings(), lambda s, bus: LlmService(s, bus, FakeGenerator(fakes)))
    elif service == "tts":
        main_for("tts", TtsSettings(), lambda s, bus: TtsService(s, bus, FakeSynthesizer(fakes)))
    else:
        sys.exit("usage: python -m clients.bench.fakes asr|llm|tts")


if __name__ == "__main__":
    main()
