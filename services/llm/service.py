"""LLM service loop: answer each reply request as a stream of speakable phrases."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from services.llm.continuation import REPLY_ENDED, SAID_KEPT, SAID_TTL_S, said_item, said_key, said_so_far
from services.llm.economy import (
    PhraseStats,
    ReplyPlan,
    estimate_prompt_tokens,
    estimate_tokens,
    fit_context,
    plan_reply,
    reply_phrases,
)
from services.llm.engine import (
    ChatMessage,
    GenerationError,
    Generator,
    Prefiller,
    Usage,
    paired_tool_messages,
)
from services.llm.factory import generator_for
from services.llm.prefill import PrefillHints
from services.llm.settings import LlmSettings
from shared import keys
from shared.bus import WORK_QUEUE_RETENTION_S, Bus, StreamTail, WorkQueue, cancel_safe
from shared.cpu import inference_threads
from shared.history import HistoryEntry, load_history
from shared.metrics import (
    HANDLER_ERRORS,
    LLM_ENGINE_TOKENS,
    LLM_FIRST_PHRASE_SECONDS,
    LLM_FIRST_TOKEN_SECONDS,
    LLM_PHRASES_PER_REPLY,
    LLM_PREFILL_TOKENS,
    LLM_TOKENS_PER_SECOND,
    LLM_YIELD_SECONDS,
)
from shared.schema import (
    AudioChunk,
    FunctionCall,
    Message,
    PhraseAudioDone,
    ReplyDone,
    ReplyPhrase,
    ReplyPrefill,
    ReplyRequested,
    ReplyUsage,
    ServiceError,
    encode,
)
from shared.worker import serve_fenced_queue, tell_session

log = logging.getLogger(__name__)


@dataclass
class _Reply:
    """One reply in the making: its request, what the model is asked, what it said and what it cost."""

    request: ReplyRequested
    plan: ReplyPlan
    prompt: list[ChatMessage]
    usage: Usage = field(default_factory=Usage)
    stats: PhraseStats = field(default_factory=lambda: PhraseStats(time.monotonic))
    spoken: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    """Phrases sent before this replica took the reply over."""


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
            self.generator = await asyncio.to_thread(generator_for, s, threads, s.n_threads_batch)
        log.info("generator ready", extra={"engine": self.generator.name})

    async def run(self, stop: asyncio.Event) -> None:
        """Serve reply requests until stopped."""
        queue = WorkQueue(
            self.bus, keys.LLM_REQUESTS, keys.LLM_GROUP, self.settings.consumer_name,
            label="llm_requests", claim_idle_ms=self.settings.claim_idle_ms,
            retention_s=WORK_QUEUE_RETENTION_S,
        )  # fmt: skip
        try:
            async with asyncio.TaskGroup() as group:
                hints = None
                if self.settings.prefill and isinstance(self.generator, Prefiller):
                    hints = group.create_task(PrefillHints(self.bus, self.prefill).run())
                await serve_fenced_queue(
                    queue, self.reply, stop,
                    concurrency=self.settings.concurrency, grace_s=self.settings.shutdown_grace_s,
                    on_failure=tell_session(self.bus, "turn_failed", "the reply could not be generated"),
                )  # fmt: skip
                if hints is not None:
                    hints.cancel()
        finally:
            if self.generator is not None:
                await self.generator.aclose()

    async def reply(self, message: Message) -> None:
        """Generate the reply for one request; aborted (cancelled) when its turn goes stale."""
        if not isinstance(message, ReplyRequested):
            log.warning("unexpected message on LLM queue", extra={"kind": message.kind})
            return
        assert self.generator is not None, "load() first"
        plan, prompt = await self._prompt(message)
        # The history is written by the gateway, which alone knows how much of this reply the user heard.
        reply = _Reply(message, plan, prompt)
        # A reply another replica (or an earlier try) began: go on after the phrases it sent.
        said = await said_so_far(self.bus.redis, message)
        if said.ended:
            return  # its replica finished it, then died before acking it
        reply.said = said.phrases
        reply.spoken.extend(reply.said)
        try:
            try:
                await self._stream_phrases(reply)
            except GenerationError as exc:
                HANDLER_ERRORS.labels(queue="llm_requests").inc()
                log.warning("generation failed", extra={"session_id": message.session_id, "error": str(exc)})
                if not reply.said:
                    await self._send_out(
                        message, ServiceError(**_ids(message), seq=0, code="turn_failed", message=str(exc))
                    )
                    return
                # The user has part of the answer already (a model may refuse a prefilled answer):
                # ending it where it stopped keeps what they hear whole, rather than failing the turn.
            for index, call in enumerate(reply.usage.function_calls):  # a client-side call ends the reply
                await self._send_out(message, FunctionCall(
                    **_ids(message), seq=index, call_id=call.call_id or f"call_{index}", name=call.name,
                    arguments=call.arguments,
                ))  # fmt: skip
            await self._finish(reply)
            LLM_PHRASES_PER_REPLY.labels(economy=str(plan.economy).lower()).observe(len(reply.spoken))
        finally:
            # Also for a failed or cancelled reply: what was generated was paid for. Shielded, so a cancel
            # does not lose it; the gateway decides whether the session is charged.
            await asyncio.shield(self._report_usage(reply))

    async def _prompt(self, message: ReplyRequested | ReplyPrefill) -> tuple[ReplyPlan, list[ChatMessage]]:
        """The reply's plan and what the model is asked: the system prompt, the history, the user's words."""
        history = await load_history(self.bus.redis, message.session_id, self.settings.history_messages)
        plan = plan_reply(self.settings, message.instructions, message.economy)
        if isinstance(message, ReplyRequested) and message.tools:
            options = dataclasses.replace(plan.options, client_tools=tuple(message.tools))
            plan = dataclasses.replace(plan, options=options)
        prompt = fit_context(
            ChatMessage("system", plan.system_prompt),
            paired_tool_messages([chat for entry in history if (chat := _as_chat(entry)) is not None]),
            ChatMessage("user", message.text) if message.text else None,
            self.settings.context_tokens,
        )
        return plan, prompt

    async def prefill(self, hint: ReplyPrefill) -> None:
        """Read the prompt the session's next request will start with into an idle local model."""
        generator = self.generator
        if not isinstance(generator, Prefiller):
            return
        _, prompt = await self._prompt(hint)
        if not hint.text:  # the user has begun to speak: read up to where their words will go
            prompt = [*prompt, ChatMessage("user", "")]
        LLM_PREFILL_TOKENS.inc(await generator.prefill(prompt))

    async def _stream_phrases(self, reply: _Reply) -> None:
        assert self.generator is not None
        started = time.monotonic()
        stats, spoken = reply.stats, reply.spoken
        phrases = reply_phrases(self.generator, reply.prompt, reply.plan, reply.usage, stats, reply.said)
        async with aclosing(phrases):
            async for phrase in phrases:
                sending = time.monotonic()
                if not spoken and stats.first_text_at is not None:
                    LLM_FIRST_TOKEN_SECONDS.observe(stats.first_text_at - started)
                await self._send_phrase(reply.request, len(spoken), phrase, started)
                if not spoken:
                    stats.paused_s = time.monotonic() - sending  # it waited for the phrase's first audio
                spoken.append(phrase)

    async def _finish(self, reply: _Reply) -> None:
        """Send ReplyDone, and record that the reply ended in the same write."""
        request, said = reply.request, said_key(reply.request)
        done = ReplyDone(**_ids(request), seq=0, phrase_count=len(reply.spoken))
        async with self.bus.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(keys.session_out(request.session_id), encode(done), maxlen=5_000, approximate=True)  # type: ignore[arg-type]
            pipe.rpush(said, said_item(request, REPLY_ENDED))
            pipe.ltrim(said, -SAID_KEPT, -1)
            pipe.expire(said, SAID_TTL_S)
            await cancel_safe(pipe.execute())

    async def _report_usage(self, reply: _Reply) -> None:
        """Send the reply's usage to its session and count it by engine and model (estimated from the text
        where the engine gave no figures)."""
        assert self.generator is not None
        usage = reply.usage
        estimated = not usage.reported
        if estimated:
            usage.input_tokens = estimate_prompt_tokens(reply.prompt)
            usage.output_tokens = estimate_tokens(reply.stats.text)
        engine = engine_label(self.generator.name)
        model = usage.model or self.generator.name
        LLM_ENGINE_TOKENS.labels(engine=engine, model=model, kind="input").inc(usage.input_tokens)
        LLM_ENGINE_TOKENS.labels(engine=engine, model=model, kind="output").inc(usage.output_tokens)
        if (speed := reply.stats.tokens_per_second(usage.output_tokens)) is not None:
            LLM_TOKENS_PER_SECOND.labels(engine=engine).observe(speed)
        report = ReplyUsage(
            **_ids(reply.request), seq=0, engine=engine, model=model[:200], input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, estimated=estimated, tool_calls=usage.tool_calls,
            tool_failures=usage.tool_failures, phrase_count=len(reply.spoken), economy=reply.plan.economy,
        )  # fmt: skip
        try:
            await self._send_out(reply.request, report)
        except RedisError:
            log.warning("usage report lost", extra={"session_id": reply.request.session_id})

    async def _send_phrase(self, request: ReplyRequested, seq: int, text: str, started: float) -> None:
        phrase = ReplyPhrase(
            **_ids(request), seq=seq, text=text, output_sample_rate=request.output_sample_rate
        )
        said = said_key(request)
        # One write: a replica killed now has sent the phrase to TTS, to the client and to the record a
        # replica taking over reads, or to none of them.
        async with self.bus.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(keys.TTS_REQUESTS, encode(phrase), maxlen=10_000, approximate=True)  # type: ignore[arg-type]
            pipe.xadd(keys.session_out(request.session_id), encode(phrase), maxlen=5_000, approximate=True)  # type: ignore[arg-type]
            pipe.rpush(said, said_item(request, text))
            pipe.ltrim(said, -SAID_KEPT, -1)
            pipe.expire(said, SAID_TTL_S)
            out_id = (await cancel_safe(pipe.execute()))[1]
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
    if entry.role == "function_call":
        return ChatMessage("tool_call", entry.text, call_id=entry.call_id, name=entry.name)
    if entry.role == "function_call_output":
        return ChatMessage("tool", entry.text, call_id=entry.call_id)
    if not entry.text and not entry.interrupted:
        return None  # a reply the client asked for without words has no question
    if entry.role == "assistant" and entry.interrupted:
        return ChatMessage("assistant", f"{entry.text}…") if entry.text else None
    return ChatMessage(entry.role, entry.text)


def engine_label(name: str) -> str:
    """The engine part of a generator's name ("openai:m" → "openai"), for metric labels."""
    return name.split(":", 1)[0]


def _ids(message: Message) -> dict[str, str | int]:
    return {"session_id": message.session_id, "turn_id": message.turn_id}
