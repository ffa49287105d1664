"""The gateway's in-band control messages on a session's audio stream (OpenAI Realtime clients' turn
detection): `AsrOptions` changes the silence that ends an utterance or turns detection off (push-to-talk),
`InputBuffer` commits or clears the utterance. Real Redis, real Silero VAD, audio fed in real time; the
recognizer answers with the length of the audio it got, so what was transcribed is known to the byte."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from services.asr.endpointer import Endpointer, EndpointerConfig, SileroDetector
from services.asr.session import SessionTranscriber
from shared import keys
from shared.bus import Bus, StreamTail
from shared.schema import (
    AsrOptions,
    AudioFrame,
    InputBuffer,
    Message,
    SessionClosed,
    SpeechResumed,
    SpeechStarted,
    TranscriptFinal,
    TranscriptSpeculative,
)
from tests.speech import silence, synthesize_speech

pytestmark = pytest.mark.integration

FRAME = 640  # 20 ms
RATE = 16_000


class LengthRecognizer:
    """Answers with the length of the audio it was given."""

    async def transcribe(self, pcm: bytes, *, partial: bool = False) -> str:
        await asyncio.sleep(0.03)
        return f"bytes {len(pcm)}"


@dataclass(frozen=True)
class Options:
    turn_detection: bool = True
    max_silence_ms: int | None = None


@dataclass(frozen=True)
class Buffer:
    action: str


async def _run(
    bus: Bus, session: str, script: list[bytes | Options | Buffer], *, min_silence_ms: int, close: bool = True
) -> list[tuple[int, Message]]:
    """Send the script as the gateway does (audio in 20 ms frames, in real time; control messages in
    between, numbered with the frames); returns (seq of the last thing sent when it arrived, message).
    Without `close` the transcriber is stopped as a replica that dies is (no SessionClosed)."""
    config = EndpointerConfig(min_silence_ms=min_silence_ms)
    transcriber = SessionTranscriber(bus, session, LengthRecognizer(), Endpointer(SileroDetector(), config))
    out = StreamTail(bus, keys.session_out(session), label="test", block_ms=20)
    seen: list[tuple[int, Message]] = []
    seq = 0

    async def watch() -> None:
        while True:
            seen.extend((seq, d.message) for d in await out.read())

    async def send(message: Message) -> None:
        nonlocal seq
        await bus.send_to_session(keys.audio_in(session), message)
        seq += 1

    try:
        async with asyncio.TaskGroup() as group:
            running = group.create_task(transcriber.run())
            watcher = group.create_task(watch())
            for item in script:
                if isinstance(item, Options):
                    options = AsrOptions(
                        session_id=session, turn_id=0, seq=seq, turn_detection=item.turn_detection,
                        max_silence_ms=item.max_silence_ms,
                    )  # fmt: skip
                    await send(options)
                    continue
                if isinstance(item, Buffer):
                    assert item.action in ("commit", "clear")
                    action = "commit" if item.action == "commit" else "clear"
                    await send(InputBuffer(session_id=session, turn_id=0, seq=seq, action=action))
                    continue
                for start in range(0, len(item), FRAME):
                    await send(
                        AudioFrame(session_id=session, turn_id=0, seq=seq, audio=item[start : start + FRAME])
                    )
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # the last transcription
            if not close:
                running.cancel()
                watcher.cancel()
                return seen
            await bus.send_to_session(
                keys.audio_in(session), SessionClosed(session_id=session, turn_id=0, seq=0)
            )
            await asyncio.sleep(0.1)
            watcher.cancel()
    finally:
        await out.close()
    return seen


def _finals(seen: list[tuple[int, Message]]) -> list[TranscriptFinal]:
    return [m for _, m in seen if isinstance(m, TranscriptFinal)]


def _transcribed_bytes(final: TranscriptFinal) -> int:
    return int(final.text.split()[1])


HEAD, TAIL = "Tell me about the capital of", "France."


@pytest.mark.parametrize(
    ("default_ms", "session_ms", "finals"),
    [(1500, 300, 2), (300, 1500, 1)],
    ids=["a-short-silence-splits-at-the-pause", "a-long-silence-keeps-the-pause-inside"],
)
async def test_a_sessions_silence_setting_decides_whether_a_pause_ends_the_utterance(
    bus: Bus, default_ms: int, session_ms: int, finals: int
) -> None:
    """The process's setting would do the opposite of the session's in each case: ignoring the session's
    setting fails the test."""
    head, tail = synthesize_speech(HEAD), synthesize_speech(TAIL)
    script: list[bytes | Options | Buffer] = [
        Options(max_silence_ms=session_ms),
        silence(300, RATE) + head + silence(800, RATE) + tail + silence(2000, RATE),
    ]
    seen = await _run(bus, f"silence-{session_ms}", script, min_silence_ms=default_ms)
    got = _finals(seen)
    assert len(got) == finals, [m.text for m in got]
    assert sum(_transcribed_bytes(m) for m in got) > len(head) + len(tail)


async def test_push_to_talk_ends_an_utterance_only_on_commit_with_all_the_audio_since_the_last(
    bus: Bus,
) -> None:
    speech = synthesize_speech("What is the capital of France?")
    first = silence(200, RATE) + speech + silence(1500, RATE)  # a silence that would end it with detection
    script: list[bytes | Options | Buffer] = [Options(turn_detection=False), first, Buffer("commit")]
    second = speech + silence(1000, RATE)
    script += [speech + silence(600, RATE), Buffer("clear"), second, Buffer("commit")]
    seen = await _run(bus, "push-to-talk", script, min_silence_ms=300)

    assert not [m for _, m in seen if isinstance(m, SpeechStarted | TranscriptSpeculative)], "no VAD at all"
    got = _finals(seen)
    assert len(got) == 2, [m.text for m in got]
    assert _transcribed_bytes(got[0]) == len(first), "everything since the options, silence included"
    assert _transcribed_bytes(got[1]) == len(second), "only the audio after the clear"
    assert got[0].utterance < got[1].utterance, "each commit is its own utterance"


async def test_with_detection_on_a_commit_ends_the_utterance_at_once_and_a_clear_drops_it(bus: Bus) -> None:
    speech = synthesize_speech("What is the capital of France?")
    lead = silence(300, RATE)
    script: list[bytes | Options | Buffer] = [
        lead + speech + silence(300, RATE), Buffer("commit"), silence(2500, RATE),  # commit: a final
        speech + silence(300, RATE), Buffer("clear"), silence(2500, RATE),  # clear: none
    ]  # fmt: skip
    seen = await _run(bus, "commit-clear", script, min_silence_ms=2000)

    got = _finals(seen)
    assert len(got) == 1, [m.text for m in got]
    assert _transcribed_bytes(got[0]) >= len(speech)
    frames_to_commit = (len(lead) + len(speech) + len(silence(300, RATE)) + FRAME - 1) // FRAME
    arrived_at = next(at for at, m in seen if isinstance(m, TranscriptFinal))
    # Seq counts what was sent when the final arrived: before 2 s of silence could have ended it.
    assert arrived_at < frames_to_commit + 2000 // 20, (arrived_at, frames_to_commit)
    started = [m for _, m in seen if isinstance(m, SpeechStarted)]
    assert len(started) == 2, "the cleared speech was heard, then dropped"
    resumed = [m for _, m in seen if isinstance(m, SpeechResumed)]
    assert all(m.utterance == started[1].utterance for m in resumed), "a reply on its words is void"


async def test_turning_detection_on_again_hears_what_was_held(bus: Bus) -> None:
    speech = synthesize_speech("What is the capital of France?")
    script: list[bytes | Options | Buffer] = [
        Options(turn_detection=False), silence(200, RATE) + speech, Options(max_silence_ms=400),
        silence(1500, RATE),
    ]  # fmt: skip
    seen = await _run(bus, "held-then-heard", script, min_silence_ms=3000)
    got = _finals(seen)
    assert len(got) == 1 and _transcribed_bytes(got[0]) >= len(speech), [m.text for m in got]


async def test_a_replica_that_takes_the_session_over_keeps_its_options(bus: Bus) -> None:
    """The options in force at the checkpoint are saved with it: a new owner resumes there with them."""
    session = "options-kept"
    speech = synthesize_speech("What is the capital of France?")
    first: list[bytes | Options | Buffer] = [Options(turn_detection=False), speech, Buffer("commit")]
    seen = await _run(bus, session, first, min_silence_ms=300, close=False)  # then the replica dies
    before = _finals(seen)
    assert len(before) == 1
    second = silence(200, RATE) + speech + silence(1500, RATE)
    seen = await _run(bus, session, [second, Buffer("commit")], min_silence_ms=300)
    got = [m for m in _finals(seen) if m not in before]  # the output stream is read from its start
    assert len(got) == 1, "push-to-talk still: nothing ended on the silence, the commit did"
    assert _transcribed_bytes(got[0]) == len(second), "from the checkpoint on: nothing heard twice"
