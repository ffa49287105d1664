"""ASR service loop: take ownership of sessions from the dispatch queue and transcribe each."""

from __future__ import annotations

import asyncio
import logging

from services.asr.endpointer import Endpointer, EndpointerConfig, SileroDetector
from services.asr.engine import FasterWhisperRecognizer, Recognizer, Transcription
from services.asr.reader import AudioReader
from services.asr.session import SessionTranscriber, TurnJudge
from services.asr.settings import AsrSettings
from services.asr.turn_policy import TurnPolicy, TurnVerdict
from services.asr.vad_thread import VadThread
from shared import keys
from shared.bus import Bus, WorkQueue
from shared.cpu import inference_threads
from shared.metrics import ASR_SESSIONS, ASR_TURN_MISHEARD
from shared.schema import Message, SessionOpened
from shared.worker import QueueWorker, tell_session

log = logging.getLogger(__name__)


class AsrService:
    """Each dispatch entry is a session lease: held (and kept alive) while its audio is transcribed,
    acked when the session closes, taken over by another replica if this one dies."""

    name = "asr"

    def __init__(self, settings: AsrSettings, bus: Bus, recognizer: Recognizer | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.recognizer = recognizer
        silence_ms = settings.incomplete_silence_ms if settings.turn_policy else settings.min_silence_ms
        self.endpointer_config = EndpointerConfig(
            min_silence_ms=silence_ms,
            barge_in_min_ms=settings.barge_in_min_ms,
            post_roll_ms=settings.pause_ms,
        )
        self.policy: TurnPolicy | None = None
        self.reader = AudioReader(bus)
        """One blocking read for the audio of every session this replica owns (services/asr/reader.py)."""
        self.vad: VadThread | None = None
        """All sessions' voice-activity detection, on one thread while `run` runs (asr/vad_thread.py)."""

    async def load(self) -> None:
        """Load the recognizer (off the event loop) unless one was given."""
        if self.recognizer is None:
            self.recognizer = await asyncio.to_thread(
                FasterWhisperRecognizer.load,
                self.settings.model_path,
                inference_threads(self.settings.cpu_threads, self.settings.cpu_share),
                short_window=self.settings.short_window,
            )
        if self.settings.turn_policy and self.policy is None:
            # Words decide (rules and the bundled SmolLM2 as a text scorer); Smart Turn's audio model
            # judged piper speech no better and costs ~50 ms a pause (docs/benchmarks.md).
            self.policy = await asyncio.to_thread(TurnPolicy.load, None)

    def judge(self) -> TurnJudge | None:
        """The session's end-of-turn judge, None when the turn policy is off."""
        policy = self.policy
        if policy is None:
            return None

        async def complete(heard: Transcription, pcm: bytes) -> bool:
            decision = await policy.decide(heard.text, pcm, heard.endings)
            if decision.misheard_probability is not None:
                ASR_TURN_MISHEARD.inc()
            return decision.verdict is TurnVerdict.COMPLETE

        return complete

    async def run(self, stop: asyncio.Event) -> None:
        """Serve sessions until stopped."""
        queue = WorkQueue(
            self.bus, keys.ASR_DISPATCH, keys.ASR_GROUP, self.settings.consumer_name,
            label="asr_dispatch", claim_idle_ms=self.settings.claim_idle_ms,
        )  # fmt: skip
        worker = QueueWorker(
            queue, self.own_session, fence=None, concurrency=self.settings.max_sessions,
            grace_s=self.settings.shutdown_grace_s,
            on_failure=tell_session(self.bus, "session_failed", "speech recognition failed; reconnect"),
        )  # fmt: skip
        self.vad = VadThread()
        try:
            async with asyncio.TaskGroup() as group:
                reading = group.create_task(self.reader.run())
                try:
                    await worker.run(stop)
                finally:
                    reading.cancel()  # its sessions are over: the worker waited for them (or gave them up)
        finally:
            await queue.close()
            self.vad.close()
            self.vad = None
            if self.policy is not None:
                await asyncio.to_thread(self.policy.close)

    async def own_session(self, message: Message) -> None:
        """Transcribe one session until it closes."""
        if not isinstance(message, SessionOpened):
            log.warning("unexpected message on ASR dispatch", extra={"kind": message.kind})
            return
        assert self.recognizer is not None, "load() first"
        # Building the VAD model takes 65-150 ms (measured under load): off the loop, or every other session's
        # audio would stall meanwhile.
        endpointer = Endpointer(await asyncio.to_thread(SileroDetector), self.endpointer_config)
        ASR_SESSIONS.inc()
        try:
            await SessionTranscriber(
                self.bus,
                message.session_id,
                self.recognizer,
                endpointer,
                speculate=self.settings.speculative_final,
                partial_interval_ms=self.settings.partial_interval_ms,
                judge=self.judge(),
                reader=self.reader,
                vad=self.vad,
            ).run()
        finally:
            ASR_SESSIONS.dec()
