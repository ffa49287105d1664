"""One session's side of resuming and of Redis losing its data: its record in Redis, its resume key, a
copy of the history it wrote (to write back if Redis loses it), and its parking when the client drops
(the gateway-wide side, and the protocol of the record, are in `services/gateway/resume.py`)."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from services.gateway.resume import (
    RECORD_MARGIN_S,
    Claimed,
    Parked,
    ResumeKey,
    Resumes,
    session_log_ids,
)
from services.gateway.usage import SessionUsage, TurnUsage
from shared import keys
from shared.bus import SESSION_TTL_SECONDS, cancel_safe
from shared.history import MAX_STORED_ENTRIES, HistoryEntry
from shared.schema import SessionOpened

if TYPE_CHECKING:
    from services.gateway.session import GatewaySession

log = logging.getLogger(__name__)

# How often a live session checks that Redis still has its data (one EXPIRE), besides before each reply.
_CHECK_EVERY_S = 1.0


class Continuity:
    """One session's side of resuming and of Redis data loss: its record, its resume key, a copy of the
    history it wrote, and its parking when the client drops."""

    def __init__(
        self,
        session: GatewaySession,
        resumes: Resumes | None,
        subject: str,
        claimed: Claimed | None,
        address: str = "",
    ) -> None:
        self.session = session
        self.resumes = resumes
        self.subject = subject
        self.address = address
        self.resumed = claimed is not None
        self.key = claimed.key if claimed is not None else ResumeKey.new(session.session_id)
        self.out_position: bytes | str = "0-0"
        self.asr_entry = ""
        self.history: deque[HistoryEntry] = deque(maxlen=MAX_STORED_ENTRIES)
        self.client_left = False
        """The connection was lost (closed by neither side): the session is kept for a resume."""
        self.handing_over = False
        """Its client came back on a new connection: this one is being closed, and the session parked."""
        self._started = False
        self._checked_at = time.monotonic()
        if claimed is not None:
            self._carry_on(claimed.parked)

    def _carry_on(self, parked: Parked) -> None:
        session = self.session
        session.conversation.turn = parked.turn
        session.conversation.work = parked.work
        session.conversation.sample_rate = parked.sample_rate
        session.instructions = parked.instructions
        session.economy = parked.economy
        session.frame_seq = parked.frame_seq
        self.out_position = parked.out_position
        self.asr_entry = parked.asr_entry

    @property
    def _redis(self) -> Any:
        return self.session.bus.redis

    async def open(self) -> bytes | None:
        """Start the session in Redis: its turn counter, its record and, for a new one, its ASR session
        (the entry id, for admission); a resumed session already has all of it."""
        sid = self.session.session_id
        if self.resumed:
            self._started = True
            await self.load_conversation()
            return None
        await cancel_safe(self._redis.set(keys.turn_counter(sid), 0, ex=SESSION_TTL_SECONDS))
        await self._write_record()
        opened = await self.session.bus.send(
            keys.ASR_DISPATCH, SessionOpened(session_id=sid, turn_id=0, seq=0)
        )
        self.asr_entry = opened.decode()
        self._started = True
        return opened

    def started_fields(self) -> dict[str, Any]:
        """`session.started`'s resume fields: the key to come back with, and for how long it works."""
        if self.resumes is None or not self.resumes.enabled:
            return {"resumed": self.resumed}
        return {"resume": str(self.key), "resume_window_s": self.resumes.window_s, "resumed": self.resumed}

    async def _write_record(self) -> None:
        record = keys.session_record(self.session.session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(record, mapping={"key": self.key.digest, "subject": self.subject})
            pipe.expire(record, SESSION_TTL_SECONDS)
            await cancel_safe(pipe.execute())

    def remember(self, entries: list[HistoryEntry]) -> None:
        """History the session wrote, kept to write it back if Redis loses it."""
        self.history.extend(entries)

    async def check(self, *, now: bool = False, sparing: int | None = None) -> None:
        """Every second (or `now`): if Redis lost the session's data (restarted with none), write it back
        and end the reply in flight with an error (its output was lost with Redis) but for work `sparing`,
        which is being asked for right now."""
        if not self._started or not (now or time.monotonic() - self._checked_at >= _CHECK_EVERY_S):
            return
        self._checked_at = time.monotonic()
        record = keys.session_record(self.session.session_id)
        if await cancel_safe(self._redis.expire(record, SESSION_TTL_SECONDS)):
            return
        log.warning("the session's data was lost in Redis; writing it back", extra=self._log_ids())
        await self._restore()
        session = self.session
        reply = session.conversation.reply
        if (
            reply is not None and reply.work_id != sparing and reply.speculation is None
            and not reply.failed and not reply.assembler.ended and reply.work_id == session.conversation.work
        ):  # fmt: skip
            await session.fail_reply(reply, "turn_failed", "the reply was lost when the server restarted")

    async def _restore(self) -> None:
        sid = self.session.session_id
        await self._write_record()
        work = self.session.conversation.work
        await cancel_safe(self._redis.set(keys.turn_counter(sid), work, nx=True, ex=SESSION_TTL_SECONDS))
        if self.history:
            key = keys.history(sid)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.rpush(key, *(entry.model_dump_json() for entry in self.history))
                pipe.expire(key, SESSION_TTL_SECONDS)
                await cancel_safe(pipe.execute())
        await self.session.usage.save()

    async def park(self) -> bool:
        """The client dropped: stop the reply being made, write what was heard to the history, and keep the
        session for `window_s` for the client to resume. False when it is not to be kept (ended on purpose,
        or by the server, or resuming is off): the caller ends it."""
        session = self.session
        if self.resumes is None or not self.resumes.enabled or not self._started:
            return False
        if not (self.client_left or self.handing_over):
            return False
        await session.conversation.park()
        await session.usage.save()
        conversation = session.conversation
        out = self.out_position
        parked = Parked(
            turn=conversation.turn, work=conversation.work, instructions=session.instructions,
            economy=session.economy, sample_rate=conversation.sample_rate, frame_seq=session.frame_seq,
            out_position=out.decode() if isinstance(out, bytes) else out, asr_entry=self.asr_entry,
        )  # fmt: skip
        until_ms = int((time.time() + self.resumes.window_s) * 1000)
        record = keys.session_record(session.session_id)
        fields = {
            "key": self.key.digest, "subject": self.subject, "parked": parked.model_dump_json(),
            "parked_until": until_ms,
        }  # fmt: skip
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(record, mapping=fields)
            pipe.expire(record, int(self.resumes.window_s) + RECORD_MARGIN_S)
            await cancel_safe(pipe.execute())
        self.resumes.expire_later(session.session_id, self.address, parked)
        log.info("client left; session kept for a resume", extra=self._log_ids())
        return True

    async def load_conversation(self) -> None:
        """A resumed session's usage so far and its history, from Redis."""
        session = self.session
        sid = session.session_id
        totals: Any = await cancel_safe(self._redis.hgetall(keys.usage(sid)))
        turns: Any = await cancel_safe(self._redis.hgetall(keys.usage_turns(sid)))
        _load_usage(session.usage, totals, turns)
        raw: Any = await cancel_safe(self._redis.lrange(keys.history(sid), -MAX_STORED_ENTRIES, -1))
        for item in raw:
            try:
                self.history.append(HistoryEntry.model_validate_json(item))
            except ValueError:
                continue

    async def hand_over(self) -> None:
        """Close this connection for the client's new one, which resumes the session once it is parked."""
        self.handing_over = True
        await self.session.ws.close_now(1000, "resumed on another connection")

    def _log_ids(self) -> dict[str, str]:
        return session_log_ids(self.session.session_id)


def _load_usage(usage: SessionUsage, totals: dict[bytes, bytes], turns: dict[bytes, bytes]) -> None:
    """Fill a fresh SessionUsage with what Redis holds for the session (its totals, its turns' records)."""

    def number(name: str) -> float:
        try:
            return float(totals.get(name.encode(), b"0"))
        except ValueError:
            return 0.0

    usage.input_tokens = int(number("llm_input_tokens"))
    usage.output_tokens = int(number("llm_output_tokens"))
    usage.tool_calls = int(number("tool_calls"))
    usage.tool_failures = int(number("tool_failures"))
    usage.replies = int(number("replies"))
    usage.audio_in_s = number("audio_in_seconds")
    usage.audio_out_s = number("audio_out_seconds")
    records: list[tuple[TurnUsage, dict[str, float]]] = []
    for raw in turns.values():
        try:
            data = json.loads(raw)
            record = TurnUsage.model_validate(data)
        except ValueError:
            continue
        audio = {k: float(data.get(k, 0.0)) for k in ("audio_in_seconds", "audio_out_seconds")}
        records.append((record, audio))
    for record, audio in sorted(records, key=lambda pair: pair[0].turn_id):
        usage.turns[record.turn_id] = record
        usage.turn_audio[record.turn_id] = audio
    usage.budget_reached = usage.token_budget is not None and usage.tokens >= usage.token_budget
