"""A session outlives its connection: a client that drops comes back within the resume window and carries
on where it was (docs/protocol.md#resuming-a-session). This module is the gateway-wide side: the resume key,
the session's record in Redis and who may claim it, and the sessions kept for a resume until their window
ends; each session's own side is `services/gateway/continuity.py`.

Who may resume is in the session's record in Redis (`keys.session_record`): the SHA-256 of a secret the
gateway gave that client only (in `session.started`), and the subject of its token when tokens are on. The
secret itself is never stored or logged. While the client is away the record also holds what the resumed
connection carries on from; whoever takes that out of the record (one atomic script) owns the session: a
resuming connection on any gateway replica, or the expiry that ends it for good once the window is over.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from redis.exceptions import RedisError

from services.gateway.access import Access, offered_token
from shared import keys
from shared.auth import TokenError
from shared.bus import SESSION_TTL_SECONDS, Bus, cancel_safe
from shared.schema import SessionClosed
from shared.turns import open_turn

if TYPE_CHECKING:
    from services.gateway.session import GatewaySession

log = logging.getLogger(__name__)

RESUME_SUBPROTOCOL_PREFIX = "resume."
"""A client resumes by offering the subprotocol `resume.<key>` (or the query parameter `resume`)."""
_KEY = re.compile(r"([0-9a-f]{32})\.([A-Za-z0-9_-]{43})")
# A parked record outlives its window by this much, so the expiry (not Redis) is what ends it; if the
# gateway that parked it died, Redis drops the record and the session's keys expire on their own.
RECORD_MARGIN_S = 60
# At expiry, how long to wait for the ASR to let go of the session before its keys are deleted.
_ASR_RELEASE_WAIT_S = 10.0
CLOSED_SESSION_TTL_S = 120
"""A session that ended keeps its keys this long (for its ASR to read the close), then Redis drops them."""


@dataclass(frozen=True, slots=True)
class ResumeKey:
    """What `session.started` gives the client: the session's id and a secret, as `<id>.<secret>`."""

    session_id: str
    secret: str

    @classmethod
    def new(cls, session_id: str) -> ResumeKey:
        """A fresh secret for the session (256 bits)."""
        return cls(session_id, secrets.token_urlsafe(32))

    @classmethod
    def parse(cls, text: str) -> ResumeKey | None:
        """The key a client offered, or None if it is not shaped like one."""
        match = _KEY.fullmatch(text)
        return None if match is None else cls(match[1], match[2])

    @property
    def digest(self) -> str:
        """What Redis holds instead of the secret."""
        return hashlib.sha256(self.secret.encode()).hexdigest()

    def __str__(self) -> str:
        return f"{self.session_id}.{self.secret}"

    def __repr__(self) -> str:
        return f"ResumeKey({self.session_id!r}, ***)"


def offered_resume(subprotocols: Sequence[str], query_key: str | None) -> str | None:
    """The resume key a client sent: a `resume.<key>` subprotocol, else the `resume` query parameter."""
    for protocol in subprotocols:
        if protocol.startswith(RESUME_SUBPROTOCOL_PREFIX):
            return protocol.removeprefix(RESUME_SUBPROTOCOL_PREFIX)
    return query_key or None


def token_subject(access: Access, subprotocols: Sequence[str], query_token: str | None) -> str:
    """The `sub` of the client's token when tokens are required ("" otherwise): a session is resumed only
    under the subject it was opened with. Call after `Access.token_refusal` admitted the client."""
    token = offered_token(subprotocols, query_token)
    if not access.required or access.tokens is None or token is None:
        return ""
    try:
        return str(access.tokens.verify(token).get("sub", ""))
    except TokenError:
        return ""


class Parked(BaseModel):
    """What a resumed connection carries on from (the conversation itself is in Redis: history, usage)."""

    model_config = ConfigDict(frozen=True)

    turn: int
    work: int
    instructions: str
    economy: bool
    sample_rate: int
    frame_seq: int
    out_position: str
    """The session's output stream as far as the old connection handled it: the resumed one goes on
    after it (transcripts of what the user said just before the drop are answered then)."""
    asr_entry: str
    """The session's entry on the ASR queue: acked once the ASR let go of the session."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """A parked session taken out of its record: this connection (or the expiry) owns it now."""

    session_id: str
    subject: str
    parked: Parked
    key: ResumeKey
    """The session's new resume key: the one used is spent."""


