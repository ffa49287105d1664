"""The load check: many real-time sessions through a stack with fake engines, and whether anything was lost
or reordered on the way (tests/integration/test_load.py runs it).

Each session is the talk client (20 ms microphone frames on a real-time clock, a modelled loudspeaker)
asking questions in a row for about the time asked. The fake synthesizer's audio says which chunk of
which phrase length it is (clients.bench.fakes.fake_speech), so every reply's audio is checked byte for
byte against the reply text the client was shown: a lost, repeated or misplaced chunk or phrase shows.
Meanwhile every stream's length and every pending entry's idle time are sampled in Redis.

The sessions run in child processes (`python -m clients.bench.loadcheck`, a JSON spec on stdin, results
as JSON on stdout), so the clients' CPU does not slow the test's own sampling.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from clients.bench.fakes import FakeSettings, fake_speech
from clients.talk import ConversationResult, TalkError, converse_pcm
from services.tts.speakable import speakable
from shared import keys

TURN_S = 5.5
"""About one question and its played-out fake reply: how many turns make a session of a given length."""
QUEUES = {"asr": (keys.ASR_DISPATCH, keys.ASR_GROUP), "llm": (keys.LLM_REQUESTS, keys.LLM_GROUP),
          "tts": (keys.TTS_REQUESTS, keys.TTS_GROUP)}  # fmt: skip


@dataclass
class SessionCheck:
    """What one session saw."""

    asked: int = 0
    answered: int = 0  # a transcript and a reply that ended
    replies_intact: int = 0  # audio byte for byte the fake speech of the reply's text, in order
    audio_bytes: int = 0
    audio_bytes_expected: int = 0
    repeated_phrases: int = 0  # reply.text events for a (turn, seq) already shown
    rate_limited: int = 0  # microphone frames the gateway refused (error events: at most one a second)
    seconds: float = 0.0
    error: str | None = None


def check_conversation(result: ConversationResult, fakes: FakeSettings) -> SessionCheck:
    """Compare every answered turn's audio with the fake speech of the phrases shown for it."""
    check = SessionCheck(asked=len(result.turns))
    shown: dict[int, dict[int, str]] = {}
    for entry in result.trace:
        if entry.type == "reply.text" and entry.turn_id is not None:
            phrases = shown.setdefault(entry.turn_id, {})
            seq, text = entry.data.get("seq"), entry.data.get("text")
            if isinstance(seq, int) and isinstance(text, str):
                check.repeated_phrases += seq in phrases
                phrases.setdefault(seq, text)
        elif entry.type == "error" and entry.data.get("code") == "rate_limited":
            check.rate_limited += 1
    for turn in result.turns:
        if not turn.transcript or turn.turn_id is None or turn.total_ms is None:
            continue
        check.answered += 1
        phrases = shown.get(turn.turn_id, {})
        texts = [phrases[seq] for seq in sorted(phrases)]
        expected = b"".join(b"".join(fake_speech(speakable(t), turn.sample_rate, fakes)) for t in texts)
        in_order = sorted(phrases) == list(range(len(phrases)))
        check.replies_intact += in_order and turn.reply_audio == expected
        check.audio_bytes += len(turn.reply_audio)
        check.audio_bytes_expected += len(expected)
    return check


async def check_session(
    url: str, questions: list[bytes], start_after_s: float, timeout_s: float
) -> SessionCheck:
    """Wait for the session's start, converse, check; a failure is recorded, never raised."""
    await asyncio.sleep(start_after_s)
    started = time.monotonic()
    try:
        result = await converse_pcm(questions, url=url, timeout_s=timeout_s)
        check = check_conversation(result, FakeSettings())
    except (TalkError, OSError) as exc:
        check = SessionCheck(asked=len(questions), error=str(exc))
    check.seconds = time.monotonic() - started
    return check


@dataclass
class RedisSamples:
    """The longest each kind of stream got, and the longest any entry of each queue stayed pending."""

    max_length: dict[str, int] = field(default_factory=dict)  # audio_in, session_out, or the stream's name
    max_pending_idle_ms: dict[str, int] = field(default_factory=dict)
    pending_peak: dict[str, int] = field(default_factory=dict)

    async def sample(self, redis: Redis) -> None:
        """One look at every stream and queue."""
        async for raw in redis.scan_iter(match=f"{keys.PREFIX}:*", _type="STREAM", count=1000):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            kind = name.split(":{", 1)[0].removeprefix(f"{keys.PREFIX}:")
            length = int(await redis.xlen(name))
            self.max_length[kind] = max(self.max_length.get(kind, 0), length)
        for service, (stream, group) in QUEUES.items():
            try:
                pending: Any = await redis.xpending_range(stream, group, "-", "+", 1000)
            except RedisError:
                continue  # no group yet
            self.pending_peak[service] = max(self.pending_peak.get(service, 0), len(pending))
            idle = max((int(entry["time_since_delivered"]) for entry in pending), default=0)
            self.max_pending_idle_ms[service] = max(self.max_pending_idle_ms.get(service, 0), idle)


async def pending_entries(redis: Redis) -> dict[str, int]:
    """Entries delivered and not acked, per work queue."""
    counts: dict[str, int] = {}
    for service, (stream, group) in QUEUES.items():
        try:
            summary: Any = await redis.xpending(stream, group)
        except RedisError:
            continue
        counts[service] = int(summary["pending"])
    return counts


def turns_for(seconds: float) -> int:
    """Questions per session to keep it talking about `seconds`."""
    return max(1, math.ceil(seconds / TURN_S))


def totals(checks: list[SessionCheck]) -> dict[str, Any]:
    """The sessions' checks added up (errors: the distinct ones, at most five)."""
    summed = Counter[str]()
    for check in checks:
        summed.update({k: v for k, v in asdict(check).items() if isinstance(v, int)})
    errors = sorted({c.error for c in checks if c.error})
    seconds = sorted(c.seconds for c in checks)
    return {**summed, "sessions": len(checks), "failed_sessions": sum(1 for c in checks if c.error),
            "errors": errors[:5], "session_seconds_min": seconds[0] if seconds else 0.0,
            "session_seconds_max": seconds[-1] if seconds else 0.0}  # fmt: skip


async def _run(spec: dict[str, Any]) -> list[SessionCheck]:
    questions = [bytes.fromhex(q) for q in spec["questions"]]
    turns = int(spec["turns"])
    return await asyncio.gather(
        *(
            check_session(
                session["url"],
                [questions[(index + turn) % len(questions)] for turn in range(turns)],
                float(session["start_after_s"]),
                float(spec["timeout_s"]),
            )
            for index, session in enumerate(spec["sessions"])
        )
    )


def main() -> None:
    """Read a spec (JSON) from stdin, run its sessions, print their checks (JSON)."""
    checks = asyncio.run(_run(json.load(sys.stdin)))
    print(json.dumps([asdict(check) for check in checks]))


if __name__ == "__main__":
    main()
