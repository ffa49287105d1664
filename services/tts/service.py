"""TTS service loop: each phrase becomes PCM chunks on the session's output stream."""

from __future__ import annotations

import asyncio
import logging
import time

from services.tts.engine import PiperSynthesizer, Synthesizer, synthesis_threads
from services.tts.settings import TtsSettings
from services.tts.speakable import speakable
from shared import keys
from shared.bus import WORK_QUEUE_RETENTION_S, Bus, WorkQueue
from shared.metrics import TTS_FIRST_BYTE_SECONDS
from shared.schema import AudioChunk, Message, PhraseAudioDone, ReplyPhrase
from shared.worker import serve_fenced_queue, tell_session

log = logging.getLogger(__name__)


class TtsService:
    """Phrases come from a shared queue, so replicas may speak one reply's phrases in parallel;
    chunks carry the phrase index and the gateway plays them in order."""

    name = "tts"

    def __init__(self, settings: TtsSettings, bus: Bus, synthesizer: Synthesizer | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.synthesizer = synthesizer

    async def load(self) -> None:
        """Load the voice (off the event loop) unless a synthesizer was given."""
        if self.synthesizer is None:
            threads = synthesis_threads(self.settings.threads)
            self.synthesizer = await asyncio.to_thread(PiperSynthesizer.load, self.settings.chunk_ms, threads)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve phrases until stopped."""
        queue = WorkQueue(
            self.bus, keys.TTS_REQUESTS, keys.TTS_GROUP, self.settings.consumer_name,
            label="tts_requests", claim_idle_ms=self.settings.claim_idle_ms,
            retention_s=WORK_QUEUE_RETENTION_S,
        )  # fmt: skip
        # A phrase that fails part-way is spoken again from the start (the gateway drops chunks it has).
        await serve_fenced_queue(
            queue, self.speak, stop,
            concurrency=self.settings.concurrency, grace_s=self.settings.shutdown_grace_s,
            on_failure=tell_session(self.bus, "turn_failed", "the reply could not be spoken"),
        )  # fmt: skip

    async def speak(self, message: Message) -> None:
        """Synthesize one phrase; aborted (cancelled) when its turn goes stale."""
        if not isinstance(message, ReplyPhrase):
            log.warning("unexpected message on TTS queue", extra={"kind": message.kind})
            return
        assert self.synthesizer is not None, "load() first"
        out = keys.session_out(message.session_id)
        ids = {"session_id": message.session_id, "turn_id": message.turn_id, "phrase_seq": message.seq}
        started = time.monotonic()
        count = 0
        # The client shows the model's text; the voice says its speakable form (no symbols read out).
        async for pcm in self.synthesizer.stream(speakable(message.text), message.output_sample_rate):
            if count == 0:
                TTS_FIRST_BYTE_SECONDS.observe(time.monotonic() - started)
            chunk = AudioChunk(**ids, seq=count, sample_rate=message.output_sample_rate, audio=pcm)
            await self.bus.send_to_session(out, chunk)
            count += 1
        await self.bus.send_to_session(out, PhraseAudioDone(**ids, seq=0, chunk_count=count))
