"""Where the ASR session ends a turn (real Redis, real Silero VAD, audio fed in real time): a judge that
calls a pause the end of the turn ends it at once; one that says "not done" keeps a mid-sentence pause
inside the utterance. The gateway hears of every pause's text and of the speaker going on."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from services.asr.endpointer import Endpointer, EndpointerConfig, SileroDetector
from services.asr.engine import Transcription
from services.asr.service import AsrService
from services.asr.session import SessionTranscriber, TurnJudge
from services.asr.settings import AsrSettings
from services.asr.turn_policy import TurnPolicy
from shared import keys
from shared.bus import Bus, StreamTail
from shared.schema import (
    AudioFrame,
    Message,
    SessionClosed,
    SpeechResumed,
    TranscriptFinal,
    TranscriptSpeculative,
)
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.integration

FRAME = 640  # 20 ms
RATE = 16_000
LONG_SILENCE_MS = 1500


class LengthRecognizer:
    """Answers with the length of the audio it was given."""

    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        await asyncio.sleep(0.03)
        return f"bytes {len(pcm)}"


async def _speak(bus: Bus, session: str, pcm: bytes, judge: TurnJudge) -> list[tuple[int, Message]]:
    """Feed `pcm` as a microphone does; returns (frames sent when it arrived, message) for each output."""
    config = EndpointerConfig(min_silence_ms=LONG_SILENCE_MS)
    transcriber = SessionTranscriber(
        bus, session, LengthRecognizer(), Endpointer(SileroDetector(), config), judge=judge
    )
    out = StreamTail(bus, keys.session_out(session), label="test", block_ms=20)
    seen: list[tuple[int, Message]] = []
    sent = 0

    async def watch() -> None:
        while True:
            seen.extend((sent, d.message) for d in await out.read())

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(transcriber.run())
            watcher = group.create_task(watch())
            for seq, start in enumerate(range(0, len(pcm), FRAME)):
                frame = AudioFrame(session_id=session, turn_id=0, seq=seq, audio=pcm[start : start + FRAME])
                await bus.send_to_session(keys.audio_in(session), frame)
                sent += 1
                await asyncio.sleep(0.02)
            await bus.send_to_session(
                keys.audio_in(session), SessionClosed(session_id=session, turn_id=0, seq=0)
            )
            await asyncio.sleep(0.3)
            watcher.cancel()
    finally:
        await out.close()
    return seen


def _verdicts(verdict: str) -> float:
    return REGISTRY.get_sample_value("voxmesh_asr_turn_verdicts_total", {"verdict": verdict}) or 0.0


async def test_a_pause_judged_complete_ends_the_turn_without_the_long_silence(bus: Bus) -> None:
    async def complete(heard: Transcription, pcm: bytes) -> bool:
        return True

    before = _verdicts("complete")
    speech = synthesize_speech("What is the capital of France?")
    lead = silence(300, RATE)
    seen = await _speak(bus, "turn-complete", lead + speech + silence(LONG_SILENCE_MS + 1000, RATE), complete)

    finals = [(at, m) for at, m in seen if isinstance(m, TranscriptFinal)]
    assert len(finals) == 1
    at, final = finals[0]
    speech_end_frame = (len(lead) + len(speech)) // FRAME
    # Frames are 20 ms: the final came well before the long silence had passed.
    assert at < speech_end_frame + LONG_SILENCE_MS // 20 - 10, (at, speech_end_frame)
    speculative = [m for _, m in seen if isinstance(m, TranscriptSpeculative)]
    assert [m.text for m in speculative] == [final.text], "the text was offered at the pause, then confirmed"
    assert speculative[0].utterance == final.utterance
    assert _verdicts("complete") == before + 1


async def test_a_pause_judged_incomplete_stays_inside_the_utterance(bus: Bus) -> None:
    first, second = synthesize_speech("What is the capital of"), synthesize_speech("France?")
    whole = len(first) + len(second)

    async def complete_when_whole(heard: Transcription, pcm: bytes) -> bool:
        return len(pcm) > whole  # "not done" at the mid-sentence pause

    pcm = silence(300, RATE) + first + silence(600, RATE) + second + silence(LONG_SILENCE_MS + 1000, RATE)
    seen = await _speak(bus, "turn-incomplete", pcm, complete_when_whole)

    kinds = [
        m.kind for _, m in seen if isinstance(m, TranscriptSpeculative | SpeechResumed | TranscriptFinal)
    ]
    assert kinds == ["transcript.speculative", "speech.resumed", "transcript.speculative", "transcript.final"]
    finals = [m for _, m in seen if isinstance(m, TranscriptFinal)]
    head, resumed = [m for _, m in seen if isinstance(m, TranscriptSpeculative | SpeechResumed)][:2]
    assert isinstance(head, TranscriptSpeculative) and isinstance(resumed, SpeechResumed)
    assert resumed.pause_ms == head.pause_ms and resumed.utterance == head.utterance == finals[0].utterance
    assert int(finals[0].text.split()[1]) > whole, "one utterance: the final covers both parts"


class FinishedScorer:
    """Text scorer stand-in: every text reads finished."""

    async def end_of_turn_probability(self, text: str) -> float:
        return 0.9


async def test_the_service_judge_weighs_near_misses_and_counts_what_they_kept_open(bus: Bus) -> None:
    service = AsrService(AsrSettings(), bus, LengthRecognizer())
    service.policy = TurnPolicy(None, scorer=FinishedScorer())
    judge = service.judge()
    assert judge is not None

    def misheard() -> float:
        return REGISTRY.get_sample_value("voxmesh_asr_turn_misheard_total") or 0.0

    before = misheard()
    assert not await judge(Transcription("Set a reminder for mine.", (("Set a reminder for my", 0.3),)), b"")
    assert await judge(
        Transcription("What is the capital of France?", (("What is the capital of friends", 0.3),)), b""
    )
    assert await judge(Transcription("Set a reminder for mine."), b"")
    assert misheard() == before + 1
