"""The ASR session transcribes while the user speaks and during the end-of-speech silence (real Redis,
real Silero VAD): partials while speaking; the speculative text is the final when the silence lasts, and
is thrown away when the speaker goes on."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.asr.endpointer import Endpointer, SileroDetector
from services.asr.engine import FasterWhisperRecognizer
from services.asr.session import SessionTranscriber
from shared import keys
from shared.bus import Bus, StreamTail
from shared.schema import AudioFrame, SessionClosed, TranscriptFinal, TranscriptPartial
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.integration

FRAME = 640


class RecordingRecognizer:
    """Answers with the length of the audio it was given, and remembers every call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        self.calls.append(len(pcm))
        await asyncio.sleep(0.05)
        return f"bytes {len(pcm)}"


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("voxmesh_asr_speculative_finals_total", {"outcome": outcome}) or 0.0


async def _transcribe(bus: Bus, session_id: str, pcm: bytes) -> tuple[list[str], RecordingRecognizer]:
    recognizer = RecordingRecognizer()
    frames = [pcm[i : i + FRAME] for i in range(0, len(pcm), FRAME)]
    for seq, audio in enumerate(frames):
        frame = AudioFrame(session_id=session_id, turn_id=0, seq=seq, audio=audio)
        await bus.send_to_session(keys.audio_in(session_id), frame)
    closed = SessionClosed(session_id=session_id, turn_id=0, seq=len(frames))
    await bus.send_to_session(keys.audio_in(session_id), closed)
    transcriber = SessionTranscriber(bus, session_id, recognizer, Endpointer(SileroDetector()))
    await asyncio.wait_for(transcriber.run(), timeout=30)
    tail = StreamTail(bus, keys.session_out(session_id), label="test", block_ms=100)
    try:
        finals = [d.message.text for d in await tail.read() if isinstance(d.message, TranscriptFinal)]
    finally:
        await tail.close()
    return finals, recognizer


async def test_the_speculative_transcript_is_the_final_when_the_silence_lasts(bus: Bus) -> None:
    used, discarded = _count("used"), _count("discarded")
    pcm = silence(300, 16000) + synthesize_speech("What is the capital of France?") + silence(1000, 16000)
    finals, recognizer = await _transcribe(bus, "spec-used", pcm)
    assert len(recognizer.calls) == 1, "the utterance was transcribed once, during the silence"
    assert finals == [f"bytes {recognizer.calls[0]}"]
    assert (_count("used"), _count("discarded")) == (used + 1, discarded)


async def test_a_speculation_is_thrown_away_when_the_speaker_goes_on(bus: Bus) -> None:
    used, discarded = _count("used"), _count("discarded")
    first, second = synthesize_speech("What is the capital"), synthesize_speech("of France?")
    # The pause is longer than the post-roll (a speculation starts) and shorter than an utterance's end.
    pcm = silence(300, 16000) + first + silence(300, 16000) + second + silence(1000, 16000)
    finals, recognizer = await _transcribe(bus, "spec-discarded", pcm)
    assert len(finals) == 1, finals
    assert finals == [f"bytes {max(recognizer.calls)}"]
    assert max(recognizer.calls) > len(first) + len(second), "the final covers the whole utterance"
    assert (_count("used"), _count("discarded")) == (used + 1, discarded + 1)


async def test_partials_arrive_before_the_final_of_a_long_utterance(bus: Bus) -> None:
    """Real Whisper: a 4 s utterance streamed in real time gets settled words while it is spoken."""
    recognizer = FasterWhisperRecognizer.load(cpu_threads=1)
    session = "partials"
    speech = synthesize_speech("The quick brown fox jumps over the lazy dog and runs far into the forest.")
    assert len(speech) >= 4 * 32_000, "a 4 s utterance"
    pcm = silence(300, 16000) + speech + silence(1000, 16000)
    transcriber = SessionTranscriber(
        bus, session, recognizer, Endpointer(SileroDetector()), partial_interval_ms=400
    )
    out = StreamTail(bus, keys.session_out(session), label="test", block_ms=100)
    seen: list[TranscriptPartial | TranscriptFinal] = []
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(transcriber.run())
            for seq, start in enumerate(range(0, len(pcm), FRAME)):
                frame = AudioFrame(session_id=session, turn_id=0, seq=seq, audio=pcm[start : start + FRAME])
                await bus.send_to_session(keys.audio_in(session), frame)
                await asyncio.sleep(0.02)  # a microphone: real time
            await bus.send_to_session(
                keys.audio_in(session), SessionClosed(session_id=session, turn_id=0, seq=0)
            )
        seen = [
            d.message for d in await out.read() if isinstance(d.message, TranscriptPartial | TranscriptFinal)
        ]
    finally:
        await out.close()
        recognizer.close()

    partials = [m for m in seen if isinstance(m, TranscriptPartial)]
    finals = [m for m in seen if isinstance(m, TranscriptFinal)]
    assert len(finals) == 1 and "fox" in finals[0].text.lower(), finals
    assert partials, "settled words were sent while the user was still speaking"
    assert seen.index(partials[0]) < seen.index(finals[0])
    texts = [p.text.split() for p in partials]
    assert all(a == b[: len(a)] for a, b in zip(texts, texts[1:], strict=False)), "partials only grow"
    assert {p.utterance for p in partials} == {finals[0].utterance}
