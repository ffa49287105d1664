"""What one session used: LLM tokens and tool calls per turn (from the LLM's reports of released replies),
audio seconds in and out; kept in Redis with the session, sent to the client as `session.usage`, and
counted in Prometheus by engine and model (never by session)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from shared import keys
from shared.audio import ASR_SAMPLE_RATE, SAMPLE_WIDTH
from shared.bus import SESSION_TTL_SECONDS, cancel_safe
from shared.metrics import USAGE_AUDIO_SECONDS, USAGE_LLM_TOKENS, USAGE_TOOL_CALLS
from shared.schema import ReplyUsage

# Per-turn records kept (in memory, in Redis and in the event); the totals always cover every turn.
MAX_TURN_RECORDS = 200


class TurnUsage(BaseModel):
    """What the reply of one turn cost."""

    model_config = ConfigDict(frozen=True)

    turn_id: int
    engine: str
    model: str
    input_tokens: int
    output_tokens: int
    estimated: bool
    tool_calls: int
    tool_failures: int
    economy: bool

    @classmethod
    def of(cls, turn_id: int, report: ReplyUsage) -> TurnUsage:
        """The record of an LLM usage report for the client's turn `turn_id`."""
        return cls(
            turn_id=turn_id, engine=report.engine, model=report.model, input_tokens=report.input_tokens,
            output_tokens=report.output_tokens, estimated=report.estimated, tool_calls=report.tool_calls,
            tool_failures=report.tool_failures, economy=report.economy,
        )  # fmt: skip


class SessionUsage:
    """The running usage of one session. A turn's report replaces an earlier one for the same turn (a reply
    taken over by another replica reports again), so nothing is counted twice."""

    def __init__(self, redis: Redis, session_id: str, *, token_budget: int | None = None) -> None:
        self.redis = redis
        self.session_id = session_id
        self.token_budget = token_budget
        self.budget_reached = False
        self.turns: dict[int, TurnUsage] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_calls = 0
        self.tool_failures = 0
        self.replies = 0
        self.audio_in_s = 0.0
        self.audio_out_s = 0.0
        # Per turn: the reply audio sent for it, and the microphone audio received since the turn before was
        # charged (so the turns' figures add up to the session's, but for audio after the last charge).
        self.turn_audio: dict[int, dict[str, float]] = {}
        self._in_since_charge_s = 0.0

    @property
    def tokens(self) -> int:
        """LLM tokens so far, input and output."""
        return self.input_tokens + self.output_tokens

    def audio_in(self, pcm_bytes: int) -> None:
        """Microphone audio (16 kHz s16le mono) received from the client."""
        seconds = pcm_bytes / (SAMPLE_WIDTH * ASR_SAMPLE_RATE)
        self.audio_in_s += seconds
        self._in_since_charge_s += seconds
        USAGE_AUDIO_SECONDS.labels(direction="in").inc(seconds)

    def audio_out(self, pcm_bytes: int, sample_rate: int, turn_id: int) -> None:
        """Reply audio of turn `turn_id` sent to the client."""
        seconds = pcm_bytes / (SAMPLE_WIDTH * sample_rate)
        self.audio_out_s += seconds
        self._audio_of(turn_id)["audio_out_seconds"] += seconds
        USAGE_AUDIO_SECONDS.labels(direction="out").inc(seconds)

    def _audio_of(self, turn_id: int) -> dict[str, float]:
        audio = self.turn_audio.setdefault(turn_id, {"audio_in_seconds": 0.0, "audio_out_seconds": 0.0})
        while len(self.turn_audio) > MAX_TURN_RECORDS:
            del self.turn_audio[next(iter(self.turn_audio))]
        return audio

    async def add_reply(self, turn_id: int, report: ReplyUsage) -> bool:
        """Charge the session for the reply of `turn_id` (released to the client), and save; True when this
        reply took the session to its token budget."""
        record = TurnUsage.of(turn_id, report)
        self._audio_of(turn_id)["audio_in_seconds"] += self._in_since_charge_s
        self._in_since_charge_s = 0.0
        old = self.turns.pop(turn_id, None)
        self.turns[turn_id] = record
        self.replies += old is None
        dropped: list[int] = []
        while len(self.turns) > MAX_TURN_RECORDS:
            dropped.append(next(iter(self.turns)))
            del self.turns[dropped[-1]]
        deltas = {
            "input": record.input_tokens - (old.input_tokens if old else 0),
            "output": record.output_tokens - (old.output_tokens if old else 0),
        }
        self.input_tokens += deltas["input"]
        self.output_tokens += deltas["output"]
        tool_delta = record.tool_calls - (old.tool_calls if old else 0)
        self.tool_calls += tool_delta
        self.tool_failures += record.tool_failures - (old.tool_failures if old else 0)
        # Counters only rise: a repeated report adds only what it has more than the first.
        for kind, delta in deltas.items():
            if delta > 0:
                USAGE_LLM_TOKENS.labels(engine=record.engine, model=record.model, kind=kind).inc(delta)
        if tool_delta > 0:
            USAGE_TOOL_CALLS.labels(engine=record.engine, model=record.model).inc(tool_delta)
        await self.save(record, dropped)
        if self.budget_reached or self.token_budget is None or self.tokens < self.token_budget:
            return False
        self.budget_reached = True
        return True

    async def save(self, record: TurnUsage | None = None, dropped: list[int] | None = None) -> None:
        """Write the totals and a turn's record (without one: every turn's, as at the session's end) to Redis,
        expiring with the session."""
        totals, turns = keys.usage(self.session_id), keys.usage_turns(self.session_id)
        records = [record] if record is not None else list(self.turns.values())
        async with self.redis.pipeline(transaction=True) as pipe:
            fields: Mapping[Any, Any] = self.totals()
            pipe.hset(totals, mapping=fields)
            if records:
                pipe.hset(turns, mapping={str(r.turn_id): json.dumps(self._turn_record(r)) for r in records})
            if dropped:
                pipe.hdel(turns, *(str(turn) for turn in dropped))
            pipe.expire(totals, SESSION_TTL_SECONDS)
            pipe.expire(turns, SESSION_TTL_SECONDS)
            await cancel_safe(pipe.execute())

    def _turn_record(self, record: TurnUsage) -> dict[str, Any]:
        audio = self._audio_of(record.turn_id)
        return {**record.model_dump(), **{k: round(v, 3) for k, v in audio.items()}}

    def totals(self) -> dict[str, int | float]:
        """The session's totals, as sent and stored."""
        return {
            "llm_input_tokens": self.input_tokens,
            "llm_output_tokens": self.output_tokens,
            "tool_calls": self.tool_calls,
            "tool_failures": self.tool_failures,
            "audio_in_seconds": round(self.audio_in_s, 3),
            "audio_out_seconds": round(self.audio_out_s, 3),
            "replies": self.replies,
        }

    def event(self) -> dict[str, Any]:
        """The `session.usage` event: totals and the newest turns' records."""
        return {
            "type": "session.usage",
            "session_id": self.session_id,
            **self.totals(),
            "turns": [self._turn_record(record) for record in self.turns.values()],
        }
