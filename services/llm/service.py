"""LLM service loop: answer each reply request as a stream of speakable phrases."""

from __future__ import annotations

import asyncio
import logging
import time

from services.llm.engine import ChatMessage, GenerationError, Generator
from services.llm.factory import generator_for
from services.llm.phrases import PhraseChunker
from services.llm.settings import LlmSettings
from shared import keys
from shared.bus import WORK_QUEUE_RETENTION_S, Bus, StreamTail, WorkQueue, cancel_safe
from shared.cpu import inference_threads
from shared.history import HistoryEntry, load_history
from shared.metrics import (
    HANDLER_ERRORS,
    LLM_FIRST_PHRASE_SECONDS,
    LLM_FIRST_TOKEN_SECONDS,
    LLM_YIELD_SECONDS,
)
from shared.schema import (
    AudioChunk,
    Message,
    PhraseAudioDone,
    ReplyDone,
    ReplyPhrase,
    ReplyRequested,
    ServiceError,
    encode,
)
from shared.worker import serve_fenced_queue, tell_session

log = logging.getLogger(__name__)


class LlmService:
    """Takes reply requests from the shared queue; each phrase goes to TTS the moment it is complete."""

    name = "llm"

    def __init__(self, settings: LlmSettings, bus: Bus, generator: Generator | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.generator = generator

    async def load(self) -> None:
        """Build the generator (loading local weights off the event loop) unless one was given."""
        if self.generator is None:
            s = self.settings
            threads = inference_threads(s.n_threads, s.cpu_share)
            self.generator = await asyncio.to_thread(generator_for, s, threads)
        log.info("generator ready", extra={"engine": self.generator.name})

    async def run(self, stop: asyncio.Event) -> None:
        """Serve reply requests until stopped."""
        queue = WorkQueue(
            self.bus, keys.LLM_REQUESTS, keys.LLM_GROUP, self.settings.consumer_name,
            label="llm_requests", claim_idle_ms=self.settings.claim_idle_ms,
            retention_s=WORK_QUEUE_RETENTION_S,
        )  # fmt: skip
        try:
            await serve_fenced_queue(
                queue, self.reply, stop,
                concurrency=self.settings.concurrency, grace_s=self.settings.shutdown_grace_s,
                on_failure=tell_session(self.bus, "turn_failed", "the reply could not be generated"),
            )  # fmt: skip
        finally:
            if self.generator is not None:
                await self.generator.aclose()

    async def reply(self, message: Message) -> None:
        """Generate the reply for one request; aborted (cancelled) when its turn goes stale."""
        if not isinstance(message, ReplyRequested):
            log.warning("unexpected message on LLM queue", extra={"kind": message.kind})
            return
        assert self.generator is not None, "load() first"
        history = await load_history(self.bus.redis, message.session_id, self.settings.history_messages)
        system = self.settings.system_prompt
        if message.instructions:
            system = f"{system}\n\n{message.instructions}"
        prompt = [
            ChatMessage("system", system),
            *(chat for entry in history if (chat := _as_chat(entry)) is not None),
            ChatMessage("user", message.text),
        ]
        # The history is written by the gateway, which alone knows how much of this reply the user heard.
        spoken: list[str] = []
        try:
            await self._stream_phrases(message, prompt, spoken)
        except GenerationError as exc:
            HANDLER_ERRORS.labels(queue="llm_requests").inc()
            log.warning("generation failed", extra={"session_id": message.session_id, "error": str(exc)})
            await self._send_out(
                message, ServiceError(**_ids(message), seq=0, code="turn_failed", message=str(exc))
            )
            return
        await self._send_out(message, ReplyDone(**_ids(message), seq=0, phrase_count=len(spoken)))

    async def _stream_phrases(
        self, request: ReplyRequested, prompt: list[ChatMessage], spoken: list[str]
    ) -> None:
        assert self.generator is not None
        started = time.monotonic()
        chunker = PhraseChunker()
        first_token = True
        async for delta in self.generator.stream(prompt):
            if first_token:
                LLM_FIRST_TOKEN_SECONDS.observe(time.monotonic() - started)
                first_token = False
            for phrase in chunker.push(delta):
                await self._send_phrase(request, len(spoken), phrase, started)
                spoken.append(phrase)
        for phrase in chunker.flush():
            await self._send_phrase(request, len(spoken), phrase, started)
            spoken.append(phrase)

    async def _send_phrase(self, request: ReplyRequested, seq: int, text: str, started: float) -> None:
        phrase = ReplyPhrase(
            **_ids(request), seq=seq, text=text, output_sample_rate=request.output_sample_rate
        )
        async with self.bus.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(keys.TTS_REQUESTS, encode(phrase), maxlen=10_000, approximate=True)  # type: ignore[arg-type]
            pipe.xadd(keys.session_out(request.session_id), encode(phrase), maxlen=5_000, approximate=True)  # type: ignore[arg-type]
            _, out_id = await cancel_safe(pipe.execute())
        if seq == 0:
            LLM_FIRST_PHRASE_SECONDS.observe(time.monotonic() - started)
            await self._yield_to_first_audio(request, out_id)

    async def _yield_to_first_audio(self, request: ReplyRequested, phrase_id: bytes) -> None:
        """Wait until the first phrase's audio is out (bounded): the generator is not read meanwhile, so a
        local model pauses and the first phrase's synthesis is not slowed by generation of later ones."""
        limit_s = self.settings.first_phrase_yield_ms / 1000
        if limit_s <= 0:
            return
        waited_from = time.monotonic()
        deadline = waited_from + limit_s
        out = StreamTail(self.bus, keys.session_out(request.session_id), label="llm_yield", last_id=phrase_id)
        try:
            while (left_s := deadline - time.monotonic()) > 0:
                out.block_ms = max(1, int(left_s * 1000))
                for delivery in await out.read():
                    message = delivery.message
                    if message.turn_id == request.turn_id and isinstance(
                        message, AudioChunk | PhraseAudioDone | ServiceError
                    ):
                        LLM_YIELD_SECONDS.observe(time.monotonic() - waited_from)
                        return
            log.info(
                "first phrase not spoken in time; generating on", extra={"session_id": request.session_id}
            )
        finally:
            await out.close()

    async def _send_out(self, request: ReplyRequested, message: Message) -> None:
        await self.bus.send_to_session(keys.session_out(request.session_id), message)


def _as_chat(entry: HistoryEntry) -> ChatMessage | None:
    """The model sees an interrupted reply as the words the user heard, trailing off."""
    if entry.role == "assistant" and entry.interrupted:
        return ChatMessage("assistant", f"{entry.text}…") if entry.text else None
    return ChatMessage(entry.role, entry.text)


def _ids(message: Message) -> dict[str, str | int]:
    return {"session_id": message.session_id, "turn_id": message.turn_id}