# KEYS[1]: the record. ARGV: digest to match ("" at expiry: none), subject, new digest ("" : keep),
# ttl, now in ms (at expiry: only a park whose window is over), digest check: "1"/"0".
# Returns {2, parked state, subject} when claimed, {1} when the key is right but the session is still
# connected, {0} otherwise.
_CLAIM = """
local rec = redis.call('HMGET', KEYS[1], 'key', 'subject', 'parked', 'parked_until')
if ARGV[6] == '1' and (rec[1] ~= ARGV[1] or rec[2] ~= ARGV[2]) then return {0} end
if not rec[3] then
  if ARGV[6] == '1' and rec[1] then return {1} end
  return {0}
end
if ARGV[6] == '0' and tonumber(rec[4]) > tonumber(ARGV[5]) then return {0} end
redis.call('HDEL', KEYS[1], 'parked', 'parked_until')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'key', ARGV[3]) end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {2, rec[3], rec[2] or ''}
"""
# A resume that finds its session still connected (the server has not noticed the drop yet, or it is being
# parked right now) waits this long for it to be parked; a session on this gateway is closed for it.
_LIVE_WAIT_S = 8.0


class Resumes:
    """The gateway's parked sessions: claims them for resuming connections, and ends each for good once
    its window is over (this class owns those timers)."""

    def __init__(self, bus: Bus, window_s: float) -> None:
        self.bus = bus
        self.window_s = window_s
        self._claim = bus.redis.register_script(_CLAIM)
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._addresses: dict[str, str] = {}  # session → the client address it was parked from

    def parked(self, address: str | None = None, *, excluding: str | None = None) -> int:
        """Sessions parked here (for clients at `address`, when given), but `excluding` (the one a client
        is resuming): each holds an ASR slot, so they count against the gateway's and the address's
        session limits."""
        return sum(
            1
            for sid, at in self._addresses.items()
            if (address is None or at == address) and sid != excluding
        )

    @property
    def enabled(self) -> bool:
        """Sessions can be resumed at all (a window of 0 turns it off)."""
        return self.window_s > 0

    async def claim(
        self, key: ResumeKey, subject: str, live: Mapping[str, GatewaySession] | None = None
    ) -> Claimed | None:
        """The parked session `key` opens, given a new key; None for an unknown, expired or foreign session
        (not told apart: the answer must not help anyone guess). A session the key opens that is still
        connected (its client came back before the server noticed it had gone) is waited for, and taken
        over when it is in `live` (this gateway's sessions by id): its old connection is closed."""
        new_key = ResumeKey.new(key.session_id)
        args: list[str | int] = [key.digest, subject, new_key.digest, SESSION_TTL_SECONDS, 0, "1"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _LIVE_WAIT_S
        while True:
            found: Any = await cancel_safe(self._claim(keys=[keys.session_record(key.session_id)], args=args))
            if found[0] == 2:
                return _claimed(key.session_id, found[1:], new_key)
            if found[0] == 0 or loop.time() >= deadline:
                return None
            old = (live or {}).get(key.session_id)
            if old is not None and not old.continuity.handing_over:
                log.info(
                    "client came back on a new connection; closing the old one",
                    extra=session_log_ids(old.session_id),
                )
                await old.continuity.hand_over()
            await asyncio.sleep(0.05)

    def expire_later(self, session_id: str, address: str, parked: Parked) -> None:
        """End the parked session for good once its window is over, unless a connection resumed it."""
        self.resumed(session_id)
        task = asyncio.get_running_loop().create_task(self._expire_after(session_id, parked))
        self._timers[session_id] = task
        self._addresses[session_id] = address
        task.add_done_callback(lambda done: self._forget(session_id, done))

    def resumed(self, session_id: str) -> None:
        """A connection took the session up again: no need to end it (if it was parked here)."""
        if (timer := self._timers.pop(session_id, None)) is not None:
            timer.cancel()
        self._addresses.pop(session_id, None)

    def _forget(self, session_id: str, task: asyncio.Task[None]) -> None:
        if self._timers.get(session_id) is task:
            del self._timers[session_id]
            self._addresses.pop(session_id, None)

    async def _expire_after(self, session_id: str, parked: Parked) -> None:
        await asyncio.sleep(self.window_s)
        try:
            if not await self.expire(session_id, wait_asr_s=_ASR_RELEASE_WAIT_S):
                if not await cancel_safe(self.bus.redis.exists(keys.session_record(session_id))):
                    # Redis lost the record (a restart): nobody can resume it, and its ASR still holds it. Its
                    # keys expire as after a close: with the ASR's group lost too, there is no telling when
                    # the ASR has read the close.
                    log.warning(
                        "a parked session's record was lost; ending it", extra=session_log_ids(session_id)
                    )
                    await self._end(session_id, parked, wait_asr_s=0.0, delete=False)
        except Exception:
            # Its record and keys then expire on their own; the ASR gives the session up when audio stops.
            log.exception("could not end a parked session", extra={"session_id": session_id})

    async def expire(
        self, session_id: str, *, wait_asr_s: float, now: float | None = None, delete: bool = True
    ) -> bool:
        """End the session if it is still parked and its window is over: stop its work, close its ASR
        session, then delete every key it has (or, without `delete`, let them expire in 120 s as after a
        normal close, for an ASR that has yet to read the close). False when it was resumed (or is gone)."""
        at_ms = int((time.time() if now is None else now) * 1000)
        args: list[str | int] = ["", "", "", RECORD_MARGIN_S, at_ms, "0"]
        found: Any = await cancel_safe(self._claim(keys=[keys.session_record(session_id)], args=args))
        if found[0] != 2:
            return False
        parked = _claimed(session_id, found[1:], ResumeKey.new(session_id)).parked
        await self._end(session_id, parked, wait_asr_s=wait_asr_s, delete=delete)
        log.info("parked session expired", extra={"session_id": session_id})
        return True

    async def _end(self, session_id: str, parked: Parked, *, wait_asr_s: float, delete: bool) -> None:
        redis = self.bus.redis
        await open_turn(redis, session_id, above=parked.work)  # cancels anything still running for it
        closed = SessionClosed(session_id=session_id, turn_id=parked.turn, seq=parked.frame_seq)
        await self.bus.send_to_session(keys.audio_in(session_id), closed)
        await _asr_released(self.bus, parked.asr_entry, wait_asr_s)
        if delete:
            await cancel_safe(redis.delete(*keys.session_keys(session_id)))
        else:
            async with redis.pipeline(transaction=False) as pipe:
                for key in keys.session_keys(session_id):
                    pipe.expire(key, CLOSED_SESSION_TTL_S)
                await cancel_safe(pipe.execute())

    async def close(self) -> None:
        """Shutting down: end every parked session now (nobody would end it later), as a normal close
        does: their clients get `resume_failed` and start afresh."""
        timers, self._timers = dict(self._timers), {}
        self._addresses.clear()
        for task in timers.values():
            task.cancel()
        await asyncio.gather(*timers.values(), return_exceptions=True)  # our own cancels
        far = time.time() + self.window_s + 1
        ended = [self.expire(sid, wait_asr_s=0.0, now=far, delete=False) for sid in timers]
        for result in await asyncio.gather(*ended, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("could not end a parked session", extra={"error": str(result)})


def _claimed(session_id: str, found: Any, key: ResumeKey) -> Claimed:
    raw, subject = found
    parked = Parked.model_validate_json(raw)
    return Claimed(session_id, subject.decode() if isinstance(subject, bytes) else str(subject), parked, key)


async def _asr_released(bus: Bus, entry_id: str, within_s: float) -> None:
    """Wait (up to `within_s`) until no ASR replica holds the session's dispatch entry."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            pending: Any = await cancel_safe(
                bus.redis.xpending_range(keys.ASR_DISPATCH, keys.ASR_GROUP, entry_id, entry_id, 1)
            )
        except RedisError:
            return  # no ASR group (none ever ran, or Redis lost it): nobody holds the entry
        if not pending or loop.time() >= deadline:
            return
        await asyncio.sleep(0.05)


def session_log_ids(session_id: str) -> dict[str, str]:
    """A log record's `extra` naming the session (never its key)."""
    return {"session_id": session_id}
